// Model page: a version being optimized is polled until it is ready or rejected, then the page reloads to
// show what was measured (no inline script: the CSP forbids it).
(function () {
  "use strict";
  var rows = document.querySelectorAll("tr.version-row[data-pending-url]");
  if (!rows.length) return;
  var delay = 1000;

  function check() {
    var pending = Array.prototype.map.call(rows, function (row) {
      return fetch(row.getAttribute("data-pending-url"), {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      })
        .then(function (response) { return response.ok ? response.json() : null; })
        .then(function (version) { return version !== null && version.status !== "validating"; })
        .catch(function () { return false; });
    });
    Promise.all(pending).then(function (done) {
      if (done.some(Boolean)) {
        window.location.reload();
        return;
      }
      delay = Math.min(delay * 1.5, 5000);
      window.setTimeout(check, delay);
    });
  }

  window.setTimeout(check, delay);
})();
