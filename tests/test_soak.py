"""The short soak run: thousands of streams with random faults and hang-ups end cleanly, and nothing leaks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# The heaviest tests take the same pytest-xdist worker, one after the other: each wants the machine.
pytestmark = pytest.mark.xdist_group("heavy")

SOAK = Path(__file__).parent.parent / "bench" / "soak.py"


@pytest.mark.timeout(240)  # longer than its own subprocess wait (120-180 s), not the global 60 s
def test_short_soak_run_ends_every_stream_and_leaks_nothing() -> None:
    result = subprocess.run(
        [sys.executable, str(SOAK), "--seconds", "8", "--concurrency", "20"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "soak: OK" in result.stdout
    summary = result.stdout.splitlines()[0]
    for outcome in ("done", "error_event", "client_hung_up", "http_502"):
        assert outcome in summary, summary  # every kind of ending was exercised


@pytest.mark.timeout(240)  # longer than its own subprocess wait (120-180 s), not the global 60 s
def test_short_multi_upstream_soak_counts_every_failover() -> None:
    result = subprocess.run(
        [sys.executable, str(SOAK), "--seconds", "6", "--concurrency", "20", "--multi"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "soak: OK" in result.stdout
    # One upstream rate-limited at random, one dropping connections, one healthy: all three were used and failed over.
    for seen in ("ptu:rate_limited", "dropping:upstream_unavailable", "healthy:ok"):
        assert seen in result.stdout, result.stdout


@pytest.mark.timeout(240)  # longer than its own subprocess wait (120-180 s), not the global 60 s
def test_short_cluster_soak_loses_and_repeats_no_text() -> None:
    result = subprocess.run(
        [sys.executable, str(SOAK), "--cluster", "--seconds", "16", "--concurrency", "16"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "soak: OK" in result.stdout
    summary, faults = result.stdout.splitlines()[:2]
    assert "done" in summary and "VIOLATION" not in summary, summary
    assert "instance_killed" in faults and "primary_killed" in faults, faults  # both kinds happened
