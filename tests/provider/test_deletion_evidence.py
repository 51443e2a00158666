"""What deletion rests on: the bucket probe, and write-ahead intents that survive a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from voipstudio_provider.endpoints import parse_api_datetime
from voipstudio_provider.engine.archive.writer import ArchiveTarget, Verification, archive_batch
from voipstudio_provider.engine.evidence.audit import AuditLog, read_audit
from voipstudio_provider.engine.evidence.intents import (
    BucketProbeError,
    pending_intents,
    probe_bucket,
)
from voipstudio_provider.engine.layout import ARCHIVE_KINDS, audit_key
from voipstudio_provider.engine.subjects.legal_hold import LegalHold
from voipstudio_provider.tasks.deletion_run import finish_audit
from voipstudio_provider.tasks.retention import SourceDeleter, retain_resource

DAG, RUN, PREFIX = "voipstudio_retention", "scheduled__2026-11-20T04:00:00+00:00", "vs"
REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("deleting_worker.py")


def test_probe_passes_on_a_bucket_that_keeps_checksums(s3, s3_bucket):
    target = ArchiveTarget(bucket=s3_bucket, prefix=PREFIX)
    probe_bucket(s3, target, DAG, RUN, "monitors.try1")
    # The probe object is temporary: nothing is left behind.
    assert "Contents" not in s3.list_objects_v2(Bucket=s3_bucket, Prefix=PREFIX)


def test_probe_refuses_a_bucket_it_cannot_write(seaweed, s3_bucket):
    import boto3

    stranger = boto3.client(
        "s3", endpoint_url=seaweed.endpoint_url, aws_access_key_id=seaweed.access_key,
        aws_secret_access_key="not-the-secret", region_name="us-east-1",
    )  # fmt: skip
    target = ArchiveTarget(bucket=s3_bucket, prefix=PREFIX)
    with pytest.raises(BucketProbeError, match=f"writing s3://{s3_bucket}/vs/audit/.*probe"):
        probe_bucket(stranger, target, DAG, RUN, "monitors.try1")


class ForgetfulBucket:
    """The session's S3 client, except that HEAD reports no stored checksum, as a storage
    that keeps none (SeaweedFS always keeps one, so this cannot be arranged for real)."""

    def __init__(self, client) -> None:
        self.client = client

    def __getattr__(self, name: str):
        return getattr(self.client, name)

    def head_object(self, **kwargs):
        answer = self.client.head_object(**kwargs)
        answer.pop("ChecksumSHA256", None)
        return answer


def test_probe_refuses_a_bucket_that_keeps_no_checksum(s3, s3_bucket):
    target = ArchiveTarget(bucket=s3_bucket, prefix=PREFIX)
    with pytest.raises(BucketProbeError, match="reports no ChecksumSHA256"):
        probe_bucket(ForgetfulBucket(s3), target, DAG, RUN, "monitors.try1")


def test_an_unverifiable_archive_is_kept_with_its_own_reason(
    hook, truth, s3, s3_bucket, monkeypatch
):
    # verify_archive's "unverifiable ..." answer (no stored checksum, or an object that
    # cannot be read now) is what a storage without checksums gives; played here.
    import voipstudio_provider.engine.archive.writer as archive

    def unverifiable(s3_client, kind, record, target):
        return Verification(False, "unverifiable: the object reports no ChecksumSHA256", "k")

    monkeypatch.setattr(archive, "verify_archive", unverifiable)
    record = truth("monitors")[0]
    with AuditLog(DAG, RUN, f"{PREFIX}/x.jsonl") as audit:
        target = ArchiveTarget(bucket=s3_bucket, prefix=PREFIX)
        deleter = SourceDeleter(
            hook, s3, target, audit, "monitors", hold=LegalHold(), dry_run=False, budget=5
        )
        deleter.run([record])
        summary = audit.summary()
    assert summary["resources"]["monitors"]["reasons"] == {"archive_unverifiable": 1}
    assert record["id"] in {m["id"] for m in truth("monitors")}


def test_a_killed_attempt_leaves_exactly_one_line_per_deleted_id(
    sandbox, seaweed, s3, s3_bucket, hook, truth
):
    monitors = truth("monitors")
    cutoff = parse_api_datetime(monitors[7]["timestamp"])
    candidates = [m for m in monitors if parse_api_datetime(m["timestamp"]) < cutoff]
    assert len(candidates) >= 5
    target = ArchiveTarget(bucket=s3_bucket, prefix=PREFIX)
    outcomes = archive_batch(hook, s3, ARCHIVE_KINDS["monitors"], candidates, target)
    assert {o.status for o in outcomes} == {"archived"}
    config = {
        "endpoint_url": seaweed.endpoint_url,
        "access_key": seaweed.access_key,
        "secret_key": seaweed.secret_key,
        "bucket": s3_bucket,
        "prefix": PREFIX,
        "cutoff": cutoff.isoformat(),
        "dag_id": DAG,
        "run_id": RUN,
    }
    env = dict(
        os.environ,
        AIRFLOW_CONN_VOIPSTUDIO_DEFAULT=sandbox.airflow_conn_json(),
        PYTHONPATH=os.pathsep.join(str(REPO / p) for p in ("plugins", "include", ".")),
    )
    worker = subprocess.Popen(
        [sys.executable, str(WORKER), json.dumps(config)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = worker.stdout.readline()  # the second batch's DELETE was answered
        assert line.startswith("DELETED "), line
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
    killed_batch = json.loads(line.removeprefix("DELETED "))
    assert len(killed_batch) == 2
    assert not set(killed_batch) & {m["id"] for m in truth("monitors")}  # gone, unaudited
    assert len(pending_intents(s3, target, DAG, RUN)) == 1

    # The next attempt reconciles, then deletes the rest; the run's audit is written.
    from voipstudio_provider.engine.evidence.intents import deletion_attempt

    with deletion_attempt(hook, s3, target, DAG, RUN, "monitors", 2) as (audit, intents):
        retain_resource(
            hook, s3, target, audit, "monitors", cutoff, hold=LegalHold(), dry_run=False,
            budget=100, intents=intents,
            checkpoint=lambda: audit.upload(s3, s3_bucket, audit.key),
        )  # fmt: skip
    finish_audit(hook, s3, target, DAG, RUN)

    lines = read_audit(s3, s3_bucket, audit_key(PREFIX, DAG, RUN))
    per_id = Counter(x["id"] for x in lines)
    ids = {m["id"] for m in candidates}
    assert set(per_id) == ids and set(per_id.values()) == {1}
    assert {x["action"] for x in lines} == {"deleted"}
    assert not ids & {m["id"] for m in truth("monitors")}
    reconciled = {x["id"] for x in lines if "reconciled" in x["detail"]}
    assert reconciled == set(killed_batch)
    assert pending_intents(s3, target, DAG, RUN) == []
    first_try = [k for k in s3.list_objects_v2(Bucket=s3_bucket, Prefix=PREFIX).get("Contents", [])]
    assert all(".parts/" not in k["Key"] for k in first_try)  # the parts were joined


def test_write_audit_log_reconciles_what_no_attempt_did(hook, truth, s3, s3_bucket):
    """An intent whose task never ran again: the run's audit still gets every line."""
    from voipstudio_provider.engine.evidence.intents import DeleteIntents

    target = ArchiveTarget(bucket=s3_bucket, prefix=PREFIX)
    gone, stays = truth("monitors")[:2]
    intents = DeleteIntents(s3, target, DAG, RUN, "monitors.try1")
    items = {r["id"]: {"reason": "archive_verified", "archive_key": "k"} for r in (gone, stays)}
    intents.record("monitors", items)
    hook.delete_records("monitors", [gone["id"]])  # the worker died before the second id

    summary = finish_audit(hook, s3, target, DAG, RUN, wait=0.5)

    assert summary["reconciled_intents"] == 1
    lines = {x["id"]: x for x in read_audit(s3, s3_bucket, audit_key(PREFIX, DAG, RUN))}
    assert (lines[gone["id"]]["action"], lines[gone["id"]]["reason"]) == (
        "deleted",
        "archive_verified",
    )
    assert (lines[stays["id"]]["action"], lines[stays["id"]]["reason"]) == (
        "failed",
        "delete_interrupted",
    )
    assert pending_intents(s3, target, DAG, RUN) == []
    head = s3.head_object(Bucket=s3_bucket, Key=audit_key(PREFIX, DAG, RUN), ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] and head["Metadata"]["deletions"] == "1"
