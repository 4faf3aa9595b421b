"""The ASGI floor (#23): the same relay as the stack floor, as a bare ASGI callable on uvicorn with aiohttp.

No Starlette, sse-starlette or httpx: the limit of a Python relay on uvicorn. Run by `bench/run.py --floors` as
`uvicorn floor_asgi:app`; reads the upstream from AZURE_OPENAI_* like chatsse.
"""

import os
from typing import Any

import aiohttp
import orjson

URL = (
    f"{os.environ['AZURE_OPENAI_ENDPOINT']}/openai/deployments/{os.environ['AZURE_OPENAI_DEPLOYMENT_NAME']}"
    "/chat/completions?api-version=2024-10-21"
)
HEADERS = {"api-key": os.environ["AZURE_OPENAI_API_KEY"], "content-type": "application/json"}
START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
}
session: aiohttp.ClientSession | None = None


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global session
    if scope["type"] != "http":
        return
    if scope["path"] == "/health":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    body, more = b"", True
    while more:
        message = await receive()
        body, more = body + message.get("body", b""), message.get("more_body", False)
    request = {"messages": [{"role": "user", "content": orjson.loads(body)["message"]}], "stream": True}
    if session is None:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    async with session.post(URL, data=orjson.dumps(request), headers=HEADERS) as reply:
        await send(START)
        async for line in reply.content:
            if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                continue
            choices = orjson.loads(line[6:])["choices"]
            content = choices[0]["delta"].get("content") if choices else None
            if content:
                event = b"data: " + orjson.dumps({"content": content}) + b"\n\n"
                await send({"type": "http.response.body", "body": event, "more_body": True})
    await send({"type": "http.response.body", "body": b'data: {"done":true}\n\n'})
