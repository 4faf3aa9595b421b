// The chat page: keeps the conversation, streams each reply into the log as text, shows errors in words.
import { chat, resumeChat } from "/static/chatsse.js";

const log = document.getElementById("log");
const form = document.getElementById("composer");
const prompt = document.getElementById("prompt");
const sendButton = document.getElementById("send");
const stopButton = document.getElementById("stop");

const keyForm = document.getElementById("keybox");
const keyInput = document.getElementById("key");

// The conversation and the reply in flight live in sessionStorage, so a reload (or a crashed tab restored)
// shows the conversation again and, when the gateway keeps replies, picks the reply up where it stopped.
const history = JSON.parse(sessionStorage.getItem("chatsse-history") || "[]");
let callerKey = sessionStorage.getItem("chatsse-caller-key");
let current = null; // { abort } while a reply streams

const saveHistory = () => sessionStorage.setItem("chatsse-history", JSON.stringify(history));
const savePending = (pending) =>
  pending
    ? sessionStorage.setItem("chatsse-pending", JSON.stringify(pending))
    : sessionStorage.removeItem("chatsse-pending");

function addTurn(role, text = "") {
  const item = document.createElement("li");
  item.className = role;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = role === "user" ? "You" : "Assistant";
  const body = document.createElement("div");
  body.className = "text";
  body.textContent = text; // always text, never HTML
  item.append(who, body);
  log.append(item);
  item.scrollIntoView({ block: "end" });
  return item;
}

function note(item, className, text) {
  const line = document.createElement("div");
  line.className = className;
  if (className === "error") line.setAttribute("role", "alert");
  line.textContent = text;
  item.append(line);
}

function setBusy(busy) {
  sendButton.disabled = busy;
  stopButton.disabled = !busy;
  form.setAttribute("aria-busy", String(busy));
}

async function send(text) {
  history.push({ role: "user", content: text });
  saveHistory();
  addTurn("user", text);
  const headers = callerKey ? { Authorization: `Bearer ${callerKey}` } : {};
  const pending = { streamId: null, lastEventId: null, text: "" };
  const request = chat("/api/v1/chat/stream", { messages: history.slice() }, {
    headers,
    onPosition: (position) => savePending(Object.assign(pending, position)),
  });
  await showReply(request.events, request.abort, pending);
}

function resumePending() {
  const pending = JSON.parse(sessionStorage.getItem("chatsse-pending") || "null");
  if (!pending?.streamId) return;
  const controller = new AbortController();
  const headers = callerKey ? { Authorization: `Bearer ${callerKey}` } : {};
  const events = resumeChat("/api/v1/chat/stream", pending.streamId, pending.lastEventId, {
    headers,
    signal: controller.signal,
    onPosition: (position) => savePending(Object.assign(pending, position)),
  });
  showReply(events, () => controller.abort(), pending);
}

async function showReply(events, abort, pending) {
  const item = addTurn("assistant", pending.text);
  item.setAttribute("aria-busy", "true");
  const body = item.querySelector(".text");
  const started = performance.now();
  let firstTokenMs = null;
  let reply = pending.text;
  current = { abort };
  setBusy(true);
  try {
    for await (const event of events) {
      if (event.content) {
        if (firstTokenMs === null) firstTokenMs = Math.round(performance.now() - started);
        reply += event.content;
        body.textContent = reply;
        pending.text = reply;
        if (pending.streamId) savePending(pending);
      } else if (event.done) {
        const parts = [`finish: ${event.finish_reason}`];
        if (firstTokenMs !== null) parts.push(`first token ${firstTokenMs} ms`);
        if (event.usage) parts.push(`${event.usage.completion_tokens} tokens`);
        note(item, "meta", parts.join(" · "));
      } else if (event.error) {
        note(item, "error", `The reply broke off: ${event.error.message}`);
      }
    }
  } catch (error) {
    if (error.name === "AbortError") note(item, "meta", "Stopped.");
    else if (error.name === "ChatError") {
      note(item, "error", error.message);
      if (error.status === 401) {
        keyForm.hidden = false;
        keyInput.focus();
      }
    }
    else note(item, "error", "Network error: the gateway could not be reached. Check your connection and try again.");
  } finally {
    savePending(null);
    if (reply) history.push({ role: "assistant", content: reply });
    saveHistory();
    item.removeAttribute("aria-busy");
    current = null;
    setBusy(false);
    prompt.focus();
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = prompt.value;
  if (!text.trim() || current) return;
  prompt.value = "";
  send(text);
});

prompt.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    form.requestSubmit();
  }
});

stopButton.addEventListener("click", () => current?.abort());

keyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  callerKey = keyInput.value.trim();
  sessionStorage.setItem("chatsse-caller-key", callerKey);
  keyInput.value = "";
  keyForm.hidden = true;
  prompt.focus();
});
for (const turn of history) addTurn(turn.role, turn.content);
resumePending();
prompt.focus();
