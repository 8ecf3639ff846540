// Upload forms: send the file with XMLHttpRequest to show a progress bar, then follow the server's answer.
(function () {
  "use strict";

  function enhance(form) {
    var box = form.querySelector(".upload-progress");
    var bar = box && box.querySelector(".progress");
    var fill = bar && bar.querySelector("span");
    var status = box && box.querySelector(".upload-status");
    var button = form.querySelector("button[type=submit]");

    form.addEventListener("submit", function (event) {
      if (!window.FormData || !box) { return; }
      event.preventDefault();
      var request = new XMLHttpRequest();
      request.open("POST", form.action);
      request.setRequestHeader("X-Requested-With", "XMLHttpRequest");
      // The token in a header lets the server refuse an oversized body before reading it.
      var token = form.querySelector("input[name=csrfmiddlewaretoken]");
      if (token) { request.setRequestHeader("X-CSRFToken", token.value); }
      box.hidden = false;
      button.disabled = true;
      request.upload.addEventListener("progress", function (e) {
        if (!e.lengthComputable) { return; }
        var percent = Math.round((e.loaded / e.total) * 100);
        fill.style.width = percent + "%";
        bar.setAttribute("aria-valuenow", String(percent));
        status.textContent = percent < 100 ? "Uploading… " + percent + "%" : "Uploaded. Checking the model…";
      });
      request.addEventListener("load", function () {
        if (request.responseURL && request.responseURL !== form.action && request.status < 400) {
          window.location.assign(request.responseURL);
          return;
        }
        // An error page (400/413/415): show it as the server rendered it.
        document.open();
        document.write(request.responseText);
        document.close();
      });
      request.addEventListener("error", function () {
        status.textContent = "The upload failed (network error). Try again.";
        button.disabled = false;
      });
      request.send(new FormData(form));
    });
  }

  document.querySelectorAll("form[data-upload-progress]").forEach(enhance);
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) { event.preventDefault(); }
    });
  });
})();
