"""The operators' commands: `chatsse keys rotate` (a new key beside the old, which expires), `chatsse reload` (SIGHUP
to running gateways) and `chatsse usage` (the spend report as a table), each returning its exit status."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tomllib

import dotenv
import httpx

from chatsse.callers.keys import keys_from, rotated_key
from chatsse.callers.report import as_table


def reload(pid: int | None) -> int:
    """SIGHUP to `pid`, or to each `chatsse serve` whose parent is not one (with workers, the master passes it on)."""
    serving = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            with contextlib.suppress(OSError):
                argv = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")
                parent = int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1])
                if b"serve" in argv and any(arg.endswith((b"chatsse", b"chatsse/__main__.py")) for arg in argv):
                    serving[int(entry)] = parent
    targets = [pid] if pid is not None else [p for p, parent in serving.items() if parent not in serving]
    if not targets:
        print("chatsse reload: no running `chatsse serve` found", file=sys.stderr)
        return 1
    for target in targets:
        try:
            os.kill(target, signal.SIGHUP)
        except OSError as exc:
            print(f"chatsse reload: cannot signal {target} ({exc.strerror})", file=sys.stderr)
            return 1
        print(f"chatsse reload: asked {target} to reload its configuration")
    return 0


def rotate(name: str, days: float) -> int:
    """The caller's current keys from the CHATSSE_CONFIG file (key_env read from this environment)."""
    dotenv.load_dotenv(".env")
    path = os.environ.get("CHATSSE_CONFIG", "").strip()
    try:
        with open(path, "rb") as file:
            tables = tomllib.load(file).get("caller", [])
    except (OSError, tomllib.TOMLDecodeError) as exc:
        print(f"chatsse keys rotate: CHATSSE_CONFIG={path!r} cannot be read ({exc})", file=sys.stderr)
        return 1
    table = next((t for t in tables if isinstance(t, dict) and t.get("name") == name), None)
    if table is None:
        print(f"chatsse keys rotate: {path} has no [[caller]] named {name!r}", file=sys.stderr)
        return 1
    problems: list[str] = []
    current = keys_from(table, f"{path}: [[caller]] {name!r}", os.environ, problems)
    if problems:
        print("chatsse keys rotate: " + "; ".join(problems), file=sys.stderr)
        return 1
    print(rotated_key(name, current, days), end="")
    return 0


def usage(url: str, period: str, as_csv: bool, key: str) -> int:
    headers = {"Accept": "text/csv" if as_csv else "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    try:
        answer = httpx.get(f"{url.rstrip('/')}/api/v1/admin/usage", params={"period": period}, headers=headers)
    except httpx.HTTPError as exc:
        print(f"chatsse usage: cannot reach {url} ({type(exc).__name__})", file=sys.stderr)
        return 1
    if not answer.is_success:
        try:
            message = answer.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = answer.text[:200]
        print(f"chatsse usage: {answer.status_code}: {message}", file=sys.stderr)
        return 1
    print(answer.text if as_csv else as_table(answer.json()), end="")
    return 0
