"""`python -m chatsse.simulator`: run the Azure OpenAI simulator alone, for front-end work and other clients."""

from __future__ import annotations

import argparse
import asyncio

from chatsse.simulator import Simulator


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m chatsse.simulator",
        description="A fake Azure OpenAI chat-completions server (streaming). Point AZURE_OPENAI_ENDPOINT at it.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8081, help="port to bind (default 8081; 0 picks a free one)")
    parser.add_argument("--delay", type=float, default=0.03, help="seconds between tokens (default 0.03)")
    parser.add_argument("--api-key", default=None, help="require this api-key header (default: accept any)")
    parser.add_argument("--deployment", default=None, help="accept only this deployment name (default: any)")
    parser.add_argument("--always", default="", help="directives for every request, e.g. 'status=429 retry_after=5'")
    args = parser.parse_args(argv)

    async def serve() -> None:
        simulator = Simulator(api_key=args.api_key, deployment=args.deployment, delay=args.delay, always=args.always)
        await simulator.start(args.host, args.port)
        print(
            f"chatsse simulator: Azure OpenAI-compatible streaming at http://{args.host}:{simulator.port}", flush=True
        )
        print("Add [sim: ...] to a prompt to pick a failure; see chatsse/simulator/scenario.py.", flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
