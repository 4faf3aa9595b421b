// The chat page: keeps the conversation, streams each reply into the log as Markdown made safe (markdown.js),
// re-rendered at most once per frame; a model picker, New chat, Regenerate, Retry, copy buttons, a Thinking block.
import { chat, resumeChat } from "/static/chatsse.js";
import { createRenderer } from "/static/markdown.js";

const render = createRenderer(window);
const byId = (id) => document.getElementById(id);
const log = byId("log");
const form = byId("composer");
const prompt = byId("prompt");
const sendButton = byId("send");
const stopButton = byId("stop");
const keyForm = byId("keybox");
const keyInput = byId("key");
const modelBox = byId("model-box");
const modelSelect = byId("model");

// The conversation and the reply in flight live in sessionStorage, so a reload (or a crashed tab restored)
// shows the conversation again and, when the gateway keeps replies, picks the reply up where it stopped.
const history = JSON.parse(sessionStorage.getItem("chatsse-history") || "[]");
let callerKey = sessionStorage.getItem("chatsse-caller-key");
let current = null; // { abort } while a reply streams
let conversation = 0; // New chat starts another: a reply still ending belongs to the old one

const saveHistory = () => sessionStorage.setItem("chatsse-history", JSON.stringify(history));
const savePending = (pending) =>
  pending
    ? sessionStorage.setItem("chatsse-pending", JSON.stringify(pending))
    : sessionStorage.removeItem("chatsse-pending");
const authorization = () => (callerKey ? { Authorization: `Bearer ${callerKey}` } : {});

function element(tag, className, text) {
  const made = document.createElement(tag);
  if (className) made.className = className;
  if (text !== undefined) made.textContent = text;
  return made;
}

function button(label, onClick, ariaLabel) {
  const made = element("button", "quiet small", label);
  made.type = "button";
  if (ariaLabel) made.setAttribute("aria-label", ariaLabel);
  made.addEventListener("click", onClick);
  return made;
}

async function copy(text, control) {
  try {
    await navigator.clipboard.writeText(text);
    control.textContent = "Copied";
  } catch {
    control.textContent = "Copy failed";
  }
  setTimeout(() => { control.textContent = "Copy"; }, 1500);
}

const nearBottom = () => window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 48;
const toBottom = () => window.scrollTo(0, document.documentElement.scrollHeight); // past the sticky composer

/** Run `change` (which makes the page longer), keeping the reader at the bottom if that is where they were. */
function keepingBottom(change) {
  const stick = nearBottom();
  change();
  if (stick) toBottom();
}

function paint(body, markdown) {
  keepingBottom(() => {
    body.innerHTML = render(markdown).trimEnd(); // sanitized: no script, handler, style or img survives
  });
}

/** A reply's text, painted at most once per animation frame however fast the tokens come. */
function liveText(body) {
  let markdown = "";
  let frame = 0;
  return {
    set(value) {
      markdown = value;
      frame ||= requestAnimationFrame(() => { frame = 0; paint(body, markdown); });
    },
    finish() {
      cancelAnimationFrame(frame);
      frame = 0;
      paint(body, markdown);
      for (const pre of body.querySelectorAll("pre")) {
        const box = element("div", "code");
        pre.replaceWith(box);
        box.append(pre, button("Copy", (e) => copy(pre.textContent, e.currentTarget), "Copy code"));
      }
    },
  };
}

function addTurn(role, text = "") {
  const item = element("li", role);
  item.append(element("span", "who", role === "user" ? "You" : "Assistant"));
  if (role === "user") {
    item.append(element("div", "text plain", text)); // what the user typed, as typed
  } else {
    const thinking = element("details", "thinking");
    thinking.hidden = true;
    thinking.append(element("summary", "", "Thinking"), element("div", "thought"));
    item.append(thinking, element("div", "text markdown"));
  }
  log.append(item);
  toBottom();
  return item;
}

function note(item, className, text) {
  const line = element("div", className, text);
  if (className === "error") line.setAttribute("role", "alert");
  keepingBottom(() => item.append(line));
  return line;
}

function setBusy(busy) {
  sendButton.disabled = busy;
  stopButton.disabled = !busy;
  form.setAttribute("aria-busy", String(busy));
}

/** Ask for a reply to the conversation as it stands (its last turn is the user's). */
function ask() {
  const pending = { streamId: null, lastEventId: null, text: "" };
  const body = { messages: history.slice() };
  if (!modelBox.hidden && modelSelect.value) body.model = modelSelect.value;
  const request = chat("/api/v1/chat/stream", body, {
    headers: authorization(),
    onPosition: (position) => savePending(Object.assign(pending, position)),
  });
  return showReply(request.events, request.abort, pending);
}

function send(text) {
  history.push({ role: "user", content: text });
  saveHistory();
  addTurn("user", text);
  prompt.focus();
  return ask();
}

/** Ask again for the last reply: drop it (and what of it is in the conversation), then ask. */
function again(item) {
  if (current) return;
  if (history.at(-1)?.role === "assistant") history.pop();
  saveHistory();
  item.remove();
  ask();
}

function resumePending() {
  const pending = JSON.parse(sessionStorage.getItem("chatsse-pending") || "null");
  if (!pending?.streamId) return;
  const controller = new AbortController();
  const events = resumeChat("/api/v1/chat/stream", pending.streamId, pending.lastEventId, {
    headers: authorization(),
    signal: controller.signal,
    onPosition: (position) => savePending(Object.assign(pending, position)),
  });
  showReply(events, () => controller.abort(), pending);
}

function replyActions(item, getText) {
  for (const old of log.querySelectorAll(".regenerate")) old.remove(); // only the last reply can be asked again
  const actions = element("div", "reply-actions");
  actions.append(button("Copy", (e) => copy(getText(), e.currentTarget), "Copy reply"));
  const regenerate = button("Regenerate", () => again(item), "Regenerate this reply");
  regenerate.classList.add("regenerate");
  actions.append(regenerate);
  keepingBottom(() => item.append(actions));
}

async function showReply(events, abort, pending) {
  const item = addTurn("assistant");
  item.setAttribute("aria-busy", "true");
  const text = liveText(item.querySelector(".text"));
  const thinking = item.querySelector(".thinking");
  const thought = item.querySelector(".thought");
  const started = performance.now();
  let firstTokenMs = null;
  let reply = pending.text;
  let failed = false;
  const mine = conversation;
  if (reply) text.set(reply);
  current = { abort };
  setBusy(true);
  try {
    for await (const event of events) {
      if (event.content) {
        if (firstTokenMs === null) firstTokenMs = Math.round(performance.now() - started);
        reply += event.content;
        text.set(reply);
        pending.text = reply;
        if (pending.streamId) savePending(pending);
      } else if (event.reasoning) {
        thinking.hidden = false;
        thought.textContent += event.reasoning;
      } else if (event.done) {
        const parts = [`finish: ${event.finish_reason}`];
        if (firstTokenMs !== null) parts.push(`first token ${firstTokenMs} ms`);
        if (event.usage) parts.push(`${event.usage.completion_tokens} tokens`);
        note(item, "meta", parts.join(" · "));
      } else if (event.error) {
        failed = true;
        note(item, "error", `The reply broke off: ${event.error.message}`);
      }
    }
  } catch (error) {
    failed = error.name !== "AbortError";
    if (error.name === "AbortError") note(item, "meta", "Stopped.");
    else if (error.name === "ChatError") {
      note(item, "error", error.message);
      if (error.status === 401) {
        keyForm.hidden = false;
        keyInput.focus();
      }
    } else note(item, "error", "Network error: the gateway could not be reached. Check your connection and try again.");
  } finally {
    text.finish();
    item.removeAttribute("aria-busy");
    if (mine === conversation) {
      savePending(null);
      if (reply) history.push({ role: "assistant", content: reply });
      saveHistory();
      if (failed) item.querySelector(".error")?.append(" ", button("Retry", () => again(item), "Retry this reply"));
      else replyActions(item, () => reply);
    }
    current = null;
    setBusy(false);
    if (keyForm.hidden) prompt.focus();
  }
}

async function loadModels() {
  try {
    const response = await fetch("/api/v1/models", { headers: authorization() });
    if (!response.ok) return; // 401: asked again once a key is given
    const { models } = await response.json();
    if (models.length < 2) return;
    const chosen = sessionStorage.getItem("chatsse-model");
    modelSelect.replaceChildren(...models.map((name) => new Option(name, name, false, name === chosen)));
    modelBox.hidden = false;
  } catch {
    // no picker: the gateway's first model group answers
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const value = prompt.value;
  if (!value.trim() || current) return;
  prompt.value = "";
  send(value);
});

prompt.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    form.requestSubmit();
  }
});
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && current) {
    event.preventDefault();
    current.abort();
  }
});

stopButton.addEventListener("click", () => current?.abort());
modelSelect.addEventListener("change", () => sessionStorage.setItem("chatsse-model", modelSelect.value));
byId("new-chat").addEventListener("click", () => {
  conversation += 1;
  current?.abort();
  history.length = 0;
  saveHistory();
  savePending(null);
  log.replaceChildren();
  prompt.focus();
});

keyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  callerKey = keyInput.value.trim();
  sessionStorage.setItem("chatsse-caller-key", callerKey);
  keyInput.value = "";
  keyForm.hidden = true;
  loadModels();
  prompt.focus();
});

for (const turn of history) {
  const item = addTurn(turn.role, turn.content);
  if (turn.role === "assistant") {
    const text = liveText(item.querySelector(".text"));
    text.set(turn.content);
    text.finish();
  }
}
const last = log.querySelector("li.assistant:last-child");
if (last) replyActions(last, () => history.at(-1).content);
loadModels();
resumePending();
prompt.focus();
