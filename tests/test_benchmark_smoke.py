"""The throughput benchmark keeps working: a tiny run prints its three rows per workload."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "archive_throughput.py"


@pytest.mark.benchmark
def test_tiny_benchmark_prints_three_methods_per_workload():
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--streams", "2"],
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert run.returncode == 0, run.stderr[-3000:]
    tables = [t for t in run.stdout.strip().split("\n\n") if t.strip()]
    assert len(tables) == 2  # many small recordings, then one large
    for table in tables:
        rows = {}
        for line in table.splitlines()[3:]:
            method, items, megabytes, seconds, rate, *_ = line.split()
            rows[method] = (int(items), float(megabytes), float(rate))
        assert sorted(rows) == ["bare_loop", "http_to_s3", "provider"]
        assert len({(items, mb) for items, mb, _ in rows.values()}) == 1  # the same set
        assert all(items > 0 and rate > 0 for items, _, rate in rows.values())
