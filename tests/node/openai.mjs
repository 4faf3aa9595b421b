// The npm `openai` package against a live chatsse: `node openai.mjs <gateway> <key> <message>`.
import OpenAI from "openai";

const [base, key, text] = process.argv.slice(2);
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: key, maxRetries: 0 });
try {
  const stream = await client.chat.completions.create({
    model: "default",
    messages: [{ role: "user", content: text }],
    stream: true,
    stream_options: { include_usage: true },
  });
  let reply = "";
  let usage = null;
  for await (const chunk of stream) {
    reply += chunk.choices[0]?.delta?.content ?? "";
    usage = chunk.usage ?? usage;
  }
  const models = await client.models.list();
  console.log(JSON.stringify({ text: reply, usage, models: models.data.map((m) => m.id) }));
} catch (error) {
  console.log(JSON.stringify({ error: error.constructor.name, status: error.status }));
}
