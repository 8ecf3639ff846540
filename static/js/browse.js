// The browse filters apply at once: a changed select submits the form, and so does the tag or owner box once
// it is left changed (or on Enter); the search box waits for Enter. Without JavaScript, the Search button.
(function () {
  "use strict";
  document.querySelectorAll("form[data-apply-at-once]").forEach(function (form) {
    form.querySelectorAll("select, input[data-apply-on-change]").forEach(function (control) {
      control.addEventListener("change", function () { form.submit(); });
    });
  });
})();
