"""The reconciliation benchmark keeps working: a small year prints both runs and the formula."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "reconcile_benchmark.py"


@pytest.mark.benchmark
def test_a_small_year_reconciles_without_gaps_or_heads():
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--records", "400"],
        capture_output=True,
        text=True,
        timeout=900,
    )

    assert run.returncode == 0, run.stderr[-3000:]
    rows = re.findall(
        r"^(first|second) run\s+([\d.]+)\s+(\d+)\s+(\d+)\s+(\{.*\})$", run.stdout, re.M
    )
    assert [r[0] for r in rows] == ["first", "second"]
    for _, seconds, api, gaps, s3 in rows:
        assert float(seconds) > 0 and int(api) >= 366 and int(gaps) == 0
        requests = ast.literal_eval(s3)
        assert "HeadObject" not in requests
        assert requests["ListObjectsV2"] <= 2 * 366 + 5  # a day's recordings and its ledgers
    assert "2,000,000 recordings a year" in run.stdout
