// The AI SDK's own client code against a live chatsse: `node ui.mjs <gateway> <mode> <message> [key]`.
// Prints one JSON line with what the SDK assembled (resume also prints "cut" when it dropped the first stream,
// and "resumed" once reconnected).
import { DefaultChatTransport, readUIMessageStream } from "ai";

const [base, mode, text, key] = process.argv.slice(2);
const transport = new DefaultChatTransport({
  api: `${base}/api/v1/chat/ui`,
  headers: key ? { Authorization: `Bearer ${key}` } : {},
});
const chatId = `chat-${mode}-${Date.now()}`;
const messages = [{ id: "u1", role: "user", parts: [{ type: "text", text }] }];

async function assemble(stream) {
  let message = null;
  for await (const update of readUIMessageStream({ stream })) message = update;
  return message;
}
// Send, and read until the first text arrives (then the caller drops the stream).
async function sendAndReadFirstText(controller) {
  const stream = await transport.sendMessages({ chatId, messages, trigger: "submit-message", abortSignal: controller.signal });
  const reader = stream.getReader();
  for (;;) {
    const { value } = await reader.read();
    if (value?.type === "text-delta") return;
  }
}
const textOf = (message) => message.parts.filter((p) => p.type === "text").map((p) => p.text).join("");

try {
  if (mode === "reply") {
    const stream = await transport.sendMessages({ chatId, messages, trigger: "submit-message", abortSignal: undefined });
    const message = await assemble(stream);
    const reasoning = message.parts.filter((p) => p.type === "reasoning").map((p) => p.text).join("");
    console.log(JSON.stringify({ text: textOf(message), id: message.id, metadata: message.metadata, reasoning }));
  } else if (mode === "abort") {
    const controller = new AbortController();
    await sendAndReadFirstText(controller);
    controller.abort();
    console.log(JSON.stringify({ aborted: true }));
  } else if (mode === "resume") {
    const controller = new AbortController();
    await sendAndReadFirstText(controller);
    controller.abort(); // the page closed mid-reply; useChat({ resume: true }) reconnects on the next load
    console.log("cut");
    const resumed = await transport.reconnectToStream({ chatId });
    console.log("resumed"); // connected again, while the reply is still held at the upstream
    const message = await assemble(resumed);
    const after = await transport.reconnectToStream({ chatId }); // nothing active any more: 204, null
    console.log(JSON.stringify({ text: textOf(message), none_after: after === null }));
  } else if (mode === "error") {
    await transport.sendMessages({ chatId, messages, trigger: "submit-message", abortSignal: undefined });
    console.log(JSON.stringify({ error: null }));
  } else if (mode === "midstream") {
    // An error chunk after the reply started: useChat's onError sees it; here readUIMessageStream throws it.
    const stream = await transport.sendMessages({ chatId, messages, trigger: "submit-message", abortSignal: undefined });
    let text = "";
    try {
      for await (const update of readUIMessageStream({ stream, terminateOnError: true })) text = textOf(update);
    } catch (error) {
      console.log(JSON.stringify({ text, error: String(error.message ?? error) }));
      process.exit(0);
    }
    console.log(JSON.stringify({ text, error: null }));
  }
} catch (error) {
  console.log(JSON.stringify({ error: String(error.message ?? error) }));
}
