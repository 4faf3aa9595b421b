// A client-side tool through the AI SDK's own Chat (what useChat wraps) against a live chatsse:
// `node tools.mjs <gateway> <message>`. The model asks for get_weather; onToolCall answers it with addToolResult;
// sendAutomaticallyWhen sends the result back; the model's text follows. Prints one JSON line: the assistant
// message's parts and every UI message chunk the transport read (each validated by the SDK's own schema).
import { AbstractChat, DefaultChatTransport, lastAssistantMessageIsCompleteWithToolCalls } from "ai";

const [base, text] = process.argv.slice(2);
const tools = [
  {
    type: "function",
    function: {
      name: "get_weather",
      description: "The weather in a city",
      parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
    },
  },
];

class NodeChat extends AbstractChat {
  constructor(options) {
    const state = {
      status: "ready",
      error: undefined,
      messages: [],
      pushMessage: (m) => { state.messages = [...state.messages, m]; },
      popMessage: () => { state.messages = state.messages.slice(0, -1); },
      replaceMessage: (i, m) => { state.messages = state.messages.map((old, j) => (j === i ? m : old)); },
      snapshot: (thing) => structuredClone(thing),
    };
    super({ ...options, state });
  }
}

const chunks = [];
class RecordingTransport extends DefaultChatTransport {
  processResponseStream(stream) {
    return super.processResponseStream(stream).pipeThrough(
      new TransformStream({ transform(chunk, controller) { chunks.push(chunk); controller.enqueue(chunk); } }),
    );
  }
}

const calls = [];
let chat;
let resolveDone;
const settled = new Promise((resolve) => { resolveDone = resolve; });
chat = new NodeChat({
  transport: new RecordingTransport({ api: `${base}/api/v1/chat/ui`, body: { tools } }),
  sendAutomaticallyWhen: lastAssistantMessageIsCompleteWithToolCalls,
  onToolCall: async ({ toolCall }) => {
    calls.push({ toolName: toolCall.toolName, toolCallId: toolCall.toolCallId, input: toolCall.input });
    // Not awaited, as the AI SDK's docs advise: awaiting addToolResult in onToolCall would deadlock.
    chat.addToolResult({ tool: toolCall.toolName, toolCallId: toolCall.toolCallId, output: { temp: 21, sky: "clear" } });
  },
  onFinish: ({ message }) => {
    if (message.parts.some((p) => p.type === "text")) resolveDone();
  },
  onError: (error) => { console.log(JSON.stringify({ error: String(error.message ?? error) })); process.exit(0); },
});

await chat.sendMessage({ text });
const timeout = new Promise((resolve) => setTimeout(() => resolve("timed out"), 20000));
const outcome = await Promise.race([settled.then(() => "settled"), timeout]);
const last = chat.messages.at(-1);
const chunkTypes = chunks.map((c) => c.type);
console.log(JSON.stringify({ outcome, calls, parts: last.parts, messages: chat.messages.length, chunks: chunkTypes }));
process.exit(0); // the safety-net timer must not keep Node alive
