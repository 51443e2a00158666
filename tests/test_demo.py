"""``make demo`` end to end: ``include/demo.py`` as a user runs it, in a scratch directory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_runs_every_dag_reports_and_stops_what_it_started(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env["VOIPSTUDIO_DEMO_DIR"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, str(REPO / "include" / "demo.py")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    report = done.stdout
    assert done.returncode == 0, report[-4000:] + done.stderr[-4000:]

    for label, dag_id in (
        ("archive-recordings", "voipstudio_archive_recordings"),
        ("archive-pcaps", "voipstudio_archive_pcaps"),
        ("export-user-cdrs", "voipstudio_export_user_cdrs"),
        ("retention", "voipstudio_retention"),
        ("purge", "voipstudio_compliance_purge"),
        ("archive-again", "voipstudio_archive_recordings"),
    ):
        assert re.search(rf"^  {label}\s+{dag_id}\s+success\b", report, re.MULTILINE), label

    archived = re.search(r"(\d+) records, (\d+) archived \((\d+) bytes\), 0 skipped", report)
    assert archived and int(archived[1]) == int(archived[2]) > 0 and int(archived[3]) > 0
    again = re.search(r"(\d+) records, 0 archived \(0 bytes\), (\d+) skipped", report)
    assert again and int(again[1]) == int(again[2]) > 0
    assert re.search(r"voipstudio/recordings/: (\d+) \.json, \1 \.mp3", report)
    assert re.search(r"voipstudio/pcaps/cdrs/: \d+ \.pcap", report)
    assert re.search(r"cdr-csv/user_id=\d+/date=[\d-]+/cdrs\.csv: 0 rows \(header only", report)
    assert re.search(r"deleted [1-9]\d* monitors: archive_verified", report)
    assert "skipped 1 monitors: legal_hold_id" in report
    # The purge: asked by the run's user, approved by the demo's second person, deleted.
    assert re.search(r"^    asked by dag_test at ", report, re.MULTILINE)
    assert re.search(r"^    approved by bob at ", report, re.MULTILINE)
    planned = re.search(r"the plan approved: ([1-9]\d*) monitors", report)
    assert planned and f"deleted {planned[1]} monitors: archive_verified" in report
    assert re.search(r"note: PURGED: \d+ deleted, \d+ kept; approved by bob", report)
    assert "Stopped the sandbox and SeaweedFS." in report
    assert "sandbox-token" not in report + done.stderr
    assert (tmp_path / ".airflow" / "airflow.db").exists()
    assert (tmp_path / ".demo" / "logs" / "archive-recordings.log").exists()
