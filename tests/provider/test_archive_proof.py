"""What proves an archive: S3's own checksum of the bytes, a sidecar of that very record.

Each tampering below is done the way someone with write access to the bucket could do it,
then ``verify_archive`` must say what is wrong, retention must keep the source record and
audit why, and the archiver must keep the stored copy aside before replacing it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Callable

import pytest
from botocore.awsrequest import AWSResponse
from voipstudio_provider.engine.archive.writer import ArchiveTarget, archive_record, verify_archive
from voipstudio_provider.engine.evidence.audit import audit_part, read_audit
from voipstudio_provider.engine.layout import ARCHIVE_KINDS, archive_key, sidecar_key
from voipstudio_provider.engine.subjects.legal_hold import LegalHold
from voipstudio_provider.tasks.retention import SourceDeleter

MONITORS = ARCHIVE_KINDS["monitors"]
VOICEMAIL = ARCHIVE_KINDS["voicemessages"]
CDR_PCAPS = ARCHIVE_KINDS["cdr_pcaps"]
DAG, RUN = "voipstudio_retention", "manual__2026-11-20T00:00:00+00:00"


@pytest.fixture
def target(bucket) -> ArchiveTarget:
    return ArchiveTarget(bucket=bucket, prefix=f"proof-{uuid.uuid4().hex[:8]}")


def checksum(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def read(s3, target: ArchiveTarget, key: str) -> bytes:
    return s3.get_object(Bucket=target.bucket, Key=key)["Body"].read()


def keys_below(s3, target: ArchiveTarget, folder: str) -> list[str]:
    listing = s3.list_objects_v2(Bucket=target.bucket, Prefix=f"{target.prefix}/{folder}/")
    return sorted(o["Key"] for o in listing.get("Contents", []))


def rewrite(s3, target, key: str, body: bytes, *, with_checksum: bool = True, **args) -> None:
    """PUT ``body`` at ``key`` keeping the stored object's type and metadata."""
    head = s3.head_object(Bucket=target.bucket, Key=key)
    extra = {"ChecksumSHA256": checksum(body)} if with_checksum else {}
    s3.put_object(
        Bucket=target.bucket,
        Key=key,
        Body=body,
        ContentType=head["ContentType"],
        Metadata=head["Metadata"],
        **extra,
        **args,
    )


def sidecar_of(s3, target, kind, record) -> dict:
    return json.loads(read(s3, target, sidecar_key(target.prefix, kind, record)))


def put_sidecar(s3, target, kind, record, document: dict, **args) -> None:
    body = json.dumps(document).encode()
    s3.put_object(
        Bucket=target.bucket,
        Key=sidecar_key(target.prefix, kind, record),
        Body=body,
        ContentType="application/json",
        ChecksumSHA256=checksum(body),
        **args,
    )


# -- the tamperings: each changes the archive of ``record`` and names the reason ----------


def replace_bytes_under_copied_metadata(s3, target, record) -> str:
    key = archive_key(target.prefix, MONITORS, record)
    body = read(s3, target, key)
    forged = body[:10] + bytes(b ^ 0xFF for b in body[10:])  # same length, same sha256 metadata
    rewrite(s3, target, key, forged)
    return f"S3 checksum {checksum(forged)} != "


def remove_sidecar(s3, target, record) -> str:
    s3.delete_object(Bucket=target.bucket, Key=sidecar_key(target.prefix, MONITORS, record))
    return "sidecar missing"


def truncate_object(s3, target, record) -> str:
    key = archive_key(target.prefix, MONITORS, record)
    body = read(s3, target, key)
    rewrite(s3, target, key, body[:-1000])
    return f"size {len(body) - 1000} != record size {record['size']}"


def sidecar_of_another_record(s3, target, record) -> str:
    """The same id and day, but another caller, time and duration."""
    sidecar = sidecar_of(s3, target, MONITORS, record)
    moment = record["timestamp"]
    other_time = moment[:11] + ("23:59:59" if moment[11:] != "23:59:59" else "00:00:00")
    other = {**sidecar, "caller": "+441632960999", "timestamp": other_time, "duration": 1}
    put_sidecar(s3, target, MONITORS, record, other)
    return f"sidecar timestamp '{other_time}' != record timestamp"


def write_without_checksum(s3, target, record) -> str:
    """The same bytes and metadata, written by a tool that sends no SHA-256: S3 then keeps
    a CRC32 only, as a bucket that keeps no SHA-256 checksums would."""
    key = archive_key(target.prefix, MONITORS, record)
    rewrite(s3, target, key, read(s3, target, key), with_checksum=False)
    return "unverifiable: the bucket reports no SHA-256 checksum"


def sidecar_in_glacier(s3, target, record) -> str:
    """A sidecar written in GLACIER (as this provider did before sidecars kept a readable
    class): S3 refuses to read it until it is restored."""
    put_sidecar(
        s3,
        target,
        MONITORS,
        record,
        sidecar_of(s3, target, MONITORS, record),
        StorageClass="GLACIER",
    )
    return "unverifiable: the sidecar is in GLACIER and cannot be read now"


TAMPERINGS: dict[str, Callable[..., str]] = {
    f.__name__: f
    for f in (
        replace_bytes_under_copied_metadata,
        remove_sidecar,
        truncate_object,
        sidecar_of_another_record,
        write_without_checksum,
        sidecar_in_glacier,
    )
}


@pytest.fixture
def archived(hook, s3, target, truth) -> Callable[[int], list[dict]]:
    """Archive the ``count`` smallest monitors in the test's prefix."""

    def archive(count: int) -> list[dict]:
        records = sorted(truth("monitors"), key=lambda m: m["size"])[:count]
        for record in records:
            outcome = archive_record(hook, s3, MONITORS, record, target)
            assert outcome.status == "archived", outcome.error
        return records

    return archive


def test_an_intact_archive_is_verified_on_s3s_checksum(archived, s3, target):
    (record,) = archived(1)
    key = archive_key(target.prefix, MONITORS, record)
    head = s3.head_object(Bucket=target.bucket, Key=key, ChecksumMode="ENABLED")
    sidecar = sidecar_of(s3, target, MONITORS, record)

    verification = verify_archive(s3, MONITORS, record, target)

    assert (verification.ok, verification.reason) == (True, "verified")
    assert verification.s3_checksum == head["ChecksumSHA256"] == sidecar["checksum_sha256"]
    assert verification.s3_checksum == checksum(read(s3, target, key))
    assert verification.etag == head["ETag"] and sidecar["part_size"] is None
    assert verify_archive(s3, MONITORS, record, target, verify="download").ok


@pytest.mark.parametrize("tampering", sorted(TAMPERINGS))
def test_each_tampering_fails_verification_with_its_reason(archived, s3, target, tampering):
    (record,) = archived(1)
    expected = TAMPERINGS[tampering](s3, target, record)

    verification = verify_archive(s3, MONITORS, record, target)

    assert not verification.ok
    assert verification.reason.startswith(expected), verification.reason


@pytest.mark.parametrize("tampering", sorted(TAMPERINGS))
def test_retention_keeps_the_source_of_a_tampered_archive_and_says_why(
    archived, hook, s3, target, truth, tampering
):
    tampered, intact = archived(2)
    expected = TAMPERINGS[tampering](s3, target, tampered)

    with audit_part(s3, target.bucket, target.prefix, DAG, RUN, "monitors.try1") as audit:
        deleter = SourceDeleter(
            hook, s3, target, audit, "monitors", hold=LegalHold(), dry_run=False, budget=10
        )
        deleter.run([tampered, intact])
        audit.upload(s3, target.bucket, audit.key)
        lines = {line["id"]: line for line in read_audit(s3, target.bucket, audit.key)}

    at_source = {m["id"] for m in truth("monitors")}
    assert tampered["id"] in at_source and intact["id"] not in at_source
    kept = lines[tampered["id"]]
    assert kept["action"] == "skipped"
    # No checksum to compare (or an object that cannot be read now) is its own reason.
    unverifiable = expected.startswith("unverifiable")
    assert kept["reason"] == ("archive_unverifiable" if unverifiable else "archive_unverified")
    assert kept["detail"].startswith(expected)
    assert kept["archive_key"] == archive_key(target.prefix, MONITORS, tampered)
    assert (lines[intact["id"]]["action"], lines[intact["id"]]["reason"]) == (
        "deleted",
        "archive_verified",
    )
    assert deleter.deleted == 1


@pytest.mark.parametrize("field", ["caller", "called", "duration", "live_id", "size"])
def test_a_sidecar_that_describes_another_record_names_the_field(archived, s3, target, field):
    (record,) = archived(1)
    sidecar = sidecar_of(s3, target, MONITORS, record)
    put_sidecar(s3, target, MONITORS, record, {**sidecar, field: 424242})

    verification = verify_archive(s3, MONITORS, record, target)

    assert not verification.ok
    assert verification.reason == f"sidecar {field} 424242 != record {field} {record[field]!r}"


def test_identity_is_compared_by_value_not_by_json_type(archived, s3, target):
    (record,) = archived(1)
    sidecar = sidecar_of(s3, target, MONITORS, record)
    as_strings = {**sidecar, "id": str(record["id"]), "duration": str(record["duration"])}
    put_sidecar(s3, target, MONITORS, record, as_strings)
    assert verify_archive(s3, MONITORS, record, target).ok

    without_live_id = {k: v for k, v in sidecar.items() if k != "live_id"}
    put_sidecar(s3, target, MONITORS, record, without_live_id)
    assert verify_archive(s3, MONITORS, {**record, "live_id": None}, target).ok
    verification = verify_archive(s3, MONITORS, record, target)
    assert verification.reason == f"sidecar live_id None != record live_id {record['live_id']!r}"


def test_storage_that_keeps_no_checksums_is_unverifiable_unless_read_back(
    archived, seaweed, target
):
    """A store that keeps no checksums is not at hand: a client whose HEAD answers lose
    ``ChecksumSHA256`` (a botocore event handler) plays one, with every byte real."""
    (record,) = archived(1)
    s3 = seaweed.client()

    def strip_checksums(parsed, **_):
        parsed.pop("ChecksumSHA256", None)

    s3.meta.events.register("after-call.s3.HeadObject", strip_checksums)

    verification = verify_archive(s3, MONITORS, record, target)
    assert not verification.ok and verification.unverifiable
    assert verification.reason == "unverifiable: the bucket reports no SHA-256 checksum"
    assert verify_archive(s3, MONITORS, record, target, verify="download").ok

    key = archive_key(target.prefix, MONITORS, record)
    body = read(s3, target, key)
    rewrite(s3, target, key, body[:10] + bytes(b ^ 0xFF for b in body[10:]))
    by_reading = verify_archive(s3, MONITORS, record, target, verify="download")
    assert not by_reading.ok and by_reading.reason.startswith("sha256 of the stored bytes ")


def test_a_glacier_binary_verifies_on_its_checksum_but_cannot_be_read_back(hook, s3, bucket, truth):
    record = min(truth("monitors"), key=lambda m: m["size"])
    target = ArchiveTarget(
        bucket=bucket, prefix=f"cold-{uuid.uuid4().hex[:8]}", storage_class="GLACIER"
    )
    assert archive_record(hook, s3, MONITORS, record, target).status == "archived"
    key = archive_key(target.prefix, MONITORS, record)
    assert s3.head_object(Bucket=bucket, Key=key)["StorageClass"] == "GLACIER"

    assert verify_archive(s3, MONITORS, record, target).ok  # HEAD works on GLACIER objects
    by_reading = verify_archive(s3, MONITORS, record, target, verify="download")
    assert not by_reading.ok
    assert by_reading.reason == "unverifiable: the object is in GLACIER and cannot be read now"


def test_a_sidecar_s3_refuses_to_read_is_unverifiable_not_an_error(archived, seaweed, target):
    """Real S3 answers ``InvalidObjectState`` for an object in GLACIER; SeaweedFS serves it.
    A botocore handler gives the sidecar's GET that answer."""
    (record,) = archived(1)
    s3 = seaweed.client()
    side = sidecar_key(target.prefix, MONITORS, record)

    def remember_key(params, context, **_):
        context["object_key"] = params.get("Key")

    def refuse(context, **_):
        if context.get("object_key") == side:
            error = {"Code": "InvalidObjectState", "Message": "The operation is not valid"}
            return AWSResponse("", 403, {}, None), {
                "Error": error,
                "StorageClass": "GLACIER",
                "ResponseMetadata": {"HTTPStatusCode": 403},
            }
        return None

    s3.meta.events.register("before-parameter-build.s3.GetObject", remember_key)
    s3.meta.events.register("before-call.s3.GetObject", refuse)

    verification = verify_archive(s3, MONITORS, record, target)

    assert not verification.ok
    assert verification.reason == "unverifiable: the sidecar is in GLACIER and cannot be read now"


def test_voicemail_without_size_is_proven_by_checksum_and_sidecar_size(hook, s3, target, truth):
    record = truth("voicemessages")[0]
    assert archive_record(hook, s3, VOICEMAIL, record, target).status == "archived"
    assert verify_archive(s3, VOICEMAIL, record, target).ok
    key = archive_key(target.prefix, VOICEMAIL, record)
    body = read(s3, target, key)
    rewrite(s3, target, key, body[:-1])

    verification = verify_archive(s3, VOICEMAIL, record, target)

    assert verification.reason == f"size {len(body) - 1} != sidecar size {len(body)}"


def test_a_pcap_is_proven_by_the_checksum_recorded_at_upload(hook, s3, target, truth):
    record = truth("cdrs")[0]
    outcome = archive_record(hook, s3, CDR_PCAPS, record, target)
    assert outcome.status == "archived", outcome.error
    head = s3.head_object(Bucket=target.bucket, Key=outcome.key, ChecksumMode="ENABLED")
    assert head["Metadata"]["checksum-sha256"] == head["ChecksumSHA256"] == outcome.s3_checksum
    assert verify_archive(s3, CDR_PCAPS, record, target).ok

    body = read(s3, target, outcome.key)
    rewrite(s3, target, outcome.key, bytes(b ^ 0xFF for b in body))

    verification = verify_archive(s3, CDR_PCAPS, record, target)
    assert not verification.ok
    assert verification.reason.startswith(f"S3 checksum {checksum(bytes(b ^ 0xFF for b in body))}")


# -- an archived copy is never replaced ---------------------------------------------------


def test_a_verified_copy_is_never_written_again(archived, hook, s3, target):
    (record,) = archived(1)
    key = archive_key(target.prefix, MONITORS, record)
    before = s3.head_object(Bucket=target.bucket, Key=key)

    outcome = archive_record(hook, s3, MONITORS, record, target)

    after = s3.head_object(Bucket=target.bucket, Key=key)
    assert outcome.status == "skipped"
    assert (outcome.etag, outcome.s3_checksum) == (
        before["ETag"],
        sidecar_of(s3, target, MONITORS, record)["checksum_sha256"],
    )
    assert after["LastModified"] == before["LastModified"]
    assert keys_below(s3, target, "quarantine") == []


def test_a_copy_that_fails_verification_is_kept_aside_then_replaced(
    archived, hook, s3, target, sandbox
):
    (record,) = archived(1)
    key = archive_key(target.prefix, MONITORS, record)
    original = read(s3, target, key)
    replace_bytes_under_copied_metadata(s3, target, record)
    forged = read(s3, target, key)
    forged_sidecar = read(s3, target, sidecar_key(target.prefix, MONITORS, record))

    outcome = archive_record(hook, s3, MONITORS, record, target)

    assert outcome.status == "archived", outcome.error
    assert read(s3, target, key) == original
    assert verify_archive(s3, MONITORS, record, target).ok
    kept = keys_below(s3, target, "quarantine")
    assert len(kept) == 2
    day_folder = key.rsplit("/", 1)[0].replace(target.prefix, f"{target.prefix}/quarantine", 1)
    binary = next(k for k in kept if k.endswith(".mp3"))
    sidecar = next(k for k in kept if k.endswith(".json"))
    assert binary.startswith(f"{day_folder}/{record['id']}.")
    assert read(s3, target, binary) == forged
    assert read(s3, target, sidecar) == forged_sidecar
    assert s3.head_object(Bucket=target.bucket, Key=binary)["Metadata"]["sha256"] == (
        hashlib.sha256(original).hexdigest()  # the copied metadata, kept as found
    )


def test_a_copy_written_without_checksum_is_read_back_and_kept(archived, hook, s3, target):
    (record,) = archived(1)
    write_without_checksum(s3, target, record)

    outcome = archive_record(hook, s3, MONITORS, record, target)

    assert outcome.status == "skipped", outcome.error
    assert keys_below(s3, target, "quarantine") == []


def test_a_copy_that_cannot_be_read_now_is_left_alone_and_the_record_fails(
    archived, hook, s3, target
):
    (record,) = archived(1)
    sidecar_in_glacier(s3, target, record)

    outcome = archive_record(hook, s3, MONITORS, record, target)

    assert outcome.status == "failed"
    assert outcome.error.startswith("verify: unverifiable: the sidecar is in GLACIER")
    assert keys_below(s3, target, "quarantine") == []
