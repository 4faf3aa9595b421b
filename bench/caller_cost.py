"""CPU per request of a caller's limits, in process: admit, the rate-limit headers, counting the reply's tokens and
charging them, for a caller with every limit set, with the counters in memory and on a real Redis (started here, on
127.0.0.1). 32 requests at a time, as SHORT runs them, so charges and admissions on Redis group as they do there.

    python bench/caller_cost.py
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import subprocess
import time

from chatsse.callers import Caller, CallerConfig
from chatsse.callers.ledger import Ledger, Spend, rate_headers
from chatsse.callers.memory import MemoryLedger
from chatsse.callers.redis import RedisLedger
from chatsse.callers.tokens import count_tokens
from chatsse.redis import connect

LIMITS = CallerConfig(
    name="anonymous",
    requests_per_minute=10**8,
    tokens_per_minute=10**11,
    token_quota=10**14,
    quota_period="month",
    max_streams=10**6,
    max_tokens=10**5,
)
CALLER = Caller("ip:127.0.0.1", "anonymous", LIMITS)
# A keyed caller with a budget in a team with its own budget and quota (#32): two counters charged per reply.
TEAM = Caller(
    "team:benchers",
    "benchers",
    CallerConfig(name="benchers", budget=10**15, budget_period="month", token_quota=10**14, quota_period="month"),
)
BUDGETED = Caller(
    "bench",
    "bench",
    dataclasses.replace(LIMITS, name="bench", budget=10**15, budget_period="month", team="benchers"),
    keyed=True,
    team=TEAM,
)
PROMPT = [{"role": "user", "content": "bench tokens=5 delay=0"}]
CLIENTS, REQUESTS = 32, 6400


async def measure(ledger: Ledger, caller: Caller = CALLER) -> float:
    async def client(count: int) -> None:
        for _ in range(count):
            reply_id = os.urandom(8).hex()
            rate_headers(await ledger.admit(caller, reply_id))
            tokens = count_tokens({"prompt_tokens": 4, "completion_tokens": 5}, PROMPT, 10)
            await ledger.charge(caller, reply_id, Spend(tokens.prompt, tokens.cached, tokens.completion, 60))

    await asyncio.gather(*(client(10) for _ in range(CLIENTS)))  # warm up
    started = time.process_time()
    await asyncio.gather(*(client(REQUESTS // CLIENTS) for _ in range(CLIENTS)))
    return (time.process_time() - started) / REQUESTS


def main() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        url = f"redis://127.0.0.1:{port}/0"
        memory = asyncio.run(measure(MemoryLedger()))
        on_redis = asyncio.run(measure(RedisLedger(connect(url, False), lambda: None)))
        team_memory = asyncio.run(measure(MemoryLedger(), BUDGETED))
        team_redis = asyncio.run(measure(RedisLedger(connect(url, False), lambda: None), BUDGETED))
    finally:
        server.kill()
    print(f"in memory: {memory * 1e6:.0f} us of CPU per request")
    print(f"on Redis:  {on_redis * 1e6:.0f} us of CPU per request (this process; Redis's own not counted)")
    print(f"a caller and its team, with budgets, in memory: {team_memory * 1e6:.0f} us of CPU per request")
    print(f"a caller and its team, with budgets, on Redis:  {team_redis * 1e6:.0f} us of CPU per request")


if __name__ == "__main__":
    main()
