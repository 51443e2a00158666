"""Memory stays flat while one user's day of 200,000 calls is exported (in a child process)."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from voipstudio_provider.engine.layout import cdr_csv_key

CALLS = 200_000
USER_ID = 1004
#: The most records the sandbox adds per control request.
ADD_PER_REQUEST = 100_000

# Runs in a fresh interpreter so that its peak RSS is this export's alone.
EXPORT_ONE = textwrap.dedent(
    """
    import datetime as dt, json, sys

    import psutil

    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from voipstudio_provider.engine.exports.cdr_csv import export_user_day
    from voipstudio_provider.hooks.voipstudio import VoIPstudioHook

    bucket, user_id, day = sys.argv[1], int(sys.argv[2]), dt.date.fromisoformat(sys.argv[3])
    s3 = S3Hook(aws_conn_id="aws_default").get_conn()
    hook = VoIPstudioHook("voipstudio_default")
    hook.get_conn()
    s3.list_objects_v2(Bucket=bucket, MaxKeys=1)
    hook.count("cdrs")
    # Resident size now, and the kernel's high-water mark reset to it ("5" clears VmHWM).
    baseline = psutil.Process().memory_info().rss // 1024
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    written = export_user_day(hook, s3, bucket, "voipstudio", user_id, day)
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    print(json.dumps({"baseline_kib": baseline, "peak_kib": peak, **written}))
    """
)


@pytest.mark.slow
def test_exporting_200000_calls_of_one_users_day_keeps_memory_flat(
    sandbox, seaweed, s3_bucket, tmp_path
):
    added: list[int] = []
    while len(added) < CALLS:
        count = min(ADD_PER_REQUEST, CALLS - len(added))
        answer = sandbox.control(
            "POST", "records/cdrs", {"count": count, "fields": {"user_id": USER_ID}}
        )
        added += answer["ids"]
    day = dt.datetime.now(dt.UTC).date()
    truth = [
        c
        for c in sandbox.control("GET", "records/cdrs")["data"]
        if c["user_id"] == USER_ID and c["calldate"][:10] == day.isoformat()
    ]
    assert len(truth) >= CALLS
    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(str(root / p) for p in ("plugins", "include")),
        "AIRFLOW_CONN_VOIPSTUDIO_DEFAULT": json.dumps(
            {
                "conn_type": "voipstudio",
                "host": sandbox.base_url,
                "password": sandbox.token,
                "extra": {"page_size": 5000},
            }
        ),
        "AIRFLOW_CONN_AWS_DEFAULT": seaweed.airflow_conn_uri(),
        "TMPDIR": str(tmp_path),
    }

    child = subprocess.run(
        [sys.executable, "-c", EXPORT_ONE, s3_bucket, str(USER_ID), day.isoformat()],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )

    assert child.returncode == 0, child.stderr[-3000:]
    report = json.loads(child.stdout.strip().splitlines()[-1])
    growth_mib = (report["peak_kib"] - report["baseline_kib"]) / 1024
    print(
        f"exporting {report['rows']} calls ({report['bytes'] / 2**20:.0f} MiB of CSV) grew "
        f"peak RSS by {growth_mib:.1f} MiB"
    )
    assert report["rows"] == len(truth)
    # Held whole, the day would take far more: 200,000 parsed records are hundreds of MiB,
    # and the CSV alone is over 40 MiB. Two 8 MiB spools and one 5,000-row page are allowed.
    assert report["bytes"] > 40 * 2**20
    assert growth_mib < 64, f"peak RSS grew by {growth_mib:.0f} MiB"

    body = seaweed.client().get_object(
        Bucket=s3_bucket, Key=cdr_csv_key("voipstudio", USER_ID, day)
    )["Body"]
    digest, ids = hashlib.sha256(), []
    text = io.TextIOWrapper(_Hashing(body, digest), encoding="utf-8", newline="")
    for row in csv.reader(text):
        ids.append(row[0])
    assert digest.hexdigest() == report["sha256"]
    assert ids[0] == "id" and [int(i) for i in ids[1:]] == sorted(c["id"] for c in truth)


class _Hashing(io.RawIOBase):
    """A readable stream over an S3 body that hashes what is read through it."""

    def __init__(self, body, digest) -> None:
        self._body, self._digest = body, digest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        chunk = self._body.read(len(buffer))
        self._digest.update(chunk)
        buffer[: len(chunk)] = chunk
        return len(chunk)
