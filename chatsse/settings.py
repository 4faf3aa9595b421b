"""Settings: read once from the environment and `.env`, validated up front, frozen."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from dotenv import dotenv_values

from chatsse.callers.config import CallerTables
from chatsse.config_file import config_file
from chatsse.guards.config import GuardTables
from chatsse.prices import Prices
from chatsse.tracing.config import TracingConfig, tracing_config
from chatsse.upstreams.config import (
    DEFAULT_API_VERSION,
    PROTOCOLS,
    UpstreamConfig,
    endpoint_problem,
    responses_problem,
)

AUTH_MODES = ("key", "entra")


class ConfigError(Exception):
    """The configuration cannot start a server; the message lists every problem and how to fix it."""

    def __init__(self, problems: list[str], missing: list[str]) -> None:
        self.problems = problems
        self.missing = missing
        lines = ["chatsse cannot start: the configuration is incomplete or invalid."]
        lines += [f"  - {p}" for p in problems]
        lines.append("Set these in the environment or in a .env file (see .env.example for every setting).")
        super().__init__("\n".join(lines))


LOG_FORMATS = ("auto", "json", "text")
RATE_PERIODS = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}


def _rate(raw: str) -> tuple[int, float] | None:
    """`60/minute` -> (60, 60.0); also second, hour, day (a trailing s is fine)."""
    count, _, period = raw.partition("/")
    seconds = RATE_PERIODS.get(period.strip().lower().removesuffix("s"))
    if seconds is None:
        raise ValueError(raw)
    return int(count), seconds


def _redis_url(url: str) -> bool:
    return url.startswith(("redis://", "rediss://", "unix://"))


def _boolean(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def _origins(raw: str) -> tuple[str, ...]:
    return tuple(origin.strip() for origin in raw.split(",") if origin.strip())


def _env(default: Any, variable: str, cast: Callable[[str], Any], check: Any, rule: str, **kw: Any) -> Any:
    """A setting read from `variable` (empty or unset: `default`, written here once), cast and checked."""
    return field(default=default, metadata={"env": (variable, cast, check, rule)}, **kw)


def _any(value: object) -> bool:
    return True


def _http_url(value: str) -> bool:
    return value.startswith(("http://", "https://"))


SECRET_SETTINGS = ("CHATSSE_REDIS_URL", "CHATSSE_ALERT_WEBHOOK")  # never echoed, even when invalid
SECONDS = (float, lambda v: v >= 0, "a number of seconds >= 0")
POSITIVE_SECONDS = (float, lambda v: v > 0, "a number of seconds > 0")


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything the gateway needs; build it with `Settings.from_env()` or directly in tests."""

    upstreams: tuple[UpstreamConfig, ...]
    upstream_timeout: float = _env(60.0, "CHATSSE_UPSTREAM_TIMEOUT", *POSITIVE_SECONDS)
    cors_origins: tuple[str, ...] = _env(("*",), "CHATSSE_CORS_ORIGINS", _origins, bool, "comma-separated origins")
    max_body_bytes: int = _env(64 * 1024, "CHATSSE_MAX_BODY_BYTES", int, lambda v: v > 0, "a whole number of bytes > 0")
    # The routes that take images as data: URLs (/v1/chat/completions, /api/v1/chat/ui): a few photos' worth.
    max_media_body_bytes: int = _env(
        8 * 1024 * 1024, "CHATSSE_MAX_MEDIA_BODY_BYTES", int, lambda v: v > 0, "a whole number of bytes > 0"
    )
    max_retries: int = _env(2, "CHATSSE_MAX_RETRIES", int, lambda v: 0 <= v <= 10, "a whole number from 0 to 10")
    max_retry_wait: float = _env(10.0, "CHATSSE_MAX_RETRY_WAIT", *SECONDS)
    system_prompt: str | None = _env(None, "CHATSSE_SYSTEM_PROMPT", str, _any, "text")
    ping_seconds: float = _env(
        15.0, "CHATSSE_PING_SECONDS", float, lambda v: v >= 0, "a number of seconds >= 0 (0: off)"
    )
    web_ui: bool = _env(True, "CHATSSE_WEB_UI", _boolean, _any, "true or false")
    api_keys: tuple[str, ...] = field(default=(), repr=False)  # CHATSSE_API_KEYS and CHATSSE_API_KEYS_FILE
    admin_keys: tuple[str, ...] = field(default=(), repr=False)  # CHATSSE_ADMIN_KEYS: they read the spend report
    # Not in repr: a Slack or Teams webhook URL is a secret.
    alert_webhook: str | None = _env(
        None, "CHATSSE_ALERT_WEBHOOK", str, _http_url, "an http:// or https:// URL", repr=False
    )
    callers: CallerTables = CallerTables()  # the [[caller]] tables and [anonymous] of CHATSSE_CONFIG
    prices: Prices = Prices()  # the [[price]] tables of CHATSSE_CONFIG: what a reply costs
    guards: GuardTables = GuardTables()  # the [[guard]] tables of CHATSSE_CONFIG, and who gets them
    config_path: str | None = None  # CHATSSE_CONFIG: the file that reloads live (`reloaded`)
    config_check_seconds: float = _env(
        2.0, "CHATSSE_CONFIG_CHECK_SECONDS", float, lambda v: v >= 0, "a number of seconds >= 0 (0: only SIGHUP)"
    )
    tracing: TracingConfig | None = None  # from the standard OTEL_* settings; None: off
    rate_limit: tuple[int, float] | None = _env(None, "CHATSSE_RATE_LIMIT", _rate, lambda v: v[0] > 0, "like 60/minute")
    max_streams: int = _env(0, "CHATSSE_MAX_STREAMS", int, lambda v: v >= 0, "a whole number >= 0 (0: no cap)")
    drain_seconds: float = _env(25.0, "CHATSSE_DRAIN_SECONDS", *SECONDS)
    log_format: str = _env("auto", "CHATSSE_LOG_FORMAT", str.lower, lambda v: v in LOG_FORMATS, "auto, json or text")
    trusted_proxies: str = _env("", "CHATSSE_TRUSTED_PROXIES", str, _any, "addresses, or *")
    body_timeout: float = _env(10.0, "CHATSSE_BODY_TIMEOUT", *POSITIVE_SECONDS)
    max_header_bytes: int = _env(
        16 * 1024, "CHATSSE_MAX_HEADER_BYTES", int, lambda v: v >= 1024, "a whole number >= 1024"
    )
    header_timeout: float = _env(10.0, "CHATSSE_HEADER_TIMEOUT", *POSITIVE_SECONDS)
    max_connections: int = _env(0, "CHATSSE_MAX_CONNECTIONS", int, lambda v: v >= 0, "a whole number >= 0 (0: auto)")
    max_loop_lag_ms: float = _env(
        500.0, "CHATSSE_MAX_LOOP_LAG_MS", float, lambda v: v >= 0, "a number of milliseconds >= 0 (0: never shed)"
    )
    gc_max_growth_mb: float = _env(
        256.0, "CHATSSE_GC_MAX_GROWTH_MB", float, lambda v: v >= 0, "a number of megabytes >= 0 (0: no bound)"
    )
    max_cpu_percent: float = _env(
        80.0, "CHATSSE_MAX_CPU_PERCENT", float, lambda v: 0 <= v <= 100, "a percentage of one core, 0 to 100 (0: off)"
    )
    test_hooks: bool = _env(False, "CHATSSE_TEST_HOOKS", _boolean, _any, "true or false")
    resume_seconds: float = _env(
        0.0, "CHATSSE_RESUME_SECONDS", float, lambda v: v >= 0, "a number of seconds >= 0 (0: off)"
    )
    resume_max_bytes: int = _env(
        1024 * 1024, "CHATSSE_RESUME_MAX_BYTES", int, lambda v: v >= 1024, "a whole number of bytes >= 1024"
    )
    resume_key_seconds: int = _env(
        600, "CHATSSE_RESUME_KEY_SECONDS", int, lambda v: v >= 3, "a whole number of seconds >= 3"
    )
    resume_queue_bytes: int = _env(
        32 * 1024 * 1024, "CHATSSE_RESUME_QUEUE_BYTES", int, lambda v: v >= 1024, "a whole number of bytes >= 1024"
    )
    # Not in repr: the URL may hold a password.
    redis_url: str | None = _env(
        None, "CHATSSE_REDIS_URL", str, _redis_url, "a URL such as redis://localhost:6379/0", repr=False
    )
    redis_ca_file: str | None = _env(None, "CHATSSE_REDIS_CA_FILE", str, os.path.isfile, "the path of a PEM file")
    # A Redis Cluster or a single Redis; None: asked of Redis at start-up (INFO cluster).
    redis_cluster: bool | None = _env(None, "CHATSSE_REDIS_CLUSTER", _boolean, _any, "true or false (empty: detect)")

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
    protocol = env.get("AZURE_OPENAI_PROTOCOL", "").strip().lower() or "chat"
    api_version = env.get("AZURE_OPENAI_API_VERSION", "").strip()
    api = "azure"
    if protocol not in PROTOCOLS:
        problems.append(f"AZURE_OPENAI_PROTOCOL={protocol!r} is not valid: expected chat or responses")
    elif protocol == "responses":
        api = "azure" if api_version else "azure-v1"  # the v1 API has Responses; of dated versions, late previews
        problem = responses_problem(api, api_version)
        if problem:
            problems.append(f"AZURE_OPENAI_PROTOCOL=responses: AZURE_OPENAI_API_VERSION={problem}")
    upstream = UpstreamConfig(
        name="azure",
        endpoint=endpoint,
        deployment=deployment,
        api=api,
        api_version=api_version or DEFAULT_API_VERSION,
        api_key=key or None,
        entra=auth == "entra",
        protocol=protocol if protocol in PROTOCOLS else "chat",
    )
    return (upstream,)


def _config_file(
    env: Mapping[str, str], problems: list[str], missing: list[str]
) -> tuple[tuple[UpstreamConfig, ...], CallerTables, Prices, GuardTables]:
    """The upstreams (from CHATSSE_CONFIG, or the AZURE_OPENAI_* settings), the callers and the prices (from
    CHATSSE_CONFIG)."""
    path = env.get("CHATSSE_CONFIG", "").strip()
    if not path:
        return _azure_upstream(env, problems, missing), CallerTables(), Prices(), GuardTables()
    if env.get("AZURE_OPENAI_ENDPOINT", "").strip():
        problems.append("set CHATSSE_CONFIG (a file of upstreams) or AZURE_OPENAI_ENDPOINT (one upstream), not both")
    return config_file(path, env, problems)


def _parse(env: Mapping[str, str]) -> Settings:
    problems: list[str] = []
    missing: list[str] = []
    upstreams, callers, prices, guards = _config_file(env, problems, missing)
    values: dict[str, Any] = {"upstreams": upstreams, "callers": callers, "api_keys": _api_keys(env, problems)}
    values["config_path"] = env.get("CHATSSE_CONFIG", "").strip() or None
    values["admin_keys"] = tuple(k.strip() for k in env.get("CHATSSE_ADMIN_KEYS", "").split(",") if k.strip())
    values["prices"], values["guards"] = prices, guards
    values["tracing"] = tracing_config(env, problems)
    for setting in fields(Settings):
        if "env" not in setting.metadata:
            continue
        name, cast, check, rule = setting.metadata["env"]
        raw = env.get(name, "").strip()
        if not raw:
            continue  # the field's default
        try:
            value = cast(raw)
            valid = check(value)
        except ValueError:
            valid = False
        if valid:
            values[setting.name] = value
        else:
            shown = "" if name in SECRET_SETTINGS else f"={raw!r}"  # a URL with a password or a token in it
            problems.append(f"{name}{shown} is not valid: expected {rule}")
    if problems:
        raise ConfigError(problems, missing)
    return Settings(**values)


def reloaded(settings: Settings, env: Mapping[str, str]) -> Settings:
    """`settings` with what the CHATSSE_CONFIG file says now: its upstreams, callers, teams, keys, prices and guards,
    checked as at start-up (ConfigError with every problem). The environment's settings stay as they started."""
    assert settings.config_path is not None, "only a configuration file reloads"
    problems: list[str] = []
    upstreams, callers, prices, guards = _config_file({**env, "CHATSSE_CONFIG": settings.config_path}, problems, [])
    if problems:
        raise ConfigError(problems, [])
    return dataclasses.replace(settings, upstreams=upstreams, callers=callers, prices=prices, guards=guards)
