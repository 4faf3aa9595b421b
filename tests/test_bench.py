"""The benchmark works from a clean checkout: a quick run completes with every stream and token accounted for.

Speed is not asserted here (see bench/REPORT.md); this only proves the harness and its figures are sound.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parent.parent / "bench" / "run.py"


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
        assert run["chunks_per_s"] > 0 and run["ttft_p50_ms"] >= 0
        if run["target"] == "chatsse":
            # CPU time comes in 10 ms ticks: a quick W2 can take less than one, so only the sum must be positive.
            assert run["gateway_cpu_s"] >= 0 and run["peak_rss_mb"] > 10
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
