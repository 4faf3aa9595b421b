// The page's Markdown renderer (chatsse/static/markdown.js, the committed bundle) in Node, on jsdom's DOM:
// `node render.mjs <bundle>` reads one JSON string per line and writes {"html": ...} per line.
import { createInterface } from "node:readline";
import { JSDOM } from "jsdom";

const { createRenderer } = await import(process.argv[2]);
const render = createRenderer(new JSDOM("").window);
for await (const line of createInterface({ input: process.stdin })) {
  console.log(JSON.stringify({ html: render(JSON.parse(line)) }));
}
