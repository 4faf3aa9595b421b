"""Settings from the environment and `.env`: defaults, precedence, and one clear message for every problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatsse.settings import ConfigError, Settings

REQUIRED = {
    "AZURE_OPENAI_ENDPOINT": "https://my-resource.openai.azure.com/",
    "AZURE_OPENAI_API_KEY": "sk-settings-SECRET",
    "AZURE_OPENAI_DEPLOYMENT_NAME": "gpt-4o",
}


def test_defaults() -> None:
    settings = Settings.from_env(REQUIRED, env_file=None)
    [upstream] = settings.upstreams
    assert (upstream.name, upstream.model, upstream.api, upstream.entra) == ("azure", "default", "azure", False)
    assert upstream.api_version == "2024-10-21" and upstream.api_key == "sk-settings-SECRET"
    assert settings.models == ["default"]
    assert settings.upstream_timeout == 60
    assert settings.cors_origins == ("*",)
    assert settings.max_body_bytes == 64 * 1024
    assert settings.max_retries == 2
    assert settings.system_prompt is None
    assert (upstream.endpoint, upstream.deployment) == ("https://my-resource.openai.azure.com/", "gpt-4o")


def test_every_setting_is_read() -> None:
    env = {
        **REQUIRED,
        "AZURE_OPENAI_API_VERSION": "2025-04-01-preview",
        "CHATSSE_UPSTREAM_TIMEOUT": "12.5",
        "CHATSSE_CORS_ORIGINS": "https://a.example, https://b.example",
        "CHATSSE_MAX_BODY_BYTES": "1000",
        "CHATSSE_MAX_RETRIES": "0",
        "CHATSSE_MAX_RETRY_WAIT": "3",
        "CHATSSE_SYSTEM_PROMPT": "Be brief.",
        "CHATSSE_PING_SECONDS": "5",
    }
    settings = Settings.from_env(env, env_file=None)
    assert settings.upstreams[0].api_version == "2025-04-01-preview"
    assert settings.upstream_timeout == 12.5
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert (settings.max_body_bytes, settings.max_retries, settings.max_retry_wait) == (1000, 0, 3)
    assert settings.system_prompt == "Be brief."
    assert settings.ping_seconds == 5


def test_missing_settings_are_all_named_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({}, env_file=None)
    message = str(caught.value)
    for name in REQUIRED:
        assert name in message
    assert ".env.example" in message
    assert caught.value.missing == list(REQUIRED)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AZURE_OPENAI_ENDPOINT", "my-resource.openai.azure.com"),
        ("AZURE_OPENAI_ENDPOINT", "ftp://x"),
        ("CHATSSE_UPSTREAM_TIMEOUT", "sixty"),
        ("CHATSSE_UPSTREAM_TIMEOUT", "-1"),
        ("CHATSSE_MAX_BODY_BYTES", "64k"),
        ("CHATSSE_MAX_RETRIES", "99"),
    ],
)
def test_invalid_values_are_named(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**REQUIRED, name: value}, env_file=None)
    assert f"{name}={value!r}" in str(caught.value)


def test_problems_are_reported_together() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"AZURE_OPENAI_ENDPOINT": "nope", "CHATSSE_UPSTREAM_TIMEOUT": "x"}, env_file=None)
    message = str(caught.value)
    assert "AZURE_OPENAI_API_KEY" in message and "AZURE_OPENAI_ENDPOINT='nope'" in message
    assert "CHATSSE_UPSTREAM_TIMEOUT='x'" in message


def test_env_file_is_read_and_the_real_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "AZURE_OPENAI_ENDPOINT=https://from-file.openai.azure.com\n"
        "AZURE_OPENAI_API_KEY=file-key\n"
        "AZURE_OPENAI_DEPLOYMENT_NAME=file-deployment\n"
        "CHATSSE_MAX_RETRIES=1\n"
    )
    settings = Settings.from_env({"AZURE_OPENAI_DEPLOYMENT_NAME": "env-deployment"}, env_file=str(env_file))
    assert settings.upstreams[0].endpoint == "https://from-file.openai.azure.com"
    assert settings.upstreams[0].deployment == "env-deployment"
    assert settings.max_retries == 1


def test_api_key_is_not_in_repr() -> None:
    settings = Settings.from_env(REQUIRED, env_file=None)
    assert "sk-settings-SECRET" not in repr(settings)
    assert "sk-settings-SECRET" not in str(settings)


def test_env_example_documents_every_setting() -> None:
    root = Path(__file__).parent.parent
    documented = (root / ".env.example").read_text()
    readme = (root / "README.md").read_text()
    source = (root / "chatsse" / "settings.py").read_text() + (root / "chatsse" / "tracing" / "config.py").read_text()
    import re

    names = set(re.findall(r'"((?:AZURE_OPENAI|CHATSSE|OTEL|APPLICATIONINSIGHTS)_[A-Z_]+)"', source))
    assert len(names) >= 11
    for name in names:
        assert name in documented, f"{name} missing from .env.example"
        assert f"`{name}`" in readme, f"{name} missing from the README settings table"


def test_hardening_settings_are_read(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text("# one key per line\nfile-key-1\n\nfile-key-2\n")
    env = {
        **REQUIRED,
        "CHATSSE_API_KEYS": "env-key-1, env-key-2",
        "CHATSSE_API_KEYS_FILE": str(keys_file),
        "CHATSSE_RATE_LIMIT": "30/hours",
        "CHATSSE_MAX_STREAMS": "100",
        "CHATSSE_DRAIN_SECONDS": "5",
        "CHATSSE_LOG_FORMAT": "JSON",
        "CHATSSE_TRUSTED_PROXIES": "10.0.0.1,10.0.0.2",
        "CHATSSE_BODY_TIMEOUT": "2.5",
        "CHATSSE_MAX_HEADER_BYTES": "8192",
        "CHATSSE_WEB_UI": "off",
    }
    settings = Settings.from_env(env, env_file=None)
    assert settings.api_keys == ("env-key-1", "env-key-2", "file-key-1", "file-key-2")
    assert "env-key-1" not in repr(settings) and "file-key-1" not in repr(settings)
    assert settings.rate_limit == (30, 3600.0)
    assert (settings.max_streams, settings.drain_seconds, settings.log_format) == (100, 5, "json")
    assert settings.trusted_proxies == "10.0.0.1,10.0.0.2"
    assert (settings.body_timeout, settings.max_header_bytes, settings.web_ui) == (2.5, 8192, False)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CHATSSE_RATE_LIMIT", "60"),
        ("CHATSSE_RATE_LIMIT", "60/fortnight"),
        ("CHATSSE_RATE_LIMIT", "0/minute"),
        ("CHATSSE_LOG_FORMAT", "xml"),
        ("CHATSSE_WEB_UI", "maybe"),
        ("CHATSSE_MAX_HEADER_BYTES", "10"),
    ],
)
def test_invalid_hardening_values_are_named(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**REQUIRED, name: value}, env_file=None)
    assert f"{name}={value!r}" in str(caught.value)


def test_unreadable_keys_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**REQUIRED, "CHATSSE_API_KEYS_FILE": str(tmp_path / "missing")}, env_file=None)
    assert "CHATSSE_API_KEYS_FILE" in str(caught.value)
