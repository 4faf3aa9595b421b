"""What an upstream is (endpoint, API shape, auth, priority), and reading several from the CHATSSE_CONFIG TOML file."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

DEFAULT_API_VERSION = "2024-10-21"
APIS = ("azure", "azure-v1", "openai")
PROTOCOLS = ("chat", "responses")
# The first dated api-version with the Responses API (`{endpoint}/openai/responses?api-version=`): a preview.
RESPONSES_SINCE = "2025-03-01-preview"
DEFAULT_MODEL = "default"


class NeedsRestart(Exception):
    """A reloaded configuration that the running process cannot take without a restart."""


@dataclass(frozen=True, kw_only=True)
class UpstreamConfig:
    """One deployment or server the gateway may send a chat to; requests choose among them by `model` group."""

    name: str
    endpoint: str
    deployment: str  # the deployment name (azure, azure-v1) or the model id sent upstream (openai)
    model: str = DEFAULT_MODEL
    api: str = "azure"
    api_version: str = DEFAULT_API_VERSION
    api_key: str | None = field(default=None, repr=False)
    entra: bool = False  # Microsoft Entra ID tokens instead of a key
    priority: int = 0
    weight: float = 1.0
    timeout: float | None = None  # seconds of silence allowed; None: CHATSSE_UPSTREAM_TIMEOUT
    max_tokens: int | None = None  # the operator's cap on a reply's tokens
    reasoning: bool = False  # relay the model's reasoning text (reasoning_content), where the upstream sends it
    protocol: str = "chat"  # the API it speaks: chat completions, or the Responses API
    price: str | None = None  # the [[price]] row of its replies, where their `model` field is generic


def responses_problem(api: str, api_version: str) -> str | None:
    """Why an upstream of this api and api-version cannot speak the Responses API, or None."""
    if api != "azure":
        return None
    if api_version.endswith("-preview") and api_version[:10] >= RESPONSES_SINCE[:10]:
        return None
    return (
        f'api-version {api_version} has no Responses API: use api = "azure-v1", or an api_version of '
        f"{RESPONSES_SINCE} or a later preview"
    )


_KEYS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "name": (str, "a non-empty string"),
    "model": (str, "a non-empty string"),
    "api": (str, "one of " + ", ".join(APIS)),
    "endpoint": (str, "an http(s) URL"),
    "deployment": (str, "a non-empty string"),
    "api_version": (str, "a string such as 2024-10-21"),
    "api_key_env": (str, "the NAME of an environment variable holding the key"),
    "auth": (str, '"entra" (or leave it out to use api_key_env)'),
    "priority": (int, "a whole number (lower is tried first)"),
    "weight": ((int, float), "a number > 0"),
    "timeout": ((int, float), "a number of seconds > 0"),
    "max_tokens": (int, "a whole number > 0"),
    "reasoning": (bool, "true or false"),
    "protocol": (str, "one of " + ", ".join(PROTOCOLS)),
    "price": (str, "the model of a [[price]] row"),
}
_REQUIRED = ("name", "endpoint", "deployment")


def endpoint_problem(endpoint: str) -> str | None:
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "is not an http(s) URL (e.g. https://my-resource.openai.azure.com)"
    return None


def upstreams_from(
    document: Mapping[str, Any], path: str, env: Mapping[str, str], problems: list[str]
) -> tuple[UpstreamConfig, ...]:
    """The `[[upstream]]` tables of a parsed CHATSSE_CONFIG file; every problem is appended naming the file, the
    table and the key."""
    tables = document.get("upstream")
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        problems.append(f"{path}: needs at least one [[upstream]] table")
        return ()
    upstreams: list[UpstreamConfig] = []
    seen: set[str] = set()
    for index, table in enumerate(tables, start=1):
        where = f"{path}: [[upstream]] #{index}" + (
            f" ({table['name']!r})" if isinstance(table.get("name"), str) else ""
        )
        before = len(problems)
        upstream = _upstream(table, where, env, problems)
        if upstream is None or len(problems) > before:
            continue
        if upstream.name in seen:
            problems.append(f"{where}: name {upstream.name!r} is used by an earlier upstream; names must be unique")
            continue
        seen.add(upstream.name)
        upstreams.append(upstream)
    return tuple(upstreams)


def _upstream(table: dict[str, Any], where: str, env: Mapping[str, str], problems: list[str]) -> UpstreamConfig | None:
    for key in sorted(set(table) - set(_KEYS)):
        problems.append(f"{where}: unknown key {key!r} (known: {', '.join(_KEYS)})")
    for key in _REQUIRED:
        if key not in table:
            problems.append(f"{where}: {key} is missing: expected {_KEYS[key][1]}")
    for key, value in table.items():
        kinds, rule = _KEYS.get(key, (object, ""))
        wrong_bool = isinstance(value, bool) and kinds is not bool
        if not isinstance(value, kinds) or wrong_bool or (isinstance(value, str) and not value.strip()):
            problems.append(f"{where}: {key} = {value!r} is not valid: expected {rule}")
    if any(p.startswith(where) for p in problems):
        return None
    api = table.get("api", "azure")
    if api not in APIS:
        problems.append(f"{where}: api = {api!r} is not valid: expected one of {', '.join(APIS)}")
    endpoint = table["endpoint"].strip()
    problem = endpoint_problem(endpoint)
    if problem:
        problems.append(f"{where}: endpoint = {endpoint!r} {problem}")
    if "api_version" in table and api != "azure":
        problems.append(f'{where}: api_version applies only to api = "azure"')
    protocol = table.get("protocol", "chat")
    if protocol not in PROTOCOLS:
        problems.append(f"{where}: protocol = {protocol!r} is not valid: expected one of {', '.join(PROTOCOLS)}")
    elif protocol == "responses":
        problem = responses_problem(api, table.get("api_version", DEFAULT_API_VERSION).strip())
        if problem:
            problems.append(f'{where}: protocol = "responses": {problem}')
    for key in ("weight", "timeout", "max_tokens"):
        if key in table and table[key] <= 0:
            problems.append(f"{where}: {key} = {table[key]!r} is not valid: expected {_KEYS[key][1]}")
    entra = "auth" in table
    if entra and table["auth"] != "entra":
        problems.append(f'{where}: auth = {table["auth"]!r} is not valid: expected "entra"')
    api_key = None
    if "api_key_env" in table:
        variable = table["api_key_env"]
        if entra:
            problems.append(f'{where}: set api_key_env or auth = "entra", not both')
        elif not env.get(variable, "").strip():
            problems.append(f"{where}: api_key_env = {variable!r} names an environment variable that is not set")
        else:
            api_key = env[variable].strip()
    elif not entra and api != "openai":
        problems.append(f'{where}: needs api_key_env (the name of a variable holding the key) or auth = "entra"')
    return UpstreamConfig(
        name=table["name"].strip(),
        model=table.get("model", DEFAULT_MODEL).strip(),
        api=api,
        endpoint=endpoint,
        deployment=table["deployment"].strip(),
        api_version=table.get("api_version", DEFAULT_API_VERSION).strip(),
        api_key=api_key,
        entra=entra,
        priority=table.get("priority", 0),
        weight=float(table.get("weight", 1)),
        timeout=float(table["timeout"]) if "timeout" in table else None,
        max_tokens=table.get("max_tokens"),
        reasoning=table.get("reasoning", False),
        protocol=protocol,
        price=table.get("price"),
    )
