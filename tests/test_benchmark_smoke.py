"""The throughput benchmark keeps working: a tiny run prints a row per method and workload."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "archive_throughput.py"


@pytest.mark.benchmark
def test_tiny_benchmark_prints_every_method_per_workload_and_a_rerun():
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--streams", "2"],
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert run.returncode == 0, run.stderr[-3000:]
    tables = [t for t in run.stdout.strip().split("\n\n") if t.strip()]
    assert len(tables) == 4  # many small recordings, one large, small voicemails, a re-run
    for table in tables[:3]:
        rows = {}
        lines = table.splitlines()
        assert lines[-2].startswith("fastest reference: ")
        assert lines[-1].startswith("provider vs boto3_sidecar (the same two objects")
        assert float(lines[-1].rsplit(" ", 1)[1]) > 0
        for line in lines[3:-2]:
            method, items, megabytes, seconds, rate, ratio, *_, s3_per, api_per, cpu, servers = (
                line.split()
            )
            rows[method] = (int(items), float(megabytes), float(seconds), float(s3_per))
            assert float(ratio) > 0 and float(api_per) >= 1
            assert float(cpu) > 0 and float(servers) >= 0
        assert sorted(rows) == [
            "bare_loop",
            "boto3_best",
            "boto3_sidecar",
            "http_to_s3",
            "provider",
        ]
        assert rows["boto3_sidecar"][3] >= 2  # a sidecar PUT besides each body
        assert len({(items, mb) for items, mb, _, _ in rows.values()}) == 1  # the same set
        assert all(items > 0 and secs > 0 and s3 >= 1 for items, _, secs, s3 in rows.values())
    rerun = tables[3]
    assert " 0 downloads" in rerun, rerun
