"""Budgets in money (#32): a caller's and a team's spend per UTC period, refused with 403 `budget_exceeded` once
spent, shared by every process on a real Redis; alerts at fractions of a budget, sent once to a local webhook; the
spend report for admins (JSON, CSV, `chatsse usage`); what start-up refuses; the overdraw bound; period edges."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatsse.callers import Caller, CallerConfig, CallerTables
from chatsse.callers.ledger import Ledger, Spend, usage_body
from chatsse.callers.memory import MemoryLedger
from chatsse.callers.periods import days_of
from chatsse.callers.redis import RedisLedger
from chatsse.callers.report import as_csv, spend_report
from chatsse.prices import builtin_date, builtin_prices
from chatsse.redis import connect
from chatsse.settings import ConfigError, Settings
from chatsse.simulator import Simulator
from tests.conftest import GatewayFactory
from tests.helpers import STREAM, metric
from tests.redis_server import RedisServer
from tests.servers import API_KEY, CHATSSE, DEPLOYMENT, chatsse_serve, free_port, wait_until

# gpt-4o's row (the simulator's replies name gpt-4o-2024-11-20): a reply of 5 prompt and 5 completion tokens costs
# 5 x 2.5 + 5 x 10 = 62.5 micro-units, 63 rounded once. A budget of 150 micro-units admits three such replies (63,
# 126 and 189 spent before each refusal check: 0, 63, 126 are under it) and refuses the fourth.
PRICE = '[[price]]\nmodel = "gpt-4o"\ninput = 2.5\ncached_input = 1.25\noutput = 10\n\n'
REPLY_COST = 63
BUDGET = "0.00015"


def upstream(url: str, price: str | None = "gpt-4o") -> str:
    """An upstream whose deployment is named for no model: it names its price row (a budget needs one)."""
    named = f'price = "{price}"\n' if price else ""
    return (
        f'[[upstream]]\nname = "sim"\nendpoint = "{url}"\ndeployment = "{DEPLOYMENT}"\napi_key_env = "SIM_KEY"\n'
        f"{named}\n"
    )


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def post(url: str, key: str, words: int = 5) -> httpx.Response:
    text = " ".join(f"w{i}" for i in range(words))  # `words` prompt tokens and `words` completion tokens
    return httpx.post(url + STREAM, json={"message": f"echo:{text}"}, headers=auth(key), timeout=30)


def settings_of(tmp_path: Path, text: str, **env: str) -> Settings:
    path = tmp_path / "chatsse.toml"
    path.write_text(text)
    return Settings.from_env({"CHATSSE_CONFIG": str(path), "SIM_KEY": API_KEY, **env}, env_file=None)


# --- one process --------------------------------------------------------------------------------------------------


def test_a_spent_budget_is_refused_with_403_and_retry_after_through_the_openai_sdk(
    tmp_path: Path, simulator: Simulator, make_gateway: GatewayFactory
) -> None:
    tables = settings_of(
        tmp_path,
        "quotas_in_memory = true\n"
        + upstream(simulator.url)
        + PRICE
        + f'[[caller]]\nname = "app"\nkey_env = "APP_KEY"\nbudget = {BUDGET}\nbudget_period = "day"\n',
        APP_KEY="app-key",
    )
    gateway = make_gateway(callers=tables.callers, prices=tables.prices)
    assert [post(gateway.url, "app-key").status_code for _ in range(3)] == [200, 200, 200]
    sdk = openai.OpenAI(base_url=gateway.url + "/v1", api_key="app-key", max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        sdk.chat.completions.create(model="default", messages=[{"role": "user", "content": "echo:over"}])
    assert refused.value.code == "budget_exceeded" and "budget for this day (0.00015)" in refused.value.message
    until_midnight = 86400 - time.time() % 86400
    assert abs(int(refused.value.response.headers["retry-after"]) - until_midnight) <= 2
    assert len(simulator.requests) == 3  # refused before any upstream call

    usage = httpx.get(gateway.url + "/api/v1/usage", headers=auth("app-key")).json()
    tomorrow = datetime.fromtimestamp(time.time() + until_midnight, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert usage["budget"] == {
        "limit": 0.00015,
        "spent": 3 * REPLY_COST / 1e6,
        "remaining": 0.0,
        "period": "day",
        "resets_at": tomorrow,
        "currency": "USD",
    }
    assert usage["spend"] == {"period": "month", "requests": 3, "cost": 3 * REPLY_COST / 1e6, "currency": "USD"}
    scrape = httpx.get(gateway.url + "/metrics", headers=auth("app-key")).text
    assert 'chatsse_refusals_total{caller="app",reason="budget_exceeded"} 1.0' in scrape
    sdk.close()  # its pooled connection, not left to the collector (ResourceWarning)


@pytest.mark.parametrize(
    ("tables", "expected"),
    [
        (
            '[[caller]]\nname = "a"\nkey_env = "K"\nbudget = 5\nbudget_period = "month"\n',
            "[[caller]] 'a': budget is set, but its upstreams sim have no [[price]] row",
        ),
        (
            PRICE + '[[caller]]\nname = "a"\nkey_env = "K"\n\n[[team]]\nname = "t"\nmembers = ["a", "ghost"]\n',
            "[[team]] #1 ('t'): members names 'ghost', which is no [[caller]]'s name",
        ),
        (PRICE + '[[caller]]\nname = "a"\nkey_env = "K"\nbudget = -1\nbudget_period = "day"\n', "budget = -1"),
        (PRICE + '[[caller]]\nname = "a"\nkey_env = "K"\nbudget = 5\n', "budget needs budget_period"),
        (
            PRICE + '[[caller]]\nname = "a"\nkey_env = "K"\nalert_at = [0.5]\ntoken_quota = 9\nquota_period = "day"\n',
            "alert_at without budget",
        ),
        (
            PRICE + '[[caller]]\nname = "a"\nkey_env = "K"\nbudget = 1\nbudget_period = "day"\nalert_at = [1.5]\n',
            "alert_at = [1.5] is not valid",
        ),
        (
            PRICE + '[[caller]]\nname = "a"\nkey_env = "K"\n\n[[team]]\nname = "t"\nmembers = ["a"]\n\n'
            '[[team]]\nname = "u"\nmembers = ["a"]\n',
            "'a' is a member of team 't' already",
        ),
        (
            PRICE + '[[caller]]\nname = "a"\nkey_env = "K"\n\n[[team]]\nname = "t"\nmembers = ["a"]\nbudget = 2\n'
            'budget_period = "week"\n',
            "budget is set for team t but CHATSSE_REDIS_URL is not",
        ),
        (
            '[[price]]\nmodel = "gpt-4o"\ninput = 1\noutput = 1\ncurrency = "EUR"\n\n'
            '[[price]]\nmodel = "gpt-4o-mini"\ninput = 1\noutput = 1\n',
            "EUR, USD: one currency per file",
        ),
        ('prices = "cheap"\n' + PRICE, "prices = 'cheap' is not valid"),
        (PRICE + '[[caller]]\nname = "team:x"\nkey_env = "K"\n', "starts with team:"),
    ],
    ids=[
        "budget_without_price",
        "unknown_member",
        "negative_budget",
        "no_period",
        "alert_without_budget",
        "alert_over_one",
        "two_teams",
        "team_budget_in_memory",
        "two_currencies",
        "prices_not_builtin",
        "reserved_name",
    ],
)
def test_start_up_refuses_a_bad_budget_naming_the_file_table_and_key(
    tmp_path: Path, tables: str, expected: str
) -> None:
    top = "" if "CHATSSE_REDIS_URL" in expected else "quotas_in_memory = true\n"
    if tables.startswith("prices"):  # a top-level key: before any table
        line, tables = tables.split("\n", 1)
        top += line + "\n"
    named = None if "have no [[price]] row" in expected else "gpt-4o"
    with pytest.raises(ConfigError) as refused:
        settings_of(tmp_path, top + upstream("http://127.0.0.1:9", named) + tables, K="k")
    assert expected in str(refused.value) and str(tmp_path / "chatsse.toml") in str(refused.value)


def test_a_bad_webhook_url_is_refused_without_echoing_its_token() -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"CHATSSE_ALERT_WEBHOOK": "hooks.slack.com/services/T0/B0/s3cr3t-t0ken"}, env_file=None)
    assert "CHATSSE_ALERT_WEBHOOK is not valid" in str(refused.value) and "s3cr3t" not in str(refused.value)


def test_the_builtin_prices_are_dated_and_the_operators_rows_override_them(tmp_path: Path) -> None:
    builtin = builtin_prices()
    assert builtin_date() == "2026-12-06" and builtin.currency == "USD"
    mini = builtin.find("gpt-4o-mini-2024-07-18")
    assert mini is not None and (mini.input, mini.cached_input, mini.output) == (150_000, 75_000, 600_000)
    own = settings_of(
        tmp_path,
        'prices = "builtin"\nquotas_in_memory = true\n'
        + upstream("http://127.0.0.1:9")
        + '[[price]]\nmodel = "gpt-4o"\ninput = 1\noutput = 4\n\n'
        '[[caller]]\nname = "a"\nkey_env = "K"\nbudget = 10\nbudget_period = "month"\n',
        K="k",
    ).prices
    assert own.find("gpt-4o") is not None and own.find("gpt-4o").output == 4_000_000  # type: ignore[union-attr]
    assert own.find("gpt-4.1-2025-04-14") == builtin.find("gpt-4.1")


# --- the clock's periods, set rather than waited for -----------------------------------------------------------


class Clock:
    def __init__(self, moment: str) -> None:
        self.now = datetime.fromisoformat(moment).timestamp()

    def __call__(self) -> float:
        return self.now


def test_budgets_and_the_report_turn_over_at_the_period_edge() -> None:
    clock = Clock("2026-11-30T23:59:58+00:00")  # a Monday: its week goes on into December
    team = Caller("team:core", "core", CallerConfig(name="core", budget=100, budget_period="month"))
    config = CallerConfig(name="a", budget=1000, budget_period="week", team="core")
    caller = Caller("a", "a", config, keyed=True, team=team)
    ledger = MemoryLedger(clock=clock)
    assert team.config is not None
    tables = CallerTables(callers=(config,), teams=(team.config,))

    async def run() -> None:
        assert (await ledger.admit(caller, "r1")).admitted
        await ledger.charge(caller, "r1", Spend(prompt=10, completion=5, cost=120))
        refused = await ledger.admit(caller, "r2")
        assert not refused.admitted and refused.team is not None and not refused.team.admitted
        assert refused.budget is not None and refused.budget.remaining == 880  # its own week still has room
        await ledger.refused(caller, "budget_exceeded")
        body = usage_body(caller, await ledger.standing(caller), clock(), "USD")
        assert body["team"]["budget"]["resets_at"] == "2026-12-01T00:00:00Z"
        assert body["budget"]["resets_at"] == "2026-12-07T00:00:00Z" and body["budget"]["spent"] == 0.00012

        november = await spend_report(ledger, tables, "month", clock(), "USD")
        [row_a, row_team] = november["rows"]
        assert (row_a["requests"], row_a["cost"], row_a["refusals"]) == (1, 0.00012, {"budget_exceeded": 1})
        assert row_team["tokens"] == {"prompt": 10, "cached": 0, "completion": 5} and row_team["cost"] == 0.00012

        clock.now += 4  # 2026-12-01T00:00:02: a new month for the team, and (it is a Tuesday) the same week
        standing = await ledger.admit(caller, "r3")
        assert standing.admitted and standing.team is not None and standing.team.budget is not None
        assert standing.team.budget.remaining == 100
        assert standing.budget is not None and standing.budget.remaining == 880
        december = await spend_report(ledger, tables, "month", clock(), "USD")
        assert all(row["requests"] == 0 and row["cost"] == 0 for row in december["rows"])
        week = await spend_report(ledger, tables, "week", clock(), "USD")  # Monday 30 November and today
        assert week["from"] == "2026-11-30T00:00:00Z" and week["rows"][0]["requests"] == 1

    asyncio.run(run())
    assert days_of("week", Clock("2026-12-01T00:00:02+00:00")()) == [
        Clock("2026-11-30T00:00:00+00:00")(),
        Clock("2026-12-01T00:00:00+00:00")(),
    ]


OPS = st.lists(
    st.tuples(st.sampled_from(["open", "end"]), st.integers(0, 1), st.integers(0, 3), st.integers(0, 60)),
    max_size=60,
)


async def overdraw(ledger: Ledger, ops: list[tuple[str, int, int, int]]) -> None:
    """Replies open and end in any order, two callers in a team, each caller's steps in a task of its own (on Redis
    their admissions and charges share group commits); each reply costs at most 60. At the last admission the
    spend was under the budget, and only replies open then were charged after it: no one passes its budget by more
    than one reply per stream it had open."""
    team = Caller("team:t", "t", CallerConfig(name="t", budget=100, budget_period="month"))
    members = [
        Caller(name, name, CallerConfig(name=name, budget=150, budget_period="day", team="t"), True, team)
        for name in ("a", "b")
    ]
    open_replies: dict[str, Caller] = {}
    most_open = {"a": 0, "b": 0, "t": 0}
    spent = {"a": 0, "b": 0, "t": 0}

    charged = {"a": 0, "b": 0, "t": 0}  # the charges made (their calls returned): the ledger knows them
    budgets = {"a": 150, "b": 150, "t": 100}

    async def steps(caller: Caller) -> None:
        for n, (op, who, pick, cost) in enumerate(ops):
            if members[who] is not caller:
                continue
            mine = sorted(r for r, c in open_replies.items() if c is caller)
            if op == "open" or not mine:
                known = dict(charged)
                if (await ledger.admit(caller, f"{caller.label}{n}")).admitted:
                    # never admitted once its own or its team's spend was known to have reached the budget
                    assert known[caller.label] < budgets[caller.label] and known["t"] < budgets["t"], known
                    open_replies[f"{caller.label}{n}"] = caller
                    for name in (caller.label, "t"):
                        now_open = sum(1 for c in open_replies.values() if name in (c.label, "t"))
                        most_open[name] = max(most_open[name], now_open)
                continue
            reply_id = mine[pick % len(mine)]
            spent[caller.label] += cost
            spent["t"] += cost
            await ledger.charge(caller, reply_id, Spend(prompt=1, cost=cost))
            charged[caller.label] += cost
            charged["t"] += cost
            del open_replies[reply_id]  # open until its charge is made: until then the ledger cannot know it

    await asyncio.gather(*(steps(member) for member in members))
    assert spent["a"] < 150 + max(1, most_open["a"]) * 60
    assert spent["b"] < 150 + max(1, most_open["b"]) * 60
    assert spent["t"] < 100 + max(1, most_open["t"]) * 60
    for member in members:  # and the ledger agrees with what was charged
        standing = await ledger.standing(member)
        assert standing.budget is not None and standing.team is not None and standing.team.budget is not None
        assert standing.budget.limit - standing.budget.remaining == spent[member.label]
        assert standing.team.budget.limit - standing.team.budget.remaining == spent["t"]


@settings(max_examples=300, deadline=None)
@given(OPS)
def test_no_caller_or_team_overdraws_by_more_than_one_reply_per_open_stream(
    ops: list[tuple[str, int, int, int]],
) -> None:
    asyncio.run(overdraw(MemoryLedger(), ops))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(OPS)
def test_no_caller_or_team_overdraws_on_redis_either(
    redis_server: RedisServer, ops: list[tuple[str, int, int, int]]
) -> None:
    async def run() -> None:
        client = connect(redis_server.url, False)
        try:
            await client.flushdb()
            await overdraw(RedisLedger(client, lambda: None), ops)
        finally:
            await client.aclose()

    asyncio.run(run())


# --- two processes on a real Redis ------------------------------------------------------------------------------


class Webhook:
    """A local receiver of alert POSTs; the first `failures` answers are 503 (the alert is retried)."""

    def __init__(self, failures: int = 0) -> None:
        self.received: list[dict[str, Any]] = []
        self.failures = failures
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                if hook.failures > 0:
                    hook.failures -= 1
                    self.send_response(503)
                else:
                    hook.received.append(body)
                    self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/budget"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@contextmanager
def two_gateways(tmp_path: Path, text: str, redis_server: RedisServer, **env: str) -> Iterator[tuple[str, str]]:
    path = tmp_path / "chatsse.toml"
    path.write_text(text)
    environment = {
        "CHATSSE_CONFIG": str(path),
        "SIM_KEY": API_KEY,
        "CHATSSE_REDIS_URL": redis_server.url,
        "CHATSSE_PING_SECONDS": "0",
        "A_KEY": "key-of-a",
        "B_KEY": "key-of-b",
        **env,
    }
    with ExitStack() as stack:
        first = stack.enter_context(chatsse_serve(tmp_path, None, env=environment))
        second = stack.enter_context(chatsse_serve(tmp_path, None, env=environment))
        yield first.url, second.url


TEAM = (
    '[[caller]]\nname = "a"\nkey_env = "A_KEY"\n\n[[caller]]\nname = "b"\nkey_env = "B_KEY"\n\n'
    '[[caller]]\nname = "solo"\nkey_env = "SOLO_KEY"\nadmin = true\n\n'
    f'[[team]]\nname = "core"\nmembers = ["a", "b"]\nbudget = {BUDGET}\nbudget_period = "month"\n'
    "alert_at = [0.5, 0.8, 1.0]\n"
)


def test_a_team_budget_is_shared_by_two_processes_and_alerts_once_per_threshold(
    tmp_path: Path, simulator: Simulator, redis_server: RedisServer
) -> None:
    hook = Webhook(failures=1)  # the first POST fails: retried, not lost, and not sent twice
    env = {"CHATSSE_ALERT_WEBHOOK": hook.url, "CHATSSE_ADMIN_KEYS": "admin-key-1", "SOLO_KEY": "solo-key"}
    with two_gateways(tmp_path, upstream(simulator.url) + PRICE + TEAM, redis_server, **env) as (first, second):
        answers = [post(first, "key-of-a"), post(second, "key-of-b"), post(second, "key-of-a"), post(first, "key-of-b")]
        assert [a.status_code for a in answers] == [200, 200, 200, 403]
        refusal = answers[3].json()["error"]
        assert refusal["code"] == "budget_exceeded" and "team (core)" in refusal["message"]
        assert len(simulator.requests) == 3

        usage = httpx.get(second + "/api/v1/usage", headers=auth("key-of-b")).json()
        assert usage["budget"] is None and usage["team"]["name"] == "core" and usage["spend"]["requests"] == 1
        assert usage["team"]["budget"]["spent"] == 3 * REPLY_COST / 1e6 and usage["team"]["budget"]["remaining"] == 0

        # 63 of 150 is 42%; 126 crosses 50% and 80%; 189 crosses 100%: three alerts in all, whichever instance.
        assert wait_until(lambda: len(hook.received) >= 3, timeout=20), hook.received
        time.sleep(0.5)
        assert sorted(alert["threshold"] for alert in hook.received) == [0.5, 0.8, 1.0]
        last = max(hook.received, key=lambda alert: alert["threshold"])
        assert last["team"] == "core" and last["currency"] == "USD" and last["period"] == "month"
        assert (last["spent"], last["budget"]) == (3 * REPLY_COST / 1e6, 0.00015)
        assert last["text"].startswith("chatsse: team core has spent 0.00 USD of its 0.00015 USD monthly budget")
        scrapes = [httpx.get(url + "/metrics", headers=auth("solo-key")).text for url in (first, second)]
        sent = sum(metric(text, 'chatsse_alerts_total{result="sent"}') for text in scrapes if 'result="sent"' in text)
        assert sent == 3

        # The report, for admins: an admin key, or a caller with admin = true.
        report = httpx.get(first + "/api/v1/admin/usage?period=month", headers=auth("admin-key-1")).json()
        rows = {(row["kind"], row["name"]): row for row in report["rows"]}
        assert rows["caller", "a"]["requests"] == 2 and rows["caller", "b"]["requests"] == 1
        assert rows["caller", "b"]["refusals"] == {"budget_exceeded": 1} and rows["caller", "a"]["team"] == "core"
        assert rows["team", "core"]["requests"] == 3 and rows["team", "core"]["cost"] == 3 * REPLY_COST / 1e6
        assert rows["team", "core"]["tokens"] == {"prompt": 15, "cached": 0, "completion": 15}
        table = httpx.get(second + "/api/v1/admin/usage", headers={**auth("solo-key"), "accept": "text/csv"})
        assert table.headers["content-type"].startswith("text/csv")
        parsed = {line["name"]: line for line in csv.DictReader(io.StringIO(table.text))}
        assert parsed["core"]["requests"] == "3" and parsed["b"]["refused_budget_exceeded"] == "1"
        assert parsed["a"]["cost"] == f"{2 * REPLY_COST / 1e6:.6f}" and parsed["a"]["currency"] == "USD"
        for who, status in (("key-of-a", 403), ("wrong-key", 401)):
            denied = httpx.get(first + "/api/v1/admin/usage", headers=auth(who))
            assert denied.status_code == status
        assert (
            httpx.get(first + "/api/v1/admin/usage", headers=auth("key-of-a")).json()["error"]["code"] == "admin_only"
        )
        assert post(first, "admin-key-1").status_code == 401  # an admin key reads the report, and nothing else
        bad = httpx.get(first + "/api/v1/admin/usage?period=year", headers=auth("admin-key-1"))
        assert bad.status_code == 422 and "period='year'" in bad.json()["error"]["message"]

        printed = subprocess.run(
            [CHATSSE, "usage", "--url", first, "--period", "month"],
            env={"CHATSSE_ADMIN_KEY": "admin-key-1", "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert printed.returncode == 0, printed.stderr
        lines = printed.stdout.splitlines()
        assert lines[1].split()[:4] == ["KIND", "NAME", "TEAM", "REQUESTS"]
        assert any(line.split()[:4] == ["team", "core", "-", "3"] for line in lines)
        refused = subprocess.run(
            [CHATSSE, "usage", "--url", first],
            env={"PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode == 1 and "401" in refused.stderr


def test_the_csv_of_an_empty_report_has_its_header() -> None:
    report = {"period": "day", "from": "", "to": "", "currency": "EUR", "rows": []}
    assert next(csv.reader(io.StringIO(as_csv(report))))[:4] == ["kind", "name", "team", "requests"]
