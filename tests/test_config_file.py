"""The CHATSSE_CONFIG file of upstreams: what it may hold, and one clear message naming the file, table and key."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from chatsse.settings import ConfigError, Settings
from tests.servers import CHATSSE, clean_env

GOOD = """
[[upstream]]
name = "ptu-eastus"
model = "gpt-4o"
endpoint = "https://east.openai.azure.com"
deployment = "gpt-4o-ptu"
api_version = "2025-04-01-preview"
api_key_env = "EAST_KEY"
priority = 0
max_tokens = 4096

[[upstream]]
name = "paygo-westeurope"
model = "gpt-4o"
api = "azure-v1"
endpoint = "https://west.openai.azure.com"
deployment = "gpt-4o"
auth = "entra"
priority = 1
weight = 2.5
timeout = 30

[[upstream]]
name = "local"
model = "llama"
api = "openai"
endpoint = "http://127.0.0.1:11434/v1"
deployment = "llama3.2"
"""


def load(tmp_path: Path, text: str, **env: str) -> Settings:
    path = tmp_path / "chatsse.toml"
    path.write_text(text)
    return Settings.from_env({"CHATSSE_CONFIG": str(path), **env}, env_file=None)


def test_a_complete_file_is_read(tmp_path: Path) -> None:
    settings = load(tmp_path, GOOD, EAST_KEY="sk-east-SECRET")
    east, west, local = settings.upstreams
    assert settings.models == ["gpt-4o", "llama"]
    assert (east.name, east.api, east.api_version, east.api_key, east.entra) == (
        "ptu-eastus",
        "azure",
        "2025-04-01-preview",
        "sk-east-SECRET",
        False,
    )
    assert (east.priority, east.weight, east.timeout, east.max_tokens) == (0, 1.0, None, 4096)
    assert (west.api, west.entra, west.api_key, west.priority, west.weight, west.timeout) == (
        "azure-v1",
        True,
        None,
        1,
        2.5,
        30.0,
    )
    assert (local.api, local.endpoint, local.deployment, local.api_key) == (
        "openai",
        "http://127.0.0.1:11434/v1",
        "llama3.2",
        None,
    )
    assert "sk-east-SECRET" not in repr(settings)


BAD = {
    "not_toml": ("[[upstream]\nname = 1", ["not valid TOML"]),
    "no_tables": ('title = "x"', ["needs at least one [[upstream]] table", "unknown top-level key(s) title"]),
    "unknown_api": (
        '[[upstream]]\nname="a"\napi="azur"\nendpoint="https://a.example"\ndeployment="d"\napi_key_env="K"',
        ["[[upstream]] #1 ('a'): api = 'azur' is not valid"],
    ),
    "duplicate_name": (
        '[[upstream]]\nname="a"\nendpoint="https://a.example"\ndeployment="d"\napi_key_env="K"\n'
        '[[upstream]]\nname="a"\nendpoint="https://b.example"\ndeployment="d"\napi_key_env="K"',
        ["[[upstream]] #2 ('a'): name 'a' is used by an earlier upstream"],
    ),
    "missing_endpoint": (
        '[[upstream]]\nname="a"\ndeployment="d"\napi_key_env="K"',
        ["[[upstream]] #1 ('a'): endpoint is missing"],
    ),
    "bad_endpoint": (
        '[[upstream]]\nname="a"\nendpoint="a.example"\ndeployment="d"\napi_key_env="K"',
        ["[[upstream]] #1 ('a'): endpoint = 'a.example' is not an http(s) URL"],
    ),
    "unset_key_variable": (
        '[[upstream]]\nname="a"\nendpoint="https://a.example"\ndeployment="d"\napi_key_env="NOT_SET_ANYWHERE"',
        ["[[upstream]] #1 ('a'): api_key_env = 'NOT_SET_ANYWHERE' names an environment variable that is not set"],
    ),
    "key_and_entra": (
        '[[upstream]]\nname="a"\nendpoint="https://a.example"\ndeployment="d"\napi_key_env="K"\nauth="entra"',
        ["[[upstream]] #1 ('a'): set api_key_env or auth = \"entra\", not both"],
    ),
    "no_auth_for_azure": (
        '[[upstream]]\nname="a"\nendpoint="https://a.example"\ndeployment="d"',
        ["[[upstream]] #1 ('a'): needs api_key_env"],
    ),
    "wrong_types": (
        '[[upstream]]\nname="a"\nendpoint="https://a.example"\ndeployment="d"\napi_key_env="K"\npriority="high"\n'
        "weight=0\nmax_tokens=true",
        ["priority = 'high' is not valid", "max_tokens = True is not valid"],
    ),
    "unknown_key": (
        '[[upstream]]\nname="a"\nendpoint="https://a.example"\ndeployment="d"\napi_key_env="K"\napi_key="sk-x"',
        ["[[upstream]] #1 ('a'): unknown key 'api_key'"],
    ),
    "api_version_on_v1": (
        '[[upstream]]\nname="a"\napi="azure-v1"\nendpoint="https://a.example"\ndeployment="d"\napi_key_env="K"\n'
        'api_version="2024-10-21"',
        ['api_version applies only to api = "azure"'],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_file_names_the_file_the_table_and_the_key(tmp_path: Path, case: str) -> None:
    text, expected = BAD[case]
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text, K="sk-k")
    message = str(caught.value)
    assert str(tmp_path / "chatsse.toml") in message
    for fragment in expected:
        assert fragment in message, message


def test_the_file_and_the_single_upstream_variables_are_not_mixed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, GOOD, EAST_KEY="k", AZURE_OPENAI_ENDPOINT="https://x.openai.azure.com")
    assert "not both" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"CHATSSE_CONFIG": str(tmp_path / "absent.toml")}, env_file=None)
    assert "absent.toml" in str(caught.value) and "cannot be read" in str(caught.value)


def test_chatsse_serve_refuses_a_bad_file_without_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "upstreams.toml").write_text(BAD["unknown_api"][0])
    env = clean_env()
    env.update(CHATSSE_CONFIG="upstreams.toml", K="sk-k")
    result = subprocess.run([CHATSSE, "serve"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "upstreams.toml: [[upstream]] #1 ('a'): api = 'azur' is not valid" in result.stderr
    assert "Traceback" not in result.stderr
