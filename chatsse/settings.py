"""Settings: read once from the environment and `.env`, validated up front, frozen."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from dotenv import dotenv_values

from chatsse.upstream_config import DEFAULT_API_VERSION, UpstreamConfig, endpoint_problem, load_config_file

AUTH_MODES = ("key", "entra")

T = TypeVar("T")


class ConfigError(Exception):
    """The configuration cannot start a server; the message lists every problem and how to fix it."""

    def __init__(self, problems: list[str], missing: list[str]) -> None:
        self.problems = problems
        self.missing = missing
        lines = ["chatsse cannot start: the configuration is incomplete or invalid."]
        lines += [f"  - {p}" for p in problems]
        lines.append("Set these in the environment or in a .env file (see .env.example for every setting).")
        super().__init__("\n".join(lines))


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything the gateway needs; build it with `Settings.from_env()` or directly in tests."""

    upstreams: tuple[UpstreamConfig, ...]
    upstream_timeout: float = 60.0
    cors_origins: tuple[str, ...] = ("*",)
    max_body_bytes: int = 64 * 1024
    max_retries: int = 2
    max_retry_wait: float = 10.0
    system_prompt: str | None = None
    ping_seconds: float = 15.0
    web_ui: bool = True
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    rate_limit: tuple[int, float] | None = None  # (requests, per seconds)
    max_streams: int = 0  # 0: no cap
    drain_seconds: float = 25.0
    log_format: str = "auto"
    trusted_proxies: str = ""
    body_timeout: float = 10.0
    max_header_bytes: int = 16 * 1024
    header_timeout: float = 10.0
    max_connections: int = 0  # 0: as many as the file limit allows
    resume_seconds: float = 0.0  # 0: replies end with their connection
    resume_max_bytes: int = 1024 * 1024
    redis_url: str | None = field(default=None, repr=False)  # the URL may hold a password

    @property
    def models(self) -> list[str]:
        """The model group names requests may choose, in the order the configuration first names them."""
        return list(dict.fromkeys(upstream.model for upstream in self.upstreams))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, env_file: str | None = ".env") -> Settings:
        """Read settings; the real environment wins over `env_file`. Raises ConfigError naming every problem."""
        values: dict[str, str] = {}
        if env_file and os.path.isfile(env_file):
            values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
        values.update(os.environ if environ is None else environ)
        return _parse(values)


LOG_FORMATS = ("auto", "json", "text")
RATE_PERIODS = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}


def _rate(raw: str) -> tuple[int, float] | None:
    """`60/minute` -> (60, 60.0); also second, hour, day (a trailing s is fine)."""
    count, _, period = raw.partition("/")
    seconds = RATE_PERIODS.get(period.strip().lower().removesuffix("s"))
    if seconds is None:
        raise ValueError(raw)
    return int(count), seconds


def _api_keys(env: Mapping[str, str], problems: list[str]) -> tuple[str, ...]:
    keys = [k.strip() for k in env.get("CHATSSE_API_KEYS", "").split(",")]
    path = env.get("CHATSSE_API_KEYS_FILE", "").strip()
    if path:
        try:
            with open(path, encoding="utf-8") as file:
                keys += [line.strip() for line in file if line.strip() and not line.startswith("#")]
        except OSError as exc:
            problems.append(f"CHATSSE_API_KEYS_FILE={path!r} cannot be read ({exc.strerror})")
    return tuple(k for k in keys if k)


def _redis_url(url: str | None) -> bool:
    return url is None or url.startswith(("redis://", "rediss://", "unix://"))


def _boolean(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def _azure_upstream(env: Mapping[str, str], problems: list[str], missing: list[str]) -> tuple[UpstreamConfig, ...]:
    """Today's three variables (or two, with AZURE_OPENAI_AUTH=entra): one upstream serving the default model."""
    endpoint = env.get("AZURE_OPENAI_ENDPOINT", "").strip()
    key = env.get("AZURE_OPENAI_API_KEY", "").strip()
    deployment = env.get("AZURE_OPENAI_DEPLOYMENT_NAME", "").strip()
    auth = env.get("AZURE_OPENAI_AUTH", "").strip().lower() or "key"
    missing += [name for name, value in (("AZURE_OPENAI_ENDPOINT", endpoint),) if not value]
    if auth not in AUTH_MODES:
        problems.append(f"AZURE_OPENAI_AUTH={auth!r} is not valid: expected key or entra")
    elif auth == "entra" and key:
        problems.append("set AZURE_OPENAI_API_KEY or AZURE_OPENAI_AUTH=entra, not both")
    elif auth == "key" and not key:
        missing.append("AZURE_OPENAI_API_KEY")
    if not deployment:
        missing.append("AZURE_OPENAI_DEPLOYMENT_NAME")
    if missing:
        named = ", ".join(
            "AZURE_OPENAI_API_KEY (or AZURE_OPENAI_AUTH=entra for keyless Microsoft Entra ID)"
            if name == "AZURE_OPENAI_API_KEY"
            else name
            for name in missing
        )
        problems.append(f"missing required setting(s): {named}; or name a file of upstreams in CHATSSE_CONFIG")
    if endpoint and endpoint_problem(endpoint):
        problems.append(
            f"AZURE_OPENAI_ENDPOINT={endpoint!r} is not a URL: expected e.g. https://my-resource.openai.azure.com"
        )
    upstream = UpstreamConfig(
        name="azure",
        endpoint=endpoint,
        deployment=deployment,
        api_version=env.get("AZURE_OPENAI_API_VERSION", "").strip() or DEFAULT_API_VERSION,
        api_key=key or None,
        entra=auth == "entra",
    )
    return (upstream,)


def _upstreams(env: Mapping[str, str], problems: list[str], missing: list[str]) -> tuple[UpstreamConfig, ...]:
    path = env.get("CHATSSE_CONFIG", "").strip()
    if not path:
        return _azure_upstream(env, problems, missing)
    if env.get("AZURE_OPENAI_ENDPOINT", "").strip():
        problems.append("set CHATSSE_CONFIG (a file of upstreams) or AZURE_OPENAI_ENDPOINT (one upstream), not both")
    return load_config_file(path, env, problems)


def _parse(env: Mapping[str, str]) -> Settings:
    problems: list[str] = []
    missing: list[str] = []
    upstreams = _upstreams(env, problems, missing)

    def read(name: str, cast: Callable[[str], T], default: T, check: Callable[[T], bool], rule: str) -> T:
        raw = env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = cast(raw)
        except ValueError:
            problems.append(f"{name}={raw!r} is not valid: expected {rule}")
            return default
        if not check(value):
            problems.append(f"{name}={raw!r} is not valid: expected {rule}")
            return default
        return value

    origins = tuple(o.strip() for o in env.get("CHATSSE_CORS_ORIGINS", "*").split(",") if o.strip())
    system_prompt = env.get("CHATSSE_SYSTEM_PROMPT", "").strip() or None

    settings = Settings(
        upstreams=upstreams,
        upstream_timeout=read("CHATSSE_UPSTREAM_TIMEOUT", float, 60.0, lambda v: v > 0, "a number of seconds > 0"),
        cors_origins=origins,
        max_body_bytes=read("CHATSSE_MAX_BODY_BYTES", int, 64 * 1024, lambda v: v > 0, "a whole number of bytes > 0"),
        max_retries=read("CHATSSE_MAX_RETRIES", int, 2, lambda v: 0 <= v <= 10, "a whole number from 0 to 10"),
        max_retry_wait=read("CHATSSE_MAX_RETRY_WAIT", float, 10.0, lambda v: v >= 0, "a number of seconds >= 0"),
        system_prompt=system_prompt,
        ping_seconds=read("CHATSSE_PING_SECONDS", float, 15.0, lambda v: v >= 0, "a number of seconds >= 0 (0: off)"),
        web_ui=read("CHATSSE_WEB_UI", _boolean, True, lambda v: True, "true or false"),
        api_keys=_api_keys(env, problems),
        rate_limit=read("CHATSSE_RATE_LIMIT", _rate, None, lambda v: v is None or v[0] > 0, "like 60/minute"),
        max_streams=read("CHATSSE_MAX_STREAMS", int, 0, lambda v: v >= 0, "a whole number >= 0 (0: no cap)"),
        drain_seconds=read("CHATSSE_DRAIN_SECONDS", float, 25.0, lambda v: v >= 0, "a number of seconds >= 0"),
        log_format=read("CHATSSE_LOG_FORMAT", str.lower, "auto", lambda v: v in LOG_FORMATS, "auto, json or text"),
        trusted_proxies=env.get("CHATSSE_TRUSTED_PROXIES", "").strip(),
        body_timeout=read("CHATSSE_BODY_TIMEOUT", float, 10.0, lambda v: v > 0, "a number of seconds > 0"),
        max_header_bytes=read("CHATSSE_MAX_HEADER_BYTES", int, 16384, lambda v: v >= 1024, "a whole number >= 1024"),
        header_timeout=read("CHATSSE_HEADER_TIMEOUT", float, 10.0, lambda v: v > 0, "a number of seconds > 0"),
        max_connections=read("CHATSSE_MAX_CONNECTIONS", int, 0, lambda v: v >= 0, "a whole number >= 0 (0: auto)"),
        resume_seconds=read(
            "CHATSSE_RESUME_SECONDS", float, 0.0, lambda v: v >= 0, "a number of seconds >= 0 (0: off)"
        ),
        resume_max_bytes=read(
            "CHATSSE_RESUME_MAX_BYTES", int, 1024 * 1024, lambda v: v >= 1024, "a whole number of bytes >= 1024"
        ),
        redis_url=read("CHATSSE_REDIS_URL", str, None, _redis_url, "a URL such as redis://localhost:6379/0"),
    )
    if problems:
        raise ConfigError(problems, missing)
    return settings
