// The browse filters apply at once: a changed select submits the form (the search box waits for Enter).
(function () {
  "use strict";
  document.querySelectorAll("form[data-apply-at-once]").forEach(function (form) {
    form.querySelectorAll("select").forEach(function (select) {
      select.addEventListener("change", function () { form.submit(); });
    });
  });
})();
