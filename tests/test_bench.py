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
        [sys.executable, str(BENCH), "--quick", "--out", str(tmp_path)], capture_output=True, text=True, timeout=120
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
    summary = report["summary"]["W1"]["chatsse"]
    assert 50 < summary["delivered_pct_of_direct"][0] <= 110
