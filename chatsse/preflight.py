"""Checks made once before serving, so a gateway that cannot work says why and does not start."""

from __future__ import annotations

from chatsse.settings import Settings
from chatsse.upstreams import startup_problem


def problems(settings: Settings) -> list[str]:
    """What stops this configuration from working: no Entra credential, an unreachable Redis."""
    found = []
    upstream = startup_problem(settings)
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
