// chatsse.js: a browser client for chatsse streams (an ES module, no dependencies).
//
//   import { chat, openEventSource } from "https://your-gateway/static/chatsse.js";
//   const { events, abort } = chat("https://your-gateway/api/v1/chat/stream", { message: "Hello" });
//   for await (const event of events) { /* {content} ... then {done} or {error} */ }

/** An error before the stream started (HTTP status, JSON body) or a stream that broke off. */
export class ChatError extends Error {
  constructor(code, message, status = 0) {
    super(message);
    this.name = "ChatError";
    this.code = code;
    this.status = status;
  }
}

/**
 * Incremental Server-Sent Events parser (WHATWG rules): feed it text as it arrives, in any pieces;
 * lines end in CRLF, LF or CR (a CR at the end of one piece may pair with an LF starting the next).
 */
export class SSEParser {
  #buffer = "";
  #pendingCR = false;
  #data = [];
  #type = "";
  #id = "";

  feed(text) {
    if (!text) return [];
    if (this.#pendingCR && text.startsWith("\n")) text = text.slice(1);
    this.#pendingCR = text.endsWith("\r");
    const lines = (this.#buffer + text).split(/\r\n|\r|\n/);
    this.#buffer = lines.pop();
    const events = [];
    for (const line of lines) {
      if (line === "") {
        if (this.#data.length) {
          events.push({ type: this.#type || "message", data: this.#data.join("\n"), id: this.#id });
        }
        this.#data = [];
        this.#type = "";
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon === -1 ? line : line.slice(0, colon);
      let value = colon === -1 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "data") this.#data.push(value);
      else if (field === "event") this.#type = value;
      else if (field === "id" && !value.includes("\0")) this.#id = value;
    }
    return events;
  }
}

/**
 * POST a chat and yield its events as objects: {content}, then {done, finish_reason, usage} or {error}.
 * Throws ChatError when the gateway refuses the request (with its error code) or the stream breaks off.
 */
export async function* streamChat(url, body, { signal, headers = {} } = {}) {
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "text/event-stream", ...headers },
    body: JSON.stringify(body),
    signal,
  });
  if (!response.ok) {
    let error = { code: `http_${response.status}`, message: `The gateway answered HTTP ${response.status}.` };
    try {
      error = (await response.json()).error ?? error;
    } catch {
      // not our JSON error: keep the generic one
    }
    throw new ChatError(error.code, error.message, response.status);
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  const parser = new SSEParser();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      for (const event of parser.feed(value)) {
        const payload = JSON.parse(event.data);
        yield payload;
        if (payload.done || payload.error) return;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
  throw new ChatError("stream_ended", "The connection closed before the reply was finished.");
}

/** streamChat with an abort handle: `const { events, abort } = chat(url, body)`. */
export function chat(url, body, options = {}) {
  const controller = new AbortController();
  const events = streamChat(url, body, { ...options, signal: controller.signal });
  return { events, abort: () => controller.abort() };
}

/**
 * Native EventSource for `GET .../chat/stream?message=`. EventSource reconnects (and so asks again) whenever
 * a stream ends, so this closes it on the done or error event, or on the first connection failure.
 */
export function openEventSource(url, { onEvent = () => {}, onClose = () => {} } = {}) {
  const source = new EventSource(url);
  let finished = false;
  const finish = (payload) => {
    source.close();
    if (!finished) {
      finished = true;
      onClose(payload);
    }
  };
  source.onmessage = (message) => {
    const payload = JSON.parse(message.data);
    onEvent(payload);
    if (payload.done || payload.error) finish(payload);
  };
  source.onerror = () =>
    finish({ error: { code: "connection_failed", message: "The stream could not be opened or broke off." } });
  return source;
}
