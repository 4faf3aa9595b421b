"""Starting to serve: settings read and checked once, with one wording for every way chatsse starts
(`chatsse serve`, `uvicorn chatsse.app:factory --factory`, `chatsse.app:app`), so a gateway that cannot work says
why and exits 2 instead of serving errors."""

from __future__ import annotations

import dataclasses
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
        if settings.redis_url and not found:
            cluster, problem = _redis(settings)
            if problem:
                found.append(problem)
            elif settings.redis_cluster is None:
                settings = dataclasses.replace(settings, redis_cluster=cluster)
                # Workers build their apps from the environment: they take the answer instead of asking again.
                os.environ["CHATSSE_REDIS_CLUSTER"] = "true" if cluster else "false"
        for problem in found:
            print(f"chatsse cannot start: {problem}", file=sys.stderr)
        if found:
            raise SystemExit(2)
    return settings


def problems(settings: Settings) -> list[str]:
    """What stops these upstreams from working at all (no Entra credential)."""
    upstream = startup_problem(settings.upstreams)
    return [upstream] if upstream else []


def _redis(settings: Settings) -> tuple[bool, str | None]:
    """Whether CHATSSE_REDIS_URL is a cluster, or why it cannot be used."""
    from chatsse.redis import FAILURES, probe  # only with Redis

    assert settings.redis_url is not None
    try:
        return probe(settings.redis_url, settings.redis_ca_file), None
    except FAILURES as exc:
        return False, f"CHATSSE_REDIS_URL: Redis does not answer ({type(exc).__name__}); start it or fix the URL."
