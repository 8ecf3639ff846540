// The model page's code samples: a Copy button on each, and the curl and Python samples follow the body the
// try-it widget last sent (try-it.js dispatches "try-it:sent"), so a copied sample gives the widget's answer.
(function () {
  "use strict";

  function shellQuote(text) {
    return "'" + text.replace(/'/g, "'\\''") + "'";
  }

  // JSON data written as Python source; the server's twin is marketplace.snippets.python_literal.
  function pythonLiteral(value) {
    if (value === null || value === undefined) return "None";
    if (value === true) return "True";
    if (value === false) return "False";
    if (typeof value === "number") return isFinite(value) ? JSON.stringify(value) : 'float("' + String(value).toLowerCase() + '")';
    if (typeof value === "string") return JSON.stringify(value);
    if (Array.isArray(value)) return "[" + value.map(pythonLiteral).join(", ") + "]";
    return "{" + Object.keys(value).map(function (key) {
      return JSON.stringify(key) + ": " + pythonLiteral(value[key]);
    }).join(", ") + "}";
  }

  var WRITERS = {
    curl: function (body) { return shellQuote(JSON.stringify(body)); },
    python: pythonLiteral,
  };

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) return navigator.clipboard.writeText(text);
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "visually-hidden";
    document.body.appendChild(area);
    area.select();
    var copied = document.execCommand("copy");
    document.body.removeChild(area);
    return copied ? Promise.resolve() : Promise.reject(new Error("copy refused"));
  }

  function init() {
    document.querySelectorAll("button[data-copy]").forEach(function (button) {
      var label = button.textContent;
      button.addEventListener("click", function () {
        var code = document.getElementById(button.getAttribute("data-copy"));
        if (!code) return;
        copyText(code.textContent).then(function () {
          button.textContent = "Copied";
        }, function () {
          button.textContent = "Select and copy";
        });
        window.setTimeout(function () { button.textContent = label; }, 2000);
      });
    });
    document.addEventListener("try-it:sent", function (event) {
      var body = event.detail && event.detail.body;
      if (!body) return;
      Object.keys(WRITERS).forEach(function (key) {
        var slot = document.querySelector("#snippet-" + key + " .snippet-body");
        if (slot && slot.textContent) slot.textContent = WRITERS[key](body);
      });
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
