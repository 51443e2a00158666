"""Audit objects, plans and the temporary parts of the audit, as S3 stores them.

A SeaweedFS of this module's own does SSE-S3 (with a key-encryption key) and Object Lock.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid

import pytest
from voipstudio_devstack import SeaweedS3
from voipstudio_provider.engine.archive.writer import ArchiveTarget
from voipstudio_provider.engine.evidence.audit import audit_part, merge_audit_parts
from voipstudio_provider.engine.evidence.intents import evidence_args, probe_bucket
from voipstudio_provider.engine.evidence.plans import read_plan, write_plan
from voipstudio_provider.engine.layout import audit_key, plan_key

DAG, RUN, PREFIX = "voipstudio_retention", "scheduled__2026-11-20T04:00:00+00:00", "vs"


@pytest.fixture(scope="module")
def locking_s3(tmp_path_factory):
    with pytest.MonkeyPatch.context() as env:
        env.setenv("WEED_S3_SSE_KEK", os.urandom(32).hex())
        server = SeaweedS3(tmp_path_factory.mktemp("seaweedfs-audit"))
        server.start()
    try:
        yield server.client()
    finally:
        server.stop()


@pytest.fixture
def target(locking_s3) -> ArchiveTarget:
    bucket = f"audit-{uuid.uuid4().hex[:12]}"
    locking_s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    return ArchiveTarget(
        bucket=bucket, prefix=PREFIX, sse="AES256", storage_class="DEEP_ARCHIVE",
        object_lock_mode="GOVERNANCE", object_lock_days=7,
    )  # fmt: skip


def test_the_finished_audit_is_checksummed_encrypted_and_locked(locking_s3, target):
    s3 = locking_s3
    probe_bucket(s3, target, DAG, RUN, "monitors.try1")  # a locking bucket passes the probe
    temporary = evidence_args(target, lock=False)
    with audit_part(s3, target.bucket, PREFIX, DAG, RUN, "monitors.try1", temporary) as audit:
        audit.add("monitors", 7, "deleted", "archive_verified")
    part = audit.key
    head = s3.head_object(Bucket=target.bucket, Key=part, ChecksumMode="ENABLED")
    assert head["ServerSideEncryption"] == "AES256" and head["ChecksumSHA256"]
    assert "ObjectLockMode" not in head  # temporary: removed once joined

    summary = merge_audit_parts(
        s3, target.bucket, PREFIX, DAG, RUN, write_args=evidence_args(target, lock=True)
    )

    assert summary["lines"] == 1
    key = audit_key(PREFIX, DAG, RUN)
    head = s3.head_object(Bucket=target.bucket, Key=key, ChecksumMode="ENABLED")
    assert head["ServerSideEncryption"] == "AES256" and head["ChecksumSHA256"]
    assert head.get("StorageClass", "STANDARD") == "STANDARD"  # readable at once
    retention = s3.get_object_retention(Bucket=target.bucket, Key=key)["Retention"]
    assert retention["Mode"] == "GOVERNANCE"
    assert retention["RetainUntilDate"] > dt.datetime.now(dt.UTC) + dt.timedelta(days=6)
    listed = s3.list_objects_v2(Bucket=target.bucket, Prefix=PREFIX).get("Contents", [])
    assert [o["Key"] for o in listed] == [key]  # the part and the probe are gone
    with pytest.raises(s3.exceptions.ClientError):
        s3.delete_object(Bucket=target.bucket, Key=key, VersionId=head["VersionId"])


def test_a_plan_is_checksummed_encrypted_and_locked(locking_s3, target):
    s3 = locking_s3
    key = plan_key(PREFIX, "voipstudio_compliance_purge", "manual__1")
    plan = {"criteria": {"dry_run": True}, "resources": {"monitors": {"ids": [1], "held": []}}}

    digest = write_plan(s3, target.bucket, key, plan, evidence_args(target, lock=True))

    head = s3.head_object(Bucket=target.bucket, Key=key, ChecksumMode="ENABLED")
    assert head["ServerSideEncryption"] == "AES256" and head["ChecksumSHA256"]
    assert s3.get_object_retention(Bucket=target.bucket, Key=key)["Retention"]["Mode"] == (
        "GOVERNANCE"
    )
    assert read_plan(s3, target.bucket, key)["sha256"] == digest
