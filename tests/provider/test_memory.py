"""Memory stays bounded while a 1 GB recording is archived (measured in a child process)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

GIB = 1024**3
MIB = 1024**2

# Runs in a fresh interpreter so that its peak RSS is this archive's alone.
ARCHIVE_ONE = textwrap.dedent(
    """
    import json, sys

    import psutil

    from voipstudio_provider.engine.archive.writer import ArchiveTarget, archive_record
    from voipstudio_provider.hooks.voipstudio import VoIPstudioHook
    from voipstudio_provider.engine.layout import ARCHIVE_KINDS
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    record, bucket = json.loads(sys.argv[1]), sys.argv[2]
    s3 = S3Hook(aws_conn_id="aws_default").get_conn()
    hook = VoIPstudioHook("voipstudio_default")
    hook.get_conn()
    s3.list_objects_v2(Bucket=bucket, MaxKeys=1)
    # Resident size now, and the kernel's high-water mark reset to it ("5" clears VmHWM):
    # imports may have peaked higher, and that peak is not the archive's.
    baseline = psutil.Process().memory_info().rss // 1024
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    outcome = archive_record(hook, s3, ARCHIVE_KINDS["monitors"], record, ArchiveTarget(bucket))
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    print(json.dumps({"baseline_kib": baseline, "peak_kib": peak, **outcome.__dict__}))
    """
)


@pytest.mark.slow
def test_archiving_a_1_gb_recording_keeps_memory_flat(
    sandbox, add_monitor, seaweed, s3_bucket, tmp_path
):
    monitor = add_monitor(GIB)
    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(str(root / p) for p in ("plugins", "include")),
        "AIRFLOW_CONN_VOIPSTUDIO_DEFAULT": sandbox.airflow_conn_json(),
        "AIRFLOW_CONN_AWS_DEFAULT": seaweed.airflow_conn_uri(),
        "TMPDIR": str(tmp_path),
    }

    child = subprocess.run(
        [sys.executable, "-c", ARCHIVE_ONE, json.dumps(monitor), s3_bucket],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )

    assert child.returncode == 0, child.stderr[-3000:]
    report = json.loads(child.stdout.strip().splitlines()[-1])
    assert report["status"] == "archived", report["error"]
    growth_mib = (report["peak_kib"] - report["baseline_kib"]) / 1024
    print(f"archiving 1 GiB grew peak RSS by {growth_mib:.1f} MiB")
    assert growth_mib < 100, f"peak RSS grew by {growth_mib:.0f} MiB"

    s3 = seaweed.client()
    head = s3.head_object(Bucket=s3_bucket, Key=report["key"])
    assert head["ContentLength"] == GIB == report["size"]
    digest = hashlib.sha256()
    for chunk in s3.get_object(Bucket=s3_bucket, Key=report["key"])["Body"].iter_chunks(8 * MIB):
        digest.update(chunk)
    side = report["key"][: -len("mp3")] + "json"
    sidecar = json.loads(s3.get_object(Bucket=s3_bucket, Key=side)["Body"].read())
    assert digest.hexdigest() == sidecar["sha256"] == report["sha256"]
    stored = s3.head_object(Bucket=s3_bucket, Key=report["key"], ChecksumMode="ENABLED")
    assert stored["ChecksumSHA256"] == sidecar["checksum_sha256"] == report["s3_checksum"]
