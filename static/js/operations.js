// Operations page: poll the status JSON and redraw the tables (no inline script: the CSP forbids it).
(function () {
  "use strict";

  var root = document.getElementById("operations");
  if (!root) return;
  var url = root.getAttribute("data-status-url");

  function cell(row, text) {
    var td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "" : String(text);
    row.appendChild(td);
    return td;
  }

  function fill(id, rows, empty, columns) {
    var body = document.getElementById(id);
    body.replaceChildren();
    if (!rows.length) {
      var tr = document.createElement("tr");
      cell(tr, empty).colSpan = columns;
      body.appendChild(tr);
      return;
    }
    rows.forEach(function (values) {
      var tr = document.createElement("tr");
      values.forEach(function (value) { cell(tr, value); });
      body.appendChild(tr);
    });
  }

  function megabytes(bytes) {
    return bytes ? (bytes / 1048576).toFixed(1) + " MB" : "";
  }

  function restarts(counts) {
    var parts = Object.keys(counts).sort().map(function (cause) { return cause + ": " + counts[cause]; });
    return parts.length ? parts.join(", ") : "none";
  }

  function draw(status) {
    var runners = [];
    (status.workers || []).forEach(function (worker) {
      worker.runners.forEach(function (runner) {
        runners.push([
          worker.name + (worker.pools && worker.pools.length ? " (" + worker.pools.join(", ") + ")" : ""),
          runner.slot, runner.alive ? "yes" : "no", runner.pid, megabytes(runner.rss),
          runner.warm.join(", "), restarts(runner.restarts),
        ]);
      });
    });
    // Unknown (no Redis, or Redis down) is said as such, never drawn as "no worker" or an empty queue.
    var unknown = document.getElementById("ops-unknown");
    unknown.textContent = status.unknown || "";
    unknown.hidden = !status.unknown;
    fill("ops-runners", runners, status.unknown ? "Unknown: see above." : "No worker is serving.", 7);
    fill("ops-queues", (status.queues || []).map(function (q) { return [q.model, q.depth]; }),
      status.unknown ? "Unknown: see above." : "No queue.", 2);
    fill("ops-chat", (status.chat || []).map(function (c) {
      return [c.model, c.calls, c.ttft_ms === null ? "> 60 s" : "≤ " + c.ttft_ms + " ms",
        c.tokens_per_second === null ? "" : "≤ " + c.tokens_per_second];
    }), "No chat calls since the deployment started.", 4);
    fill("ops-failures", status.failures.map(function (f) {
      return [f.at, f.model, f.version, f.error];
    }), "No failures.", 4);
    fill("ops-validations", status.validations.map(function (v) {
      return [v.model, v.version, v.size, v.since];
    }), "None.", 4);
    document.getElementById("ops-updated").textContent = "Updated " + new Date().toLocaleTimeString() + ".";
  }

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(draw)
      .catch(function (error) {
        document.getElementById("ops-updated").textContent = "Could not refresh (" + error.message + ").";
      })
      .finally(function () { window.setTimeout(poll, 2000); });
  }

  poll();
})();
