"""The benchmark works from a clean checkout: a quick run completes with every stream and token accounted for.

Speed is not asserted here (see bench/REPORT.md); this only proves the harness and its figures are sound.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

# The heaviest tests take the same pytest-xdist worker, one after the other: each wants the machine.
pytestmark = pytest.mark.xdist_group("heavy")

BENCH = Path(__file__).parent.parent / "bench" / "run.py"


@pytest.mark.timeout(240)  # longer than its own subprocess wait (120-180 s), not the global 60 s
def test_quick_benchmark_completes_and_accounts_for_every_token(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--scale", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "quick.json").read_text())
    runs = report["runs"]
    assert {(r["target"], r["workload"]) for r in runs} == {
        (t, w) for t in ("direct", "chatsse") for w in ("W1", "W2", "W3")
    }
    for run in runs:
        assert run["incomplete"] == 0 and run["errors"] == []
        assert run["chunks"] == run["expected_chunks"] > 0
        # Figures that can be wrong: a first token on the loopback within seconds, a throughput that is a rate.
        assert run["chunks"] / 120 < run["chunks_per_s"] and 0 < run["ttft_p50_ms"] < 5000
        if run["target"] == "chatsse":
            # CPU time comes in 10 ms ticks: a quick W2 can take less than one, so only the sum must be positive;
            # each is below the wall time the whole quick run may take.
            assert 0 <= run["gateway_cpu_s"] < 120 and 10 < run["peak_rss_mb"] < 2000
    assert sum(run.get("gateway_cpu_s", 0) for run in runs) > 0
    # The at-scale workloads (#12), small: every stream complete, and the figures the report quotes are there.
    scale = {(r["target"], r["workload"]): r for r in report["scale"]}
    assert set(scale) == {(t, w) for t in ("direct", "chatsse") for w in ("SLOW", "SHORT")}
    for row in scale.values():
        assert row["complete"] == row["streams"] > 0
    slow, short = scale["chatsse", "SLOW"], scale["chatsse", "SHORT"]
    assert slow["chunks"] == slow["expected_chunks"] and slow["ttft_p99_ms"] >= slow["ttft_p50_ms"] > 0
    assert slow["peak_rss_mb"] > 10 and short["streams_per_s"] > 0 and short["cpu_ms_per_stream"] > 0
    assert "## At scale (#12): SLOW" in (tmp_path / "quick.md").read_text()
    summary = report["summary"]["W1"]["chatsse"]
    assert 50 < summary["delivered_pct_of_direct"][0] <= 110


@pytest.mark.timeout(240)  # longer than its own subprocess wait (120-180 s), not the global 60 s
def test_rounds_against_one_process_report_drift_figures_and_the_floors_run(tmp_path: Path) -> None:
    """`--rounds 2 --floors`, small: two rounds in one gateway process, each with its figures and a probe reading;
    the two floors serve W1 whole beside chatsse."""
    result = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--workloads", "W1", "--floors", "--rounds", "2", "--out", tmp_path],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "quick.json").read_text())
    floors = {r["target"]: r for r in report["runs"]}
    for name in ("stack-floor", "asgi-floor"):
        assert floors[name]["chunks"] == floors[name]["expected_chunks"] > 0 and floors[name]["incomplete"] == 0
        assert 0 <= floors[name]["cpu_s_per_1k_chunks"] < 5 and 10 < floors[name]["peak_rss_mb"] < 2000
    rounds = report["rounds"]
    assert [r["round"] for r in rounds] == [1, 2]
    for row in rounds:
        assert row["complete"] == row["streams"] > 0 and row["chunks"] == row["expected_chunks"] > 0
        assert row["short_streams_per_s"] > 0 and row["idle_rss_mb"] > 10 and row["open_fds"] > 3
        # The probe's reading comes from inside the gateway: it tracks objects and saw its own types.
        assert row["gc_tracked"] > 1000 and sum(row["gc_by_generation"]) > 0
        assert row["gc_types"] and 0 < sum(row["gc_types"].values()) <= row["gc_tracked"]
        assert 0 <= row["gc_longest_pause_ms"] < 5000 and math.isfinite(row["slow_ttft_p99_added_ms"])
        assert math.isfinite(row["w1_ttft_p99_added_ms"]) and 0 <= row["w1_cpu_s_per_1k_chunks"] < 5
    # After the last round, a full collection: what the process keeps is less than what it tracked.
    assert 0 < rounds[-1]["kept_objects"] <= rounds[-1]["gc_tracked"] + 1000
    assert "## Rounds (#23)" in (tmp_path / "quick.md").read_text()


@pytest.mark.timeout(240)  # longer than its own subprocess wait (120-180 s), not the global 60 s
def test_every_face_over_both_upstreams_accounts_for_every_token(tmp_path: Path) -> None:
    """--faces with --responses-upstream (#30): the Responses face counts its deltas, not its closing events' text."""
    result = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--faces", "--responses-upstream", "--workloads", "W1"]
        + ["--reps", "1", "--no-peer", "--no-workers2", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    runs = json.loads((tmp_path / "quick.json").read_text())["runs"]
    faces = ("", " openai", " useChat", " responses")
    expected = {f"{gateway}{face}" for gateway in ("chatsse", "responses-upstream") for face in faces} | {"direct"}
    assert {run["target"] for run in runs} == expected
    for run in runs:
        assert run["incomplete"] == 0 and run["errors"] == [], run["target"]
        assert run["chunks"] == run["expected_chunks"] > 0, run["target"]
