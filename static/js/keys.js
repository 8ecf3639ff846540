// API keys page: copy the new key to the clipboard, and confirm before revoking.
(function () {
  "use strict";

  function copyText(input) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(input.value);
    }
    // Plain-HTTP deployments have no clipboard API: fall back to selecting and copying.
    input.focus();
    input.select();
    return new Promise(function (resolve, reject) {
      (document.execCommand("copy") ? resolve : reject)();
    });
  }

  document.querySelectorAll("[data-copy-target]").forEach(function (button) {
    button.addEventListener("click", function () {
      var input = document.getElementById(button.getAttribute("data-copy-target"));
      var status = document.querySelector(".copy-status");
      copyText(input).then(
        function () {
          button.textContent = "Copied";
          if (status) status.textContent = "The key is on your clipboard.";
        },
        function () {
          input.select();
          if (status) status.textContent = "Copy failed: the key is selected, press Ctrl+C (⌘C).";
        }
      );
    });
  });

  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) event.preventDefault();
    });
  });
})();
