"""What the archive writer deletes: only what it created in the same call.

Two archive runs meet at one key (a stale listing): the first stores and verifies the
recording, retention deletes its source, the second's labelling copy fails. The bucket,
listed with its versions and read back, must still hold the verified recording.
"""

from __future__ import annotations

import hashlib
import io
import logging
import uuid

import pytest
from botocore.exceptions import ClientError
from voipstudio_provider.engine.archive.proof import ArchiveListing
from voipstudio_provider.engine.archive.uploads import upload_spooled
from voipstudio_provider.engine.archive.writer import ArchiveTarget, archive_record, verify_archive
from voipstudio_provider.engine.layout import ARCHIVE_KINDS, archive_key

MONITORS = ARCHIVE_KINDS["monitors"]
MIB = 1024 * 1024


def refused(operation: str) -> ClientError:
    return ClientError({"Error": {"Code": "InternalError", "Message": "injected"}}, operation)


def inject(client, operation: str, times: int = 1, before=None) -> list[int]:
    """Make ``client``'s next ``times`` calls of ``operation`` fail before they are sent
    (the other calls reach the S3 server); ``before`` runs first. Returns the call count."""
    calls = [0]

    def fail(**_):
        calls[0] += 1
        if calls[0] <= times:
            if before is not None:
                before()
            raise refused(operation)

    client.meta.events.register(f"before-call.s3.{operation}", fail)
    return calls


@pytest.fixture(params=["unversioned", "versioned"])
def target(request, seaweed) -> ArchiveTarget:
    """A bucket of its own, with or without versioning, parts of 5 MiB."""
    name = f"writer-{uuid.uuid4().hex[:12]}"
    s3 = seaweed.client()
    s3.create_bucket(Bucket=name)
    if request.param == "versioned":
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return ArchiveTarget(bucket=name, prefix="voipstudio", chunk_size=5 * MIB)


def versions(s3, bucket: str, key: str) -> list[dict]:
    listing = s3.list_object_versions(Bucket=bucket, Prefix=key)
    return [v for v in listing.get("Versions", []) if v["Key"] == key]


def digest_at(s3, bucket: str, key: str, version: str | None = None) -> str:
    extra = {"VersionId": version} if version else {}
    return hashlib.sha256(s3.get_object(Bucket=bucket, Key=key, **extra)["Body"].read()).hexdigest()


def no_uploads(s3, bucket: str) -> bool:
    return not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")


def test_a_failed_labelling_copy_never_deletes_another_runs_verified_archive(
    add_monitor, hook, seaweed, target, truth
):
    monitor = add_monitor(6 * MIB)
    key = archive_key(target.prefix, MONITORS, monitor)
    s3 = seaweed.client()
    late = seaweed.client()  # the second run's client: its copy fails
    stale = ArchiveListing(late, target.bucket)
    assert stale.decide(MONITORS, target.prefix, monitor) == "missing"

    first = archive_record(hook, s3, MONITORS, monitor, target)
    assert first.status == "archived", first.error
    assert verify_archive(s3, MONITORS, monitor, target).ok
    archived = digest_at(s3, target.bucket, key)
    kept_versions = [v["VersionId"] for v in versions(s3, target.bucket, key)]

    def retention_deletes_the_source() -> None:
        hook.delete_records("monitors", [monitor["id"]])

    calls = inject(late, "CopyObject", before=retention_deletes_the_source)
    second = archive_record(hook, late, MONITORS, monitor, target, listing=stale)

    assert calls[0] == 1
    assert second.status == "failed" and "InternalError" in second.error
    assert monitor["id"] not in {m["id"] for m in truth("monitors")}
    # The recording exists only in the bucket now: whole, and still proven.
    assert digest_at(s3, target.bucket, key) == archived == first.sha256
    assert verify_archive(s3, MONITORS, monitor, target).ok
    assert no_uploads(s3, target.bucket)
    left = versions(s3, target.bucket, key)
    if s3.get_bucket_versioning(Bucket=target.bucket).get("Status") == "Enabled":
        # Versioned: the second run's own version was deleted; the first run's is current.
        assert [v["VersionId"] for v in left] == kept_versions
        assert left[0]["IsLatest"]


def test_a_refused_labelling_copy_removes_only_its_own_version(
    add_monitor, hook, seaweed, target, caplog
):
    caplog.set_level(logging.WARNING, logger="voipstudio_provider.engine.archive.writer")
    monitor = add_monitor(6 * MIB)
    key = archive_key(target.prefix, MONITORS, monitor)
    s3 = seaweed.client()
    inject(s3, "CopyObject")

    outcome = archive_record(hook, s3, MONITORS, monitor, target)

    assert outcome.status == "failed"
    assert outcome.error == "upload: ClientError: " + str(refused("CopyObject"))
    assert no_uploads(s3, target.bucket)
    left = versions(s3, target.bucket, key)
    if s3.get_bucket_versioning(Bucket=target.bucket).get("Status") == "Enabled":
        assert left == []  # the version it created, and only that, was deleted
    else:
        # Nothing names the object as this call's alone: it is left, whole, unlabelled and
        # without a sidecar, so it proves nothing and the next run replaces it.
        served = hook.download(MONITORS.operation, monitor["id"], io.BytesIO())
        assert digest_at(s3, target.bucket, key) == served.sha256
        assert s3.head_object(Bucket=target.bucket, Key=key)["ContentLength"] == 6 * MIB
        assert verify_archive(s3, MONITORS, monitor, target).reason == "sidecar missing"
        assert f"left s3://{target.bucket}/{key} as it is (the labelling copy failed" in (
            caplog.text
        )


def test_a_failed_part_whose_abort_fails_once_leaves_no_upload(add_monitor, hook, seaweed, target):
    monitor = add_monitor(11 * MIB)
    s3 = seaweed.client()
    inject(s3, "UploadPart")
    aborts = inject(s3, "AbortMultipartUpload")

    outcome = archive_record(hook, s3, MONITORS, monitor, target)

    assert outcome.status == "failed" and outcome.error.startswith("upload: ClientError")
    assert aborts[0] == 2  # refused once, then done
    assert no_uploads(s3, target.bucket)
    assert s3.list_objects_v2(Bucket=target.bucket).get("KeyCount") == 0


@pytest.mark.parametrize("failing", ["UploadPart", "CompleteMultipartUpload"])
def test_a_failed_spooled_upload_is_aborted_by_its_own_id(seaweed, target, failing):
    s3 = seaweed.client()
    other = s3.create_multipart_upload(Bucket=target.bucket, Key="voipstudio/x.pcap")["UploadId"]
    body = bytes(range(256)) * (6 * MIB // 256)
    args = {"ContentType": "application/vnd.tcpdump.pcap",
            "Metadata": {"sha256": hashlib.sha256(body).hexdigest()}}  # fmt: skip
    inject(s3, failing)
    aborts = inject(s3, "AbortMultipartUpload")

    with pytest.raises(ClientError):
        upload_spooled(s3, io.BytesIO(body), "voipstudio/x.pcap", args, target, 5 * MIB)

    assert aborts[0] == 2
    uploads = s3.list_multipart_uploads(Bucket=target.bucket).get("Uploads", [])
    # Its own upload is gone; another run's upload of the same key is not touched.
    assert [u["UploadId"] for u in uploads] == [other]
    assert s3.list_objects_v2(Bucket=target.bucket).get("KeyCount") == 0
    s3.abort_multipart_upload(Bucket=target.bucket, Key="voipstudio/x.pcap", UploadId=other)
