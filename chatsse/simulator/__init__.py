"""The built-in Azure OpenAI simulator, for `--demo`, tests and benchmarks.

server.py     Simulator: the server, its replies and what it recorded
http.py       the HTTP/1.1 side, on asyncio's Protocol, controlling every byte
scenario.py   `[sim: ...]` directives: failures, timing and reply shapes; Azure's error bodies
replies.py    what it says: text, tool calls, JSON for a schema, what it saw of images, a text per choice
frames.py     Azure's chunks as bytes: every choice, tool-call pieces, refusals, logprobs
responses.py  the Responses API: the same replies as Responses events, stored responses, background
safety.py     Azure AI Content Safety: text:shieldPrompt and text:analyze, with deterministic triggers
"""

from chatsse.simulator.server import Simulator

__all__ = ["Simulator"]
