"""The stack floor (#23): the least relay Starlette + sse-starlette + httpx (aiohttp transport) can be.

One route, no validation, logs, limits or middleware: what chatsse's own stack costs before chatsse adds anything.
Run by `bench/run.py --floors` as `uvicorn floor_stack:app`; reads the upstream from AZURE_OPENAI_* like chatsse.
"""

import os
from collections.abc import AsyncIterator

import httpx
import orjson
from httpx_aiohttp import AiohttpTransport
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

URL = (
    f"{os.environ['AZURE_OPENAI_ENDPOINT']}/openai/deployments/{os.environ['AZURE_OPENAI_DEPLOYMENT_NAME']}"
    "/chat/completions?api-version=2024-10-21"
)
HEADERS = {"api-key": os.environ["AZURE_OPENAI_API_KEY"]}
# No cap on upstream connections, as chatsse (httpx-aiohttp turns None into aiohttp's default cap of 100).
client = httpx.AsyncClient(transport=AiohttpTransport(limits=httpx.Limits(max_connections=1_000_000)), timeout=60)


async def stream(request: Request) -> Response:
    message = orjson.loads(await request.body())["message"]
    body = {"messages": [{"role": "user", "content": message}], "stream": True}

    async def events() -> AsyncIterator[str]:
        async with client.stream("POST", URL, json=body, headers=HEADERS) as reply:
            async for line in reply.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                choices = orjson.loads(line[6:])["choices"]
                content = choices[0]["delta"].get("content") if choices else None
                if content:
                    yield orjson.dumps({"content": content}).decode()
        yield '{"done":true}'

    return EventSourceResponse(events())


async def health(request: Request) -> Response:
    return Response("ok")


app = Starlette(routes=[Route("/api/v1/chat/stream", stream, methods=["POST"]), Route("/health", health)])
