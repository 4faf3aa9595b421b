// chatsse.js: a browser client for chatsse streams (an ES module, no dependencies).
//
//   import { chat, openEventSource } from "https://your-gateway/static/chatsse.js";
//   const { events, abort } = chat("https://your-gateway/api/v1/chat/stream", { message: "Hello" });
//   for await (const event of events) { /* {content} ... then {done} or {error} */ }
//   With CHATSSE_RESUME_SECONDS on the gateway, a dropped connection resumes by itself (see resumeChat).

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

const RESUME_ATTEMPTS = 40; // about a minute of waiting for the network to come back
const sleep = (ms, signal) =>
  new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(new DOMException("Aborted", "AbortError"));
    });
  });

/**
 * Stopping a kept reply must end it at the gateway too: a disconnect alone leaves the gateway reading it (and the
 * upstream charging for it) until the resume window passes. So an abort also sends DELETE for the stream.
 */
function stopOnAbort(url, position, signal, headers) {
  signal?.addEventListener(
    "abort",
    () => {
      if (!position.streamId) return;
      fetch(`${url}/${position.streamId}`, { method: "DELETE", headers, keepalive: true }).catch(() => {});
    },
    { once: true },
  );
}

async function refused(response) {
  let error = { code: `http_${response.status}`, message: `The gateway answered HTTP ${response.status}.` };
  try {
    error = (await response.json()).error ?? error;
  } catch {
    // not our JSON error: keep the generic one
  }
  return new ChatError(error.code, error.message, response.status);
}

/**
 * Yield the events of one response; `position` tracks the stream id and the last event id seen.
 * Returns true once the reply is over (done or error), false if the connection ended first.
 */
async function* eventsOf(response, position, onPosition) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  const parser = new SSEParser();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return false;
      for (const event of parser.feed(value)) {
        const payload = JSON.parse(event.data);
        if (event.id) {
          position.lastEventId = event.id;
          onPosition?.({ ...position });
        }
        yield payload;
        if (payload.done || payload.error) return true;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

/**
 * Follow a kept reply (the gateway runs with CHATSSE_RESUME_SECONDS): after a network error, after a page
 * reload (keep `streamId` and `lastEventId` from `onPosition`), or in a second tab. Yields only the events after
 * `lastEventId`, so text is neither lost nor repeated.
 */
export async function* resumeChat(url, streamId, lastEventId, { signal, headers = {}, onPosition } = {}) {
  const position = { streamId, lastEventId };
  stopOnAbort(url, position, signal, headers);
  yield* follow(url, position, { signal, headers, onPosition });
}

async function* follow(url, position, { signal, headers, onPosition }) {
  for (let attempt = 0; ; attempt++) {
    let response;
    try {
      const last = position.lastEventId ? { "Last-Event-ID": position.lastEventId } : {};
      response = await fetch(`${url}/${position.streamId}`, {
        headers: { Accept: "text/event-stream", ...headers, ...last },
        signal,
      });
    } catch (error) {
      if (error.name === "AbortError" || attempt >= RESUME_ATTEMPTS) throw error;
      await sleep(Math.min(500 * 2 ** attempt, 2000), signal); // offline: try again shortly
      continue;
    }
    if (!response.ok) throw await refused(response); // 404 expired, 410 text lost: ask again
    try {
      if (yield* eventsOf(response, position, onPosition)) return;
    } catch (error) {
      if (error.name === "AbortError" || error.name === "SyntaxError" || attempt >= RESUME_ATTEMPTS) throw error;
    }
    await sleep(Math.min(500 * 2 ** attempt, 2000), signal);
  }
}

/**
 * POST a chat and yield its events as objects: {content}, then {done, finish_reason, usage} or {error}.
 * Throws ChatError when the gateway refuses the request (with its error code) or the stream breaks off.
 * When the gateway keeps replies (X-Chatsse-Stream), a dropped connection is resumed where it stopped;
 * `onPosition({streamId, lastEventId})` reports where the reply is, for resuming after a reload.
 */
export async function* streamChat(url, body, { signal, headers = {}, onPosition } = {}) {
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "text/event-stream", ...headers },
    body: JSON.stringify(body),
    signal,
  });
  if (!response.ok) throw await refused(response);
  const position = { streamId: response.headers.get("X-Chatsse-Stream"), lastEventId: null };
  stopOnAbort(url, position, signal, headers);
  try {
    if (yield* eventsOf(response, position, onPosition)) return;
  } catch (error) {
    if (!position.streamId || error.name === "AbortError" || error.name === "SyntaxError") throw error;
  }
  if (!position.streamId) {
    throw new ChatError("stream_ended", "The connection closed before the reply was finished.");
  }
  yield* follow(url, position, { signal, headers, onPosition });
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
