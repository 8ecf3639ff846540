/*
 * Try it: runs a model from its page, through the public API (POST /api/v1/models/<owner>/<name>/predict)
 * with the session cookie and the CSRF token, so every run counts against the visitor's quota.
 *
 * The page provides <section id="try-it" data-model="owner/name" data-task="…" data-signature='{…}'
 * data-labels='[…]' data-preprocessing='{…}' data-authenticated="true|false" data-login-url="…">; any of the
 * data attributes may be missing or empty. The widget is generated from the task and the signature:
 *   - image classification: file picker with drag and drop, preview, and a drawing canvas for small grayscale
 *     inputs; the image goes as {"image": "<base64>"} and the server applies the model's preprocessing;
 *   - tabular models: one field per feature and a "Fill with example" button;
 *   - text models (data-text="true": the version has a tokenizer): a text box with label bars for
 *     text-classification, the sentence-similarity widget for feature-extraction, prefilled from
 *     data-example-text (a JSON list of strings);
 *   - anything else: a JSON editor per input, prefilled with an example that fits the signature.
 */
(function () {
  "use strict";

  var POLL_FIRST_MS = 400;
  var POLL_MAX_MS = 2000;
  var POLL_GIVE_UP_MS = 10 * 60 * 1000;
  var WAIT_SECONDS = 10; // after this the API answers 202 and the widget follows the prediction live
  var CANVAS_SIZE = 280;
  var SMALL_IMAGE_MAX_SIDE = 64;
  var VALUES_SHOWN = 12;
  var TOP_SHOWN = 5;
  var STATUS_WORDS = {
    queued: "Queued",
    running: "Running",
    succeeded: "Done",
    failed: "Failed",
    canceled: "Canceled",
  };

  // ---- small DOM helpers -------------------------------------------------------------------------------------

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      var value = attrs[key];
      if (value === null || value === undefined || value === false) return;
      if (key === "text") node.textContent = value;
      else if (key === "className") node.className = value;
      // Through the CSSOM: a `style` attribute is inline style, which the Content-Security-Policy refuses.
      else if (key === "style") node.style.cssText = value;
      else if (key.slice(0, 2) === "on") node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : value);
    });
    (children || []).forEach(function (child) {
      if (child === null || child === undefined) return;
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  var idCounter = 0;
  function uniqueId(base) {
    idCounter += 1;
    return "try-it-" + base.replace(/[^A-Za-z0-9_-]/g, "-") + "-" + idCounter;
  }

  function parseJsonAttribute(section, name, fallback) {
    var raw = section.getAttribute(name);
    if (raw === null || raw.trim() === "") return fallback;
    try {
      var value = JSON.parse(raw);
      return value === null ? fallback : value;
    } catch (error) {
      return fallback;
    }
  }

  function cookie(name) {
    var parts = document.cookie ? document.cookie.split(";") : [];
    for (var i = 0; i < parts.length; i++) {
      var pair = parts[i].trim();
      if (pair.slice(0, name.length + 1) === name + "=") return decodeURIComponent(pair.slice(name.length + 1));
    }
    return null;
  }

  function csrfToken() {
    var fromCookie = cookie("csrftoken");
    if (fromCookie) return fromCookie;
    var field = document.querySelector("input[name=csrfmiddlewaretoken]");
    return field ? field.value : "";
  }

  // ---- the signature: examples and parsing -------------------------------------------------------------------

  function isIntegerType(datatype) {
    return /^U?INT\d+$/.test(datatype || "");
  }

  function exampleValue(datatype) {
    if (datatype === "BOOL") return false;
    if (datatype === "BYTES") return "example";
    if (isIntegerType(datatype)) return 0;
    return 0.5;
  }

  // A nested list of the input's shape, dynamic (-1) dimensions taken as 1.
  function exampleTensor(input) {
    var shape = (input.shape || [1]).map(function (dim) {
      return dim === -1 || dim === null || dim === undefined ? 1 : dim;
    });
    var value = exampleValue(input.datatype);
    function build(depth) {
      if (depth === shape.length) return value;
      var list = [];
      for (var i = 0; i < shape[depth]; i++) list.push(build(depth + 1));
      return list;
    }
    return build(0);
  }

  // The uploader's example for this input when the version has one, else a made-up one that fits the signature.
  function startingTensor(config, input) {
    var given = config.example && config.example[input.name];
    return given !== undefined && given !== null ? given : exampleTensor(input);
  }

  // Indented JSON with every list of plain values on one line: matrices read row by row, outputs stay short.
  function readableJson(value, indent) {
    return JSON.stringify(value, null, indent).replace(/\[\s+([^\[\]{}]*?)\s+\]/g, function (match, inner) {
      return "[" + inner.replace(/\s*\n\s*/g, " ") + "]";
    });
  }

  function formatTensor(tensor) {
    var text = JSON.stringify(tensor);
    return text.length <= 80 ? text : readableJson(tensor, 1);
  }

  function shapeText(shape) {
    return "[" + (shape || []).map(function (dim) { return dim === -1 ? "?" : dim; }).join(", ") + "]";
  }

  // ---- API calls ----------------------------------------------------------------------------------------------

  function apiRequest(method, url, body) {
    var headers = { Accept: "application/json" };
    if (method !== "GET") {
      headers["X-CSRFToken"] = csrfToken();
      headers["Content-Type"] = "application/json";
    }
    return fetch(url, {
      method: method,
      headers: headers,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    }).then(function (response) {
      return response.text().then(function (text) {
        var data = null;
        try {
          data = text ? JSON.parse(text) : null;
        } catch (error) {
          data = null;
        }
        return { status: response.status, headers: response.headers, data: data, text: text };
      });
    });
  }

  // DRF answers {"detail": "…"} or field errors {"inputs": ["…"], "non_field_errors": [...]}: one sentence.
  function errorWords(data) {
    if (!data) return "";
    if (typeof data === "string") return data;
    if (Array.isArray(data)) return data.map(errorWords).filter(Boolean).join(" ");
    if (typeof data.detail === "string") return data.detail;
    if (typeof data.error === "string") return data.error;
    return Object.keys(data).map(function (key) {
      var words = errorWords(data[key]);
      if (!words) return "";
      // The API's messages about inputs name the input themselves; other fields (e.g. "wait") need naming.
      return ["non_field_errors", "detail", "inputs", "image"].indexOf(key) >= 0 ? words : key + ": " + words;
    }).filter(Boolean).join(" ");
  }

  function retryAfterWords(headerValue) {
    if (!headerValue) return "";
    var seconds = parseInt(headerValue, 10);
    if (isNaN(seconds)) {
      var date = Date.parse(headerValue);
      if (isNaN(date)) return "";
      seconds = Math.max(0, Math.round((date - Date.now()) / 1000));
    }
    if (seconds < 60) return "Try again in " + seconds + (seconds === 1 ? " second." : " seconds.");
    var minutes = Math.ceil(seconds / 60);
    if (minutes < 120) return "Try again in " + minutes + " minutes.";
    return "Try again in " + Math.ceil(minutes / 60) + " hours.";
  }

  function needsSignIn(response) {
    return response.status === 401 ||
      (response.status === 403 && /credentials|log ?in|sign ?in/i.test(errorWords(response.data)));
  }

  function explainFailure(response) {
    var words = errorWords(response.data);
    switch (response.status) {
      case 400:
        return "The model could not take this input: " + (words || "the request was malformed.");
      case 401:
        return "Your session has ended. Sign in again to run the model.";
      case 403:
        if (needsSignIn(response)) return "Your session has ended. Sign in again to run the model.";
        return words || "You are not allowed to run this model.";
      case 404:
        return "This model is not available (it may have been deleted or made private).";
      case 413:
        return "The input is too large: " + (words || "the request is over the size limit.");
      case 415:
        return "This file type is not supported: " + (words || "use a PNG or JPEG image.");
      case 429:
        return "You have reached your limit: " + (words || "too many requests.") + " " +
          retryAfterWords(response.headers.get("Retry-After"));
      case 503:
        return "The model is busy or temporarily unavailable: " + (words || "no worker answered in time.") +
          " Please try again in a moment.";
      default:
        return "Something went wrong (" + response.status + ")" + (words ? ": " + words : ".");
    }
  }

  // ---- results ------------------------------------------------------------------------------------------------

  function percent(score) {
    var value = Math.max(0, Math.min(1, Number(score) || 0));
    if (value === 0 || value === 1) return value * 100 + "%";
    if (value < 0.001) return "<0.1%";
    if (value > 0.999) return ">99.9%";
    return (value * 100).toFixed(1) + "%";
  }

  function renderTop(top) {
    var list = el("ol", { className: "try-it-bars", "aria-label": "Top predictions" });
    top.slice(0, TOP_SHOWN).forEach(function (entry, index) {
      var width = Math.max(0, Math.min(1, Number(entry.score) || 0)) * 100;
      list.appendChild(el("li", { className: "try-it-bar" + (index === 0 ? " best" : "") }, [
        el("span", { className: "try-it-bar-label", text: String(entry.label) }),
        el("span", { className: "try-it-bar-track", "aria-hidden": "true" }, [
          el("span", { className: "try-it-bar-fill", style: "width: " + width.toFixed(1) + "%" }),
        ]),
        el("span", { className: "try-it-bar-score", text: percent(entry.score) }),
      ]));
    });
    return list;
  }

  function valuesText(data) {
    if (!Array.isArray(data)) return JSON.stringify(data);
    var shown = data.slice(0, VALUES_SHOWN).map(function (value) {
      return typeof value === "number" && !Number.isInteger(value) ? Number(value.toPrecision(4)) : value;
    });
    var text = shown.map(function (value) { return JSON.stringify(value); }).join(", ");
    if (data.length > VALUES_SHOWN) text += ", … (" + (data.length - VALUES_SHOWN) + " more)";
    return text;
  }

  function renderOutputsTable(outputs) {
    var body = el("tbody");
    outputs.forEach(function (output) {
      body.appendChild(el("tr", {}, [
        el("td", {}, [el("code", { text: String(output.name) })]),
        el("td", { text: String(output.datatype || "") }),
        el("td", { className: "try-it-shape", text: shapeText(output.shape) }),
        el("td", { className: "try-it-values", text: valuesText(output.data) }),
      ]));
    });
    return el("div", { className: "try-it-table-wrap" }, [
      el("table", { className: "try-it-outputs" }, [
        el("caption", { className: "visually-hidden", text: "Model outputs" }),
        el("thead", {}, [el("tr", {}, [
          el("th", { scope: "col", text: "Output" }),
          el("th", { scope: "col", text: "Type" }),
          el("th", { scope: "col", text: "Shape" }),
          el("th", { scope: "col", text: "Values" }),
        ])]),
        body,
      ]),
    ]);
  }

  function versionOf(result) {
    var version = result.version;
    if (version && typeof version === "object") version = version.number;
    return version === undefined || version === null ? null : version;
  }

  function latencyOf(result) {
    if (typeof result.latency_ms === "number") return result.latency_ms;
    if (typeof result.compute_ms === "number") return result.compute_ms + (result.queue_ms || 0);
    return null;
  }

  // The prediction records polled after a 202 carry outputs but no `top`: derived here the way the server
  // derives it (first float output with one score per label; probabilities as they are, logits softmaxed).
  function topFromOutputs(outputs, labels) {
    if (!labels.length || !Array.isArray(outputs)) return null;
    for (var i = 0; i < outputs.length; i++) {
      var output = outputs[i];
      var shape = output.shape || [];
      if (!/^FP/.test(output.datatype || "") || !shape.length || shape[shape.length - 1] !== labels.length) continue;
      if (!Array.isArray(output.data) || output.data.length !== labels.length) return null;
      var scores = output.data.map(Number);
      var sum = scores.reduce(function (a, b) { return a + b; }, 0);
      var isProbability = scores.every(function (v) { return v >= 0 && v <= 1; }) && Math.abs(sum - 1) < 1e-3;
      if (!isProbability) {
        var max = Math.max.apply(null, scores);
        var exps = scores.map(function (v) { return Math.exp(v - max); });
        var total = exps.reduce(function (a, b) { return a + b; }, 0);
        scores = exps.map(function (v) { return v / total; });
      }
      return scores
        .map(function (score, index) { return { label: String(labels[index]), score: score, index: index }; })
        .sort(function (a, b) { return b.score - a.score || a.index - b.index; })
        .slice(0, TOP_SHOWN)
        .map(function (entry) { return { label: entry.label, score: entry.score }; });
    }
    return null;
  }

  function renderResult(container, result) {
    clear(container);
    var facts = [];
    var version = versionOf(result);
    var latency = latencyOf(result);
    if (version !== null) facts.push("version " + version);
    if (latency !== null) facts.push(latency.toFixed(latency < 10 ? 1 : 0) + " ms");
    var heading = el("h3", { className: "try-it-result-heading" }, [
      "Result",
      facts.length ? el("span", { className: "try-it-meta muted", text: " · " + facts.join(" · ") }) : null,
    ]);
    container.appendChild(heading);
    if (Array.isArray(result.top) && result.top.length) {
      container.appendChild(el("p", { className: "try-it-answer" }, [
        "Prediction: ",
        el("strong", { className: "try-it-label", text: String(result.top[0].label) }),
      ]));
      container.appendChild(renderTop(result.top));
    } else if (Array.isArray(result.outputs) && result.outputs.length) {
      container.appendChild(renderOutputsTable(result.outputs));
    } else {
      container.appendChild(el("p", { className: "muted", text: "The model returned no outputs." }));
    }
    var hasTop = Array.isArray(result.top) && result.top.length > 0;
    // Without a chart the raw answer is part of the result, so it starts open.
    container.appendChild(el("details", { className: "try-it-raw", open: !hasTop }, [
      el("summary", { text: "Raw JSON" }),
      el("pre", {}, [el("code", { text: readableJson(result, 2) })]),
    ]));
  }

  // ---- input editors ------------------------------------------------------------------------------------------

  // Image classification: a file picker with drag and drop and a preview; a canvas for small grayscale inputs.
  function imageEditor(config) {
    var pre = config.preprocessing || {};
    var width = Number(pre.width) || 0;
    var height = Number(pre.height) || 0;
    var small = String(pre.mode || "").toUpperCase() === "L" && width > 0 && height > 0 &&
      Math.max(width, height) <= SMALL_IMAGE_MAX_SIDE;
    var state = { source: null, fileBase64: null, drawn: false };
    var root = el("div", { className: "try-it-image" });
    var canvas = null;
    var context = null;
    var hint = el("p", { className: "try-it-source muted", "aria-live": "polite" });

    function setSource(source) {
      state.source = source;
      if (source === "canvas") hint.textContent = "The model will read your drawing.";
      else if (source === "file") hint.textContent = "The model will read the chosen image.";
      else hint.textContent = "";
    }

    if (small) {
      canvas = el("canvas", {
        className: "try-it-canvas",
        width: CANVAS_SIZE,
        height: CANVAS_SIZE,
        role: "img",
        "aria-label": "Drawing area: draw with the mouse, a pen or a finger",
      });
      context = canvas.getContext("2d");
      var brush = Math.round(CANVAS_SIZE / 11);
      var resetCanvas = function () {
        context.fillStyle = "#fff";
        context.fillRect(0, 0, canvas.width, canvas.height);
        context.strokeStyle = "#000";
        context.fillStyle = "#000";
        context.lineWidth = brush;
        context.lineCap = "round";
        context.lineJoin = "round";
        state.drawn = false;
      };
      resetCanvas();
      var last = null;
      var point = function (event) {
        var box = canvas.getBoundingClientRect();
        return {
          x: (event.clientX - box.left) * (canvas.width / box.width),
          y: (event.clientY - box.top) * (canvas.height / box.height),
        };
      };
      canvas.addEventListener("pointerdown", function (event) {
        event.preventDefault();
        if (canvas.setPointerCapture && event.pointerId !== undefined) {
          try { canvas.setPointerCapture(event.pointerId); } catch (error) { /* synthetic events */ }
        }
        // The last input wins and the other one goes, so what is on screen is what the model reads.
        if (state.fileBase64) forgetFile();
        last = point(event);
        context.beginPath();
        context.arc(last.x, last.y, brush / 2, 0, 2 * Math.PI);
        context.fill();
        state.drawn = true;
        setSource("canvas");
      });
      canvas.addEventListener("pointermove", function (event) {
        if (!last) return;
        var next = point(event);
        context.beginPath();
        context.moveTo(last.x, last.y);
        context.lineTo(next.x, next.y);
        context.stroke();
        last = next;
      });
      ["pointerup", "pointercancel", "pointerleave"].forEach(function (name) {
        canvas.addEventListener(name, function () { last = null; });
      });
      var clearButton = el("button", {
        type: "button",
        className: "button secondary small",
        text: "Clear drawing",
        onclick: function () {
          resetCanvas();
          setSource(null);
        },
      });
      root.appendChild(el("div", { className: "try-it-draw" }, [
        el("p", { className: "try-it-step", text: "Draw " + (config.labels.length ? "a " + describeLabels(config.labels) : "here") +
          ", large and centred:" }),
        canvas,
        el("div", { className: "try-it-actions" }, [clearButton]),
      ]));
    }

    var fileId = uniqueId("file");
    var fileInput = el("input", { id: fileId, type: "file", accept: "image/png,image/jpeg", className: "try-it-file" });
    var preview = el("img", { className: "try-it-preview", alt: "Preview of the chosen image", hidden: true });
    var dropZone = el("div", { className: "try-it-drop" }, [
      el("label", { for: fileId, className: "try-it-drop-label" }, [
        el("strong", { text: small ? "Or choose an image" : "Choose an image" }),
        " (PNG or JPEG), or drop it here",
      ]),
      fileInput,
      preview,
    ]);

    function useFile(file) {
      if (!file) return;
      if (!/^image\/(png|jpeg)$/.test(file.type)) {
        config.showMessage("This file type is not supported: choose a PNG or JPEG image.");
        return;
      }
      var reader = new FileReader();
      reader.onload = function () {
        var dataUrl = String(reader.result);
        state.fileBase64 = dataUrl.slice(dataUrl.indexOf(",") + 1);
        preview.src = dataUrl;
        preview.hidden = false;
        if (canvas) resetCanvas();
        config.showMessage("");
        setSource("file");
      };
      reader.readAsDataURL(file);
    }

    function forgetFile() {
      state.fileBase64 = null;
      fileInput.value = "";
      preview.hidden = true;
      preview.removeAttribute("src");
    }

    fileInput.addEventListener("change", function () { useFile(fileInput.files[0]); });
    ["dragenter", "dragover"].forEach(function (name) {
      dropZone.addEventListener(name, function (event) {
        event.preventDefault();
        dropZone.classList.add("dragging");
      });
    });
    ["dragleave", "drop"].forEach(function (name) {
      dropZone.addEventListener(name, function () { dropZone.classList.remove("dragging"); });
    });
    dropZone.addEventListener("drop", function (event) {
      event.preventDefault();
      var files = event.dataTransfer && event.dataTransfer.files;
      if (!files || !files.length) return;
      try {
        fileInput.files = files; // the picker then names the dropped file, as if it had been chosen
      } catch (error) { /* older browsers: the preview still shows it */ }
      useFile(files[0]);
    });
    root.appendChild(dropZone);
    root.appendChild(hint);

    return {
      element: root,
      body: function () {
        if (state.source === "canvas" && state.drawn) return { image: croppedDrawing(canvas, brush) };
        if (state.source === "file" && state.fileBase64) return { image: state.fileBase64 };
        throw new Error(small ? "Draw something or choose an image first." : "Choose an image first.");
      },
    };
  }

  function describeLabels(labels) {
    var digits = labels.every(function (label) { return /^\d$/.test(String(label)); });
    if (digits) return "digit (" + labels[0] + "–" + labels[labels.length - 1] + ")";
    return "picture";
  }

  // The drawing, cropped to a square around the ink (centred, with a margin of half a brush): a digit drawn
  // small in a corner then fills the frame the way the model's training images do. The server still does
  // the model's own preprocessing (resize, invert, scale).
  function croppedDrawing(canvas, brush) {
    var context = canvas.getContext("2d");
    var pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
    var minX = canvas.width, minY = canvas.height, maxX = -1, maxY = -1;
    for (var y = 0; y < canvas.height; y++) {
      for (var x = 0; x < canvas.width; x++) {
        if (pixels[(y * canvas.width + x) * 4] < 200) {
          if (x < minX) minX = x;
          if (x > maxX) maxX = x;
          if (y < minY) minY = y;
          if (y > maxY) maxY = y;
        }
      }
    }
    if (maxX < 0) throw new Error("Draw something first.");
    var side = Math.max(maxX - minX + 1, maxY - minY + 1) + brush;
    var centerX = (minX + maxX + 1) / 2;
    var centerY = (minY + maxY + 1) / 2;
    var out = document.createElement("canvas");
    out.width = side;
    out.height = side;
    var outContext = out.getContext("2d");
    outContext.fillStyle = "#fff";
    outContext.fillRect(0, 0, side, side);
    outContext.drawImage(canvas, side / 2 - centerX, side / 2 - centerY);
    var dataUrl = out.toDataURL("image/png");
    return dataUrl.slice(dataUrl.indexOf(",") + 1);
  }

  function tabularFeatures(config) {
    var inputs = config.signature.inputs;
    var pre = config.preprocessing || {};
    var names = pre.features || pre.feature_names || [];
    var example = Array.isArray(pre.example) ? pre.example : [];
    // Else the version's example: its first row, when it is one [1, F] input.
    var own = config.example && inputs.length === 1 ? config.example[inputs[0].name] : null;
    if (!example.length && Array.isArray(own) && own.length === 1 && Array.isArray(own[0])) example = own[0];
    // skl2onnx exports either one [N, F] input or one [N, 1] input per column.
    if (inputs.length === 1) {
      var shape = inputs[0].shape || [];
      var count = shape.length === 2 ? shape[1] : shape.length === 1 ? 1 : -1;
      if (count < 1) return null;
      var features = [];
      for (var i = 0; i < count; i++) {
        features.push({
          input: inputs[0].name,
          datatype: inputs[0].datatype,
          name: names[i] ? String(names[i]) : "Feature " + (i + 1),
          example: example[i],
        });
      }
      return features;
    }
    var perColumn = inputs.every(function (input) {
      var shape = input.shape || [];
      return shape.length === 2 && shape[1] === 1;
    });
    if (!perColumn) return null;
    return inputs.map(function (input, index) {
      return { input: input.name, datatype: input.datatype, name: String(input.name), example: example[index], own: true };
    });
  }

  // An example row: the model's own example when the page provides one, else mid-range values that fit the type.
  function exampleFor(feature, index) {
    if (feature.example !== undefined && feature.example !== null) return feature.example;
    if (feature.datatype === "BYTES") return "a";
    if (isIntegerType(feature.datatype)) return (index % 3) + 1;
    return Number((0.5 + (index % 4) * 0.5).toFixed(1));
  }

  // A feature's name with line-break opportunities after "_" and "/" (od280/od315_of_diluted_wines), so a narrow
  // column wraps it between words rather than inside one.
  function breakable(name) {
    var parts = [];
    var word = "";
    String(name).split("").forEach(function (character) {
      word += character;
      if (character === "_" || character === "/") {
        parts.push(word, el("wbr"));
        word = "";
      }
    });
    if (word) parts.push(word);
    return parts;
  }

  function tabularEditor(config, features) {
    var root = el("div", { className: "try-it-tabular" });
    var fields = el("div", { className: "try-it-fields" });
    var controls = features.map(function (feature) {
      var id = uniqueId(feature.name);
      var numeric = feature.datatype !== "BYTES";
      var input = el("input", {
        id: id,
        name: feature.name,
        type: numeric ? "number" : "text",
        step: numeric ? (isIntegerType(feature.datatype) ? "1" : "any") : null,
        inputmode: numeric ? "decimal" : null,
        required: true,
      });
      fields.appendChild(el("div", { className: "field" }, [el("label", { for: id }, breakable(feature.name)), input]));
      return { feature: feature, input: input };
    });
    var fillButton = el("button", {
      type: "button",
      className: "button secondary small",
      text: "Fill with example",
      onclick: function () {
        controls.forEach(function (control, index) { control.input.value = exampleFor(control.feature, index); });
      },
    });
    root.appendChild(el("div", { className: "try-it-actions" }, [fillButton]));
    root.appendChild(fields);
    return {
      element: root,
      body: function () {
        var inputs = {};
        controls.forEach(function (control) {
          var feature = control.feature;
          var raw = control.input.value.trim();
          if (raw === "") {
            control.input.focus();
            throw new Error("Fill in “" + feature.name + "” (or use Fill with example).");
          }
          var value = raw;
          if (feature.datatype !== "BYTES") {
            value = Number(raw);
            if (!isFinite(value)) throw new Error("“" + feature.name + "” must be a number.");
            if (isIntegerType(feature.datatype) && !Number.isInteger(value)) {
              throw new Error("“" + feature.name + "” must be a whole number.");
            }
          }
          if (!inputs[feature.input]) inputs[feature.input] = [[]];
          inputs[feature.input][0].push(value);
        });
        return { inputs: inputs };
      },
    };
  }

  function jsonEditor(config) {
    var root = el("div", { className: "try-it-json" });
    var editors = config.signature.inputs.map(function (input) {
      var id = uniqueId(input.name);
      var helpId = id + "-help";
      var textarea = el("textarea", {
        id: id,
        name: input.name,
        spellcheck: "false",
        autocapitalize: "off",
        "aria-describedby": helpId,
        rows: 4,
      });
      textarea.value = formatTensor(startingTensor(config, input));
      root.appendChild(el("div", { className: "field" }, [
        el("label", { for: id }, [el("code", { text: input.name })]),
        el("p", { id: helpId, className: "help",
          text: (input.datatype || "any type") + ", shape " + shapeText(input.shape) +
            " — a nested JSON list (? is any size)" }),
        textarea,
      ]));
      return { input: input, textarea: textarea };
    });
    var reset = el("button", {
      type: "button",
      className: "button secondary small",
      text: "Reset to example",
      onclick: function () {
        editors.forEach(function (editor) {
          editor.textarea.value = formatTensor(startingTensor(config, editor.input));
        });
      },
    });
    root.appendChild(el("div", { className: "try-it-actions" }, [reset]));
    return {
      element: root,
      body: function () {
        var inputs = {};
        editors.forEach(function (editor) {
          try {
            inputs[editor.input.name] = JSON.parse(editor.textarea.value);
          } catch (error) {
            editor.textarea.focus();
            throw new Error("The value of “" + editor.input.name + "” is not valid JSON: " + error.message);
          }
        });
        return { inputs: inputs };
      },
    };
  }

  // Text classification: a text box; the server tokenizes it and answers with `top` (shown as label bars).
  function textEditor(config) {
    var id = uniqueId("text");
    var textarea = el("textarea", { id: id, name: "text", rows: 4, className: "try-it-text" });
    textarea.value = config.exampleText.length ? config.exampleText[0] : "";
    var root = el("div", { className: "try-it-text-editor" }, [
      el("div", { className: "field" }, [el("label", { for: id, text: "Text" }), textarea]),
    ]);
    return {
      element: root,
      body: function () {
        if (!textarea.value.trim()) {
          textarea.focus();
          throw new Error("Type some text first.");
        }
        return { text: textarea.value };
      },
    };
  }

  // Feature extraction: the sentence-similarity widget. One source sentence and others to compare with it;
  // the server answers with one normalized embedding per sentence, so a dot product is the cosine similarity.
  function similarityEditor(config) {
    var sourceId = uniqueId("source-sentence");
    var othersId = uniqueId("sentences");
    var source = el("input", { id: sourceId, name: "source_sentence", type: "text", className: "try-it-source" });
    var others = el("textarea", { id: othersId, name: "sentences", rows: 4, className: "try-it-sentences",
      "aria-describedby": othersId + "-help" });
    source.value = config.exampleText.length ? config.exampleText[0] : "";
    others.value = config.exampleText.slice(1).join("\n");
    var root = el("div", { className: "try-it-similarity" }, [
      el("div", { className: "field" }, [el("label", { for: sourceId, text: "Source sentence" }), source]),
      el("div", { className: "field" }, [
        el("label", { for: othersId, text: "Sentences to compare to" }),
        el("p", { id: othersId + "-help", className: "help", text: "One sentence per line." }),
        others,
      ]),
    ]);
    var compared = [];
    return {
      element: root,
      body: function () {
        var first = source.value.trim();
        compared = others.value.split("\n").map(function (line) { return line.trim(); })
          .filter(function (line) { return line; });
        if (!first) {
          source.focus();
          throw new Error("Type a source sentence first.");
        }
        if (!compared.length) {
          others.focus();
          throw new Error("Add at least one sentence to compare to.");
        }
        return { text: [first].concat(compared) };
      },
      render: function (container, result) {
        var vectors = result.embeddings;
        if (!Array.isArray(vectors) || vectors.length !== compared.length + 1) {
          renderResult(container, result);
          return;
        }
        clear(container);
        container.appendChild(el("h3", { className: "try-it-result-heading", text: "Similarity to the source" }));
        var list = el("ol", { className: "try-it-bars try-it-similarities", "aria-label": "Similarities" });
        compared.forEach(function (sentence, index) {
          var other = vectors[index + 1];
          var score = vectors[0].reduce(function (sum, value, i) { return sum + value * other[i]; }, 0);
          var width = Math.max(0, Math.min(1, score)) * 100;
          list.appendChild(el("li", { className: "try-it-bar try-it-similarity-row" }, [
            el("span", { className: "try-it-bar-label", text: sentence }),
            el("span", { className: "try-it-bar-track", "aria-hidden": "true" }, [
              el("span", { className: "try-it-bar-fill", style: "width: " + width.toFixed(1) + "%" }),
            ]),
            el("span", { className: "try-it-bar-score try-it-similarity-score", text: score.toFixed(3) }),
          ]));
        });
        container.appendChild(list);
        container.appendChild(el("details", { className: "try-it-raw" }, [
          el("summary", { text: "Raw JSON" }),
          el("pre", {}, [el("code", { text: readableJson(result, 2) })]),
        ]));
      },
    };
  }

  // ---- the widget ---------------------------------------------------------------------------------------------

  function predictUrl(model) {
    var parts = model.split("/");
    return "/api/v1/models/" + encodeURIComponent(parts[0]) + "/" + encodeURIComponent(parts[1]) +
      "/predict?wait=" + WAIT_SECONDS;
  }

  function predictionUrl(accepted) {
    if (accepted.url) {
      try {
        var url = new URL(accepted.url, window.location.href);
        if (url.origin === window.location.origin) return url.pathname + url.search;
      } catch (error) { /* fall back to the documented path */ }
    }
    return "/api/v1/predictions/" + encodeURIComponent(accepted.id);
  }

  // Without data-authenticated, the site's navigation tells: members get a logout form.
  function signedInByNavigation() {
    return Boolean(document.querySelector("form[action$='/accounts/logout/']"));
  }

  function build(section) {
    if (section.getAttribute("data-try-it-ready") === "true") return;
    section.setAttribute("data-try-it-ready", "true");
    section.classList.add("try-it");

    var model = (section.getAttribute("data-model") || "").trim();
    var task = (section.getAttribute("data-task") || "").trim();
    var signature = parseJsonAttribute(section, "data-signature", {});
    var labels = parseJsonAttribute(section, "data-labels", []);
    var preprocessing = parseJsonAttribute(section, "data-preprocessing", {});
    var example = parseJsonAttribute(section, "data-example", {});
    var takesText = section.getAttribute("data-text") === "true";
    var exampleText = parseJsonAttribute(section, "data-example-text", []);
    if (!Array.isArray(exampleText)) exampleText = [];
    var authenticated = section.hasAttribute("data-authenticated")
      ? section.getAttribute("data-authenticated") === "true"
      : signedInByNavigation();
    var version = parseInt(section.getAttribute("data-version") || "", 10);
    var loginUrl = section.getAttribute("data-login-url") ||
      "/accounts/login/?next=" + encodeURIComponent(window.location.pathname);
    if (!Array.isArray(labels)) labels = [];
    if (!signature || !Array.isArray(signature.inputs)) signature = { inputs: [], outputs: [] };
    if (!preprocessing || typeof preprocessing !== "object") preprocessing = {};
    if (!example || typeof example !== "object" || Array.isArray(example)) example = {};

    if (!section.querySelector("h2")) section.appendChild(el("h2", { text: "Try it" }));
    var body = el("div", { className: "try-it-body" });
    section.appendChild(body);

    if (!/^[^/\s]+\/[^/\s]+$/.test(model)) {
      body.appendChild(el("p", { className: "muted", text: "This model cannot be tried here." }));
      return;
    }
    if (!authenticated) {
      body.appendChild(el("p", { className: "try-it-signin" }, [
        el("a", { href: loginUrl, className: "button", text: "Sign in to try this model" }),
        " ",
        el("span", { className: "muted", text: "Runs count against your account's quota." }),
      ]));
      return;
    }
    if (!signature.inputs.length) {
      body.appendChild(el("p", { className: "muted",
        text: "This model has no ready version yet: it can be tried once its file has been validated." }));
      return;
    }

    var message = el("p", { className: "try-it-message", role: "alert" });
    var config = {
      model: model,
      task: task,
      signature: signature,
      labels: labels,
      preprocessing: preprocessing,
      example: example,
      exampleText: exampleText.filter(function (item) { return typeof item === "string"; }),
      showMessage: function (text) { message.textContent = text; },
    };

    var editor;
    var features = /^tabular-/.test(task) ? tabularFeatures(config) : null;
    if (takesText && task === "feature-extraction") editor = similarityEditor(config);
    else if (takesText) editor = textEditor(config);
    else if (task === "image-classification") editor = imageEditor(config);
    else if (features) editor = tabularEditor(config, features);
    else editor = jsonEditor(config);

    var form = el("form", { className: "try-it-form", novalidate: true, "aria-label": "Try " + model });
    var runButton = el("button", { type: "submit", className: "button try-it-run", text: "Run" });
    var cancelButton = el("button", { type: "button", className: "button secondary try-it-cancel", text: "Cancel",
      hidden: true });
    var status = el("p", { className: "try-it-status", role: "status", "aria-live": "polite" });
    var results = el("div", { className: "try-it-result", "aria-live": "polite" });
    form.appendChild(editor.element);
    // Run, its status and any message stay together at the bottom of the screen while a long form (a tabular
    // model's many features) runs below it (CSS: .try-it-footer is sticky).
    form.appendChild(el("div", { className: "try-it-footer" }, [
      el("div", { className: "try-it-actions try-it-run-row" }, [runButton, cancelButton, status]),
      message,
    ]));
    body.appendChild(form);
    body.appendChild(results);

    var current = null; // the prediction being followed, so a new run or Cancel can stop its polling

    function setStatus(state, words) {
      status.setAttribute("data-status", state || "");
      clear(status);
      if (!words) return;
      status.appendChild(el("span", { className: "try-it-status-badge " + (state || ""), text: words }));
    }

    // The answer is below the form: bring it on screen when a long form left it out of view.
    function reveal() {
      if (results.firstChild && results.scrollIntoView) results.scrollIntoView({ block: "nearest" });
    }

    function finish() {
      runButton.disabled = false;
      cancelButton.hidden = true;
      current = null;
    }

    function fail(text, response) {
      setStatus("failed", "Failed");
      message.textContent = text;
      if (response && needsSignIn(response)) {
        message.appendChild(document.createTextNode(" "));
        message.appendChild(el("a", { href: loginUrl, text: "Sign in" }));
      }
      finish();
    }

    function follow(accepted) {
      var run = { id: accepted.id, url: predictionUrl(accepted), stopped: false, started: Date.now() };
      current = run;
      cancelButton.hidden = false;
      var delay = POLL_FIRST_MS;
      function show(record) {
        var state = record.status || "queued";
        setStatus(state, STATUS_WORDS[state] || state);
      }
      function poll() {
        if (run.stopped) return;
        apiRequest("GET", run.url).then(function (response) {
          if (run.stopped) return;
          if (response.status !== 200 || !response.data) {
            fail(explainFailure(response), response);
            return;
          }
          var record = response.data;
          show(record);
          if (record.status === "succeeded") {
            var top = record.top || topFromOutputs(record.outputs, labels);
            renderResult(results, Object.assign({ model: model }, record, top ? { top: top } : {}));
            reveal();
            finish();
          } else if (record.status === "failed") {
            fail("The prediction failed: " + (errorWords(record.error) || "no reason given."));
          } else if (record.status === "canceled") {
            message.textContent = "The prediction was canceled.";
            finish();
          } else if (Date.now() - run.started > POLL_GIVE_UP_MS) {
            fail("Still not done after ten minutes; its status stays on your predictions list.");
          } else {
            delay = Math.min(POLL_MAX_MS, delay * 1.5);
            window.setTimeout(poll, delay);
          }
        }, function () {
          if (!run.stopped) window.setTimeout(poll, POLL_MAX_MS);
        });
      }
      show(accepted);
      window.setTimeout(poll, delay);
    }

    cancelButton.addEventListener("click", function () {
      if (!current) return;
      var run = current;
      run.stopped = true;
      apiRequest("POST", "/api/v1/predictions/" + encodeURIComponent(run.id) + "/cancel", {}).then(function (response) {
        if (response.status >= 400) message.textContent = explainFailure(response);
        else message.textContent = "The prediction was canceled.";
        setStatus("canceled", STATUS_WORDS.canceled);
        finish();
      }, function () {
        message.textContent = "Could not reach the server to cancel.";
        finish();
      });
    });

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (current) current.stopped = true;
      message.textContent = "";
      var requestBody;
      try {
        requestBody = editor.body();
      } catch (error) {
        message.textContent = error.message;
        return;
      }
      // The widget was built from this version's signature: run that one, not a newer one.
      if (version > 0) requestBody.version = version;
      runButton.disabled = true;
      setStatus("sending", "Running…");
      // The page's code samples (snippets.js) follow what the widget sends.
      section.dispatchEvent(new CustomEvent("try-it:sent", { bubbles: true, detail: { body: requestBody } }));
      apiRequest("POST", predictUrl(model), requestBody).then(function (response) {
        if (response.status === 200 && response.data && response.data.status === "failed") {
          fail("The prediction failed: " + (errorWords(response.data.error) || "no reason given."));
        } else if (response.status === 200 && response.data) {
          setStatus("succeeded", STATUS_WORDS.succeeded);
          (editor.render || renderResult)(results, response.data);
          reveal();
          finish();
        } else if (response.status === 202 && response.data && response.data.id) {
          follow(response.data);
        } else {
          fail(explainFailure(response), response);
        }
      }, function () {
        fail("Could not reach the server. Check your connection and try again.");
      });
    });
  }

  function init() {
    var sections = document.querySelectorAll("#try-it, section[data-try-it]");
    for (var i = 0; i < sections.length; i++) build(sections[i]);
  }

  window.ModelportTryIt = { init: init };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
