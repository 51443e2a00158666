"""S3 write options (encryption, storage class, tags, Object Lock) as SeaweedFS stores them.

SeaweedFS does SSE-S3 only with a key-encryption key, so this module runs a SeaweedFS of
its own started with ``WEED_S3_SSE_KEK``. It has no KMS: ``aws:kms`` is refused, which
shows that the option reaches the server and that a refused upload leaves nothing behind.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import uuid

import pytest
from voipstudio_devstack import SeaweedS3
from voipstudio_provider.engine.archive.writer import (
    ArchiveTarget,
    archive_record,
    put_json,
    verify_archive,
)
from voipstudio_provider.engine.layout import ARCHIVE_KINDS, sidecar_key

MONITORS = ARCHIVE_KINDS["monitors"]
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def encrypting_s3(tmp_path_factory):
    """A SeaweedFS with SSE-S3 enabled, for this module only."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("WEED_S3_SSE_KEK", os.urandom(32).hex())
        server = SeaweedS3(tmp_path_factory.mktemp("seaweedfs-sse"))
        server.start()
    try:
        yield server.client()
    finally:
        server.stop()


@pytest.fixture
def bucket(encrypting_s3) -> str:
    name = f"options-{uuid.uuid4().hex[:12]}"
    encrypting_s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def monitor(sandbox) -> dict:
    return min(sandbox.control("GET", "records/monitors")["data"], key=lambda m: m["size"])


def test_sse_s3_storage_class_and_tags_are_stored(encrypting_s3, bucket, hook, monitor):
    target = ArchiveTarget(
        bucket=bucket,
        sse="AES256",
        storage_class="STANDARD_IA",
        tags={"source": "voipstudio", "kind": "call recording"},
    )

    outcome = archive_record(hook, encrypting_s3, MONITORS, monitor, target)

    assert outcome.status == "archived", outcome.error
    for key in (outcome.key, sidecar_key(target.prefix, MONITORS, monitor)):
        head = encrypting_s3.head_object(Bucket=bucket, Key=key)
        assert head["ServerSideEncryption"] == "AES256"
        assert head["StorageClass"] == "STANDARD_IA"
        tags = encrypting_s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
        assert {t["Key"]: t["Value"] for t in tags} == target.tags
    body = encrypting_s3.get_object(Bucket=bucket, Key=outcome.key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == outcome.sha256
    assert len(body) == monitor["size"]


def test_kms_without_a_kms_is_refused_and_nothing_is_stored(encrypting_s3, bucket, hook, monitor):
    target = ArchiveTarget(bucket=bucket, sse="aws:kms", kms_key_id="voipstudio-archive")

    outcome = archive_record(hook, encrypting_s3, MONITORS, monitor, target)

    assert outcome.status == "failed"
    assert outcome.error.startswith("upload: ")
    assert encrypting_s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_object_lock_retains_archived_objects(encrypting_s3, hook, monitor):
    bucket = f"locked-{uuid.uuid4().hex[:12]}"
    encrypting_s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    target = ArchiveTarget(bucket=bucket, object_lock_mode="GOVERNANCE", object_lock_days=7)
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)  # S3 keeps whole seconds

    outcome = archive_record(hook, encrypting_s3, MONITORS, monitor, target)

    assert outcome.status == "archived", outcome.error
    retention = encrypting_s3.get_object_retention(Bucket=bucket, Key=outcome.key)["Retention"]
    assert retention["Mode"] == "GOVERNANCE"
    until = retention["RetainUntilDate"]
    assert before + dt.timedelta(days=7) <= until <= before + dt.timedelta(days=7, hours=1)
    version = encrypting_s3.head_object(Bucket=bucket, Key=outcome.key)["VersionId"]
    with pytest.raises(encrypting_s3.exceptions.ClientError):
        encrypting_s3.delete_object(Bucket=bucket, Key=outcome.key, VersionId=version)
    assert verify_archive(encrypting_s3, MONITORS, monitor, target).ok


def test_a_multipart_recording_is_labelled_and_kept_in_one_version(
    encrypting_s3, add_monitor, hook
):
    bucket = f"versioned-{uuid.uuid4().hex[:12]}"
    encrypting_s3.create_bucket(Bucket=bucket)
    encrypting_s3.put_bucket_versioning(
        Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}
    )
    size = 11 * MIB + 7
    monitor = add_monitor(size)
    tags = {"source": "voipstudio"}
    target = ArchiveTarget(bucket=bucket, sse="AES256", tags=tags, chunk_size=5 * MIB)

    outcome = archive_record(hook, encrypting_s3, MONITORS, monitor, target)

    assert outcome.status == "archived", outcome.error
    head = encrypting_s3.head_object(Bucket=bucket, Key=outcome.key, ChecksumMode="ENABLED")
    body = encrypting_s3.get_object(Bucket=bucket, Key=outcome.key)["Body"].read()
    assert head["Metadata"] == {"sha256": hashlib.sha256(body).hexdigest(), "size": str(size)}
    assert head["ServerSideEncryption"] == "AES256"
    assert head["ContentType"] == MONITORS.content_type
    stored_tags = encrypting_s3.get_object_tagging(Bucket=bucket, Key=outcome.key)["TagSet"]
    assert {t["Key"]: t["Value"] for t in stored_tags} == tags
    # The unlabelled version that the copy replaced is gone: one version of the bytes.
    versions = encrypting_s3.list_object_versions(Bucket=bucket, Prefix=outcome.key)
    assert [v["VersionId"] for v in versions.get("Versions", [])] == [head["VersionId"]]
    verification = verify_archive(encrypting_s3, MONITORS, monitor, target)
    assert verification.ok, verification.reason


def test_a_locked_multipart_recording_is_not_copied(encrypting_s3, add_monitor, hook):
    bucket = f"locked-{uuid.uuid4().hex[:12]}"
    encrypting_s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    monitor = add_monitor(11 * MIB + 7)
    target = ArchiveTarget(
        bucket=bucket, object_lock_mode="GOVERNANCE", object_lock_days=7, chunk_size=5 * MIB
    )

    outcome = archive_record(hook, encrypting_s3, MONITORS, monitor, target)

    assert outcome.status == "archived", outcome.error
    head = encrypting_s3.head_object(Bucket=bucket, Key=outcome.key)
    assert "sha256" not in head["Metadata"]  # a copy would be a second locked version
    retention = encrypting_s3.get_object_retention(Bucket=bucket, Key=outcome.key)["Retention"]
    assert retention["Mode"] == "GOVERNANCE"
    versions = encrypting_s3.list_object_versions(Bucket=bucket, Prefix=outcome.key)
    assert len(versions.get("Versions", [])) == 1
    verification = verify_archive(encrypting_s3, MONITORS, monitor, target)
    assert verification.ok, verification.reason


@pytest.mark.parametrize("binary_class", ["GLACIER", "DEEP_ARCHIVE"])
def test_sidecars_stay_readable_whatever_class_the_binaries_use(
    encrypting_s3, hook, monitor, binary_class
):
    bucket = f"cold-{uuid.uuid4().hex[:12]}"
    encrypting_s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    target = ArchiveTarget(
        bucket=bucket,
        sse="AES256",
        storage_class=binary_class,
        object_lock_mode="GOVERNANCE",
        object_lock_days=7,
        tags={"source": "voipstudio"},
    )

    outcome = archive_record(hook, encrypting_s3, MONITORS, monitor, target)

    assert outcome.status == "archived", outcome.error
    side = sidecar_key(target.prefix, MONITORS, monitor)
    binary_head = encrypting_s3.head_object(Bucket=bucket, Key=outcome.key)
    sidecar_head = encrypting_s3.head_object(Bucket=bucket, Key=side)
    assert binary_head["StorageClass"] == binary_class
    assert sidecar_head.get("StorageClass", "STANDARD") == "STANDARD"
    assert sidecar_head["ServerSideEncryption"] == "AES256"
    assert encrypting_s3.get_object_retention(Bucket=bucket, Key=side)["Retention"]["Mode"] == (
        "GOVERNANCE"
    )
    tags = encrypting_s3.get_object_tagging(Bucket=bucket, Key=side)["TagSet"]
    assert {t["Key"]: t["Value"] for t in tags} == {"source": "voipstudio"}
    verification = verify_archive(encrypting_s3, MONITORS, monitor, target)
    assert verification.ok, verification.reason


def test_json_documents_keep_a_readable_class(encrypting_s3, bucket):
    target = ArchiveTarget(bucket=bucket, storage_class="DEEP_ARCHIVE", sse="AES256")

    put_json(encrypting_s3, target, "vs/chats/date=2026-01-01/7.json", {"chat": {"id": 7}})

    head = encrypting_s3.head_object(Bucket=bucket, Key="vs/chats/date=2026-01-01/7.json")
    assert head.get("StorageClass", "STANDARD") == "STANDARD"
    assert head["ServerSideEncryption"] == "AES256"
    assert target.document_args()["ServerSideEncryption"] == "AES256"
    assert "StorageClass" not in target.document_args()
    assert ArchiveTarget(bucket=bucket, storage_class="GLACIER_IR").document_args() == {
        "StorageClass": "GLACIER_IR"  # instant retrieval: readable at once, kept
    }
