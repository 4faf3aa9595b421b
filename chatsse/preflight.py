"""Starting to serve: settings read and checked once, with one wording for every way chatsse starts
(`chatsse serve`, `uvicorn chatsse.app:factory --factory`, `chatsse.app:app`), so a gateway that cannot work says
why and exits 2 instead of serving errors."""

from __future__ import annotations

import os
import sys

from chatsse.settings import ConfigError, Settings
from chatsse.upstreams import startup_problem

# Set by `chatsse serve` for its worker processes once it has made the checks itself: each worker builds its app
# from the same environment, and probing Entra ID and Redis again per worker would only slow the start.
CHECKED_MARK = "CHATSSE_PREFLIGHT_DONE"


def ready_settings() -> Settings:
    """Settings from the environment (and `.env`), checked; on any problem, a message on stderr and exit 2."""
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        if exc.missing:
            print("To try chatsse without an Azure account, run: chatsse serve --demo", file=sys.stderr)
        raise SystemExit(2) from None
    if os.environ.get(CHECKED_MARK) != "1":
        found = problems(settings)
        for problem in found:
            print(f"chatsse cannot start: {problem}", file=sys.stderr)
        if found:
            raise SystemExit(2)
    return settings


def problems(settings: Settings) -> list[str]:
    """What stops this configuration from working: no Entra credential, an unreachable Redis."""
    found = []
    upstream = startup_problem(settings.upstreams)
    if upstream:
        found.append(upstream)
    if settings.redis_url:
        import redis  # only with Redis

        client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=2)
        try:
            client.ping()
        except (redis.RedisError, OSError) as exc:
            found.append(f"CHATSSE_REDIS_URL: Redis does not answer ({type(exc).__name__}); start it or fix the URL.")
        finally:
            client.close()
    return found
