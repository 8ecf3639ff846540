/*
 * The chat of a text-generation model's page: POST /v1/chat/completions (OpenAI's API) with the session cookie
 * and the CSRF token, "stream": true, and the answer shown as its Server-Sent Events arrive. Stop aborts the
 * request; the server stops the generation when the connection closes, and records the tokens produced.
 *
 * The page provides <section id="chat" data-model="owner/name" data-url="/v1/chat/completions"> holding
 * .chat-log, and a .chat-form with a message box, max_tokens and temperature fields, Send, Stop and Clear.
 */
(function () {
  "use strict";

  var section = document.getElementById("chat");
  if (!section) return;
  var log = section.querySelector(".chat-log");
  var form = section.querySelector(".chat-form");
  if (!log || !form) return; // not signed in: the section only says how to
  var send = form.querySelector(".chat-send");
  var stop = form.querySelector(".chat-stop");
  var clearButton = form.querySelector(".chat-clear");
  var status = form.querySelector(".chat-status");
  var messages = [];
  var running = null; // the AbortController of the answer being streamed

  function csrfToken() {
    var match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  function bubble(role, text) {
    var item = document.createElement("li");
    item.className = "chat-message chat-" + role;
    var who = document.createElement("span");
    who.className = "chat-role";
    who.textContent = role === "user" ? "You" : "Model";
    var body = document.createElement("div");
    body.className = "chat-text";
    body.textContent = text;
    item.appendChild(who);
    item.appendChild(body);
    log.appendChild(item);
    item.scrollIntoView({ block: "end" });
    return body;
  }

  function setRunning(controller) {
    running = controller;
    send.disabled = !!controller;
    stop.disabled = !controller;
  }

  function number(name, fallback) {
    var value = parseFloat(form.elements[name].value);
    return isNaN(value) ? fallback : value;
  }

  // The error object of OpenAI's API, or the status line when the answer is not one.
  function errorText(response, text) {
    try {
      return JSON.parse(text).error.message;
    } catch (e) {
      return "The server answered " + response.status + ".";
    }
  }

  // Reads `data: {...}` events from the stream, calling onDelta(text) for each piece of the answer.
  async function readEvents(response, onDelta) {
    var reader = response.body.getReader();
    var decoder = new TextDecoder();
    var buffer = "";
    var finish = null;
    for (;;) {
      var chunk = await reader.read();
      if (chunk.done) break;
      buffer += decoder.decode(chunk.value, { stream: true });
      var events = buffer.split("\n\n");
      buffer = events.pop();
      events.forEach(function (event) {
        var line = event.trim();
        if (line.indexOf("data: ") !== 0) return;
        var data = line.slice(6);
        if (data === "[DONE]") return;
        var payload = JSON.parse(data);
        if (payload.error) throw new Error(payload.error.message);
        (payload.choices || []).forEach(function (choice) {
          if (choice.delta && choice.delta.content) onDelta(choice.delta.content);
          if (choice.finish_reason) finish = choice.finish_reason;
        });
      });
    }
    return finish;
  }

  async function ask(text) {
    messages.push({ role: "user", content: text });
    bubble("user", text);
    var answer = bubble("assistant", "");
    answer.classList.add("streaming");
    var controller = new AbortController();
    setRunning(controller);
    status.textContent = "Generating…";
    var produced = "";
    try {
      var response = await fetch(section.dataset.url, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
        body: JSON.stringify({
          model: section.dataset.model,
          messages: messages,
          stream: true,
          max_tokens: Math.round(number("max_tokens", 128)),
          temperature: number("temperature", 0.7),
        }),
        signal: controller.signal,
      });
      if (!response.ok) {
        throw new Error(errorText(response, await response.text()));
      }
      var finish = await readEvents(response, function (delta) {
        produced += delta;
        answer.textContent = produced;
      });
      status.textContent = finish === "length" ? "Stopped at the token limit." : "Done.";
    } catch (error) {
      if (error.name === "AbortError") {
        status.textContent = "Stopped.";
      } else {
        status.textContent = error.message;
        answer.parentNode.classList.add("chat-error");
      }
    } finally {
      answer.classList.remove("streaming");
      if (produced) messages.push({ role: "assistant", content: produced });
      else messages.pop(); // nothing came back: the question leaves the conversation the model is sent
      setRunning(null);
    }
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var box = form.elements.message;
    var text = box.value.trim();
    if (!text || running) return;
    box.value = "";
    ask(text);
  });
  form.elements.message.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  stop.addEventListener("click", function () {
    if (running) running.abort();
  });
  clearButton.addEventListener("click", function () {
    if (running) running.abort();
    messages = [];
    while (log.firstChild) log.removeChild(log.firstChild);
    status.textContent = "";
  });
})();
