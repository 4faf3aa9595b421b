// What the Chromium test loads: the AI SDK's chat classes, bundled for the browser from this node_modules.
export { AbstractChat, DefaultChatTransport } from "ai";
