// The AI SDK's OpenAI provider, whose `openai(model)` speaks the Responses API, against a live chatsse:
// `node responses.mjs <gateway> <message>`. streamText with a tool the SDK runs itself, then a second step with its
// result. Prints one JSON line: the text, the tool calls and results, the steps' finish reasons and usage.
import { createOpenAI } from "@ai-sdk/openai";
import { stepCountIs, streamText, tool } from "ai";
import { z } from "zod";

const [base, text] = process.argv.slice(2);
const openai = createOpenAI({ baseURL: `${base}/v1`, apiKey: "unused" });
const asked = [];
try {
  const result = streamText({
    model: openai("default"),
    prompt: text,
    maxRetries: 0,
    stopWhen: stepCountIs(3),
    tools: {
      get_weather: tool({
        description: "The weather in a city",
        inputSchema: z.object({ city: z.string() }),
        execute: async ({ city }) => {
          asked.push(city);
          return `sunny in ${city}`;
        },
      }),
    },
  });
  let streamed = "";
  for await (const delta of result.textStream) streamed += delta;
  const steps = await result.steps;
  console.log(
    JSON.stringify({
      text: streamed,
      asked,
      finishes: steps.map((step) => step.finishReason),
      usage: await result.totalUsage,
      responseIds: steps.map((step) => step.response.id),
    }),
  );
} catch (error) {
  console.log(JSON.stringify({ error: String(error) }));
}
