"""Archiving binaries from the sandbox into SeaweedFS, and verifying what is there."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib
import json
import logging
import urllib.request
import uuid

import pytest
from voipstudio_provider.engine.archive.writer import (
    ArchiveOutcome,
    ArchiveTarget,
    archive_and_summarize,
    archive_batch,
    archive_record,
    summarize,
    verify_archive,
)
from voipstudio_provider.engine.layout import ARCHIVE_KINDS, archive_key, sidecar_key

MONITORS = ARCHIVE_KINDS["monitors"]
MP3_PATHS = "/v1.1/voipstudio/monitors/*.mp3"
MIB = 1024 * 1024


@pytest.fixture
def target(bucket) -> ArchiveTarget:
    """A prefix of its own for each test."""
    return ArchiveTarget(bucket=bucket, prefix=f"archive-{uuid.uuid4().hex[:8]}")


def stored_keys(s3, target: ArchiveTarget) -> list[str]:
    listing = s3.list_objects_v2(Bucket=target.bucket, Prefix=target.prefix + "/")
    return [o["Key"] for o in listing.get("Contents", [])]


def truth(sandbox, resource: str) -> list[dict]:
    return sandbox.control("GET", f"records/{resource}")["data"]


def sandbox_bytes(sandbox, kind, record_id: int) -> bytes:
    """The body the API serves, fetched without the provider."""
    path = kind.endpoint.path.replace("{id}", str(record_id))
    request = urllib.request.Request(
        sandbox.base_url + path, headers={"X-Auth-Token": sandbox.token}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.read()


def requests_to(sandbox, suffix: str) -> list[dict]:
    return [e for e in sandbox.control("GET", "requests")["data"] if e["path"].endswith(suffix)]


def set_faults(sandbox, *rules: dict) -> None:
    sandbox.control("PUT", "faults", {"seed": 7, "rules": list(rules)})


def no_multipart_uploads(s3, target: ArchiveTarget) -> bool:
    listing = s3.list_multipart_uploads(Bucket=target.bucket, Prefix=target.prefix + "/")
    return not listing.get("Uploads")


def small_monitors(sandbox, count: int) -> list[dict]:
    monitors = sorted(truth(sandbox, "monitors"), key=lambda m: m["size"])
    assert len(monitors) >= count, "the seeded sandbox has too few monitors"
    return monitors[:count]


def test_monitor_is_archived_with_sha256_metadata_and_sidecar(sandbox, hook, s3, target):
    monitor = small_monitors(sandbox, 1)[0]

    outcome = archive_record(hook, s3, MONITORS, monitor, target)

    expected = sandbox_bytes(sandbox, MONITORS, monitor["id"])
    key = archive_key(target.prefix, MONITORS, monitor)
    assert (outcome.status, outcome.key, outcome.error) == ("archived", key, None)
    stored = s3.get_object(Bucket=target.bucket, Key=key)
    body = stored["Body"].read()
    assert body == expected and len(body) == monitor["size"] == outcome.size
    assert stored["Metadata"]["sha256"] == hashlib.sha256(expected).hexdigest() == outcome.sha256
    assert stored["Metadata"]["size"] == str(len(expected))
    assert stored["ContentType"] == "audio/mpeg"

    sidecar_object = s3.get_object(
        Bucket=target.bucket, Key=sidecar_key(target.prefix, MONITORS, monitor)
    )
    assert sidecar_object["ContentType"] == "application/json"
    sidecar = json.loads(sidecar_object["Body"].read())
    assert {k: sidecar[k] for k in monitor} == monitor
    assert sidecar["sha256"] == outcome.sha256 and sidecar["size"] == len(expected)
    archived_at = dt.datetime.fromisoformat(sidecar["archived_at"])
    assert archived_at.utcoffset() == dt.timedelta(0)
    assert verify_archive(s3, MONITORS, monitor, target).reason == "verified"


@pytest.mark.parametrize("kind_name", sorted(ARCHIVE_KINDS))
def test_every_kind_lands_at_its_layout_key(sandbox, hook, s3, target, kind_name):
    kind = ARCHIVE_KINDS[kind_name]
    record = truth(sandbox, kind.resource)[0]

    outcome = archive_record(hook, s3, kind, record, target)

    assert outcome.status == "archived", outcome.error
    assert outcome.key == archive_key(target.prefix, kind, record)
    assert outcome.key.endswith(f"/{record['id']}.{kind.endpoint.suffix}")
    stored = s3.get_object(Bucket=target.bucket, Key=outcome.key)
    body = stored["Body"].read()
    assert body == sandbox_bytes(sandbox, kind, record["id"])
    assert stored["Metadata"]["sha256"] == hashlib.sha256(body).hexdigest()
    assert stored["ContentType"] == kind.content_type
    assert len(stored_keys(s3, target)) == (2 if kind.sidecar else 1)


def test_rerun_skips_verified_records_without_downloading(sandbox, hook, s3, target):
    monitors = small_monitors(sandbox, 3)
    first = archive_batch(hook, s3, MONITORS, monitors, target, max_streams=2)
    assert [o.status for o in first] == ["archived"] * 3
    sandbox.control("DELETE", "requests")

    s3_requests: list[str] = []
    s3.meta.events.register(
        "before-send.s3", lambda request, **_: s3_requests.append(request.method)
    )

    again = archive_batch(hook, s3, MONITORS, monitors, target, max_streams=2)

    assert [o.status for o in again] == ["skipped"] * 3
    assert [(o.size, o.etag) for o in again] == [(o.size, o.etag) for o in first]
    assert requests_to(sandbox, ".mp3") == []
    # One listing per date folder, and nothing else: no HEAD, no PUT.
    days = {archive_key(target.prefix, MONITORS, m).rsplit("/", 1)[0] for m in monitors}
    assert s3_requests == ["GET"] * len(days)


@pytest.mark.parametrize("fault", ["truncate", "drop"])
def test_broken_bodies_are_downloaded_again_until_complete(sandbox, hook, s3, target, fault):
    monitor = small_monitors(sandbox, 1)[0]
    set_faults(
        sandbox, {"path": MP3_PATHS, "methods": ["GET"], "kind": fault, "rate": 1, "times": 2}
    )

    outcome = archive_record(hook, s3, MONITORS, monitor, target)

    assert outcome.status == "archived", outcome.error
    body = s3.get_object(Bucket=target.bucket, Key=outcome.key)["Body"].read()
    assert body == sandbox_bytes(sandbox, MONITORS, monitor["id"])
    tries = requests_to(sandbox, f"/{monitor['id']}.mp3")
    assert [t["fault"] for t in tries[:3]] == [fault, fault, None]


def test_a_body_that_never_arrives_whole_fails_and_stores_nothing(sandbox, hook, s3, target):
    monitor = small_monitors(sandbox, 1)[0]
    set_faults(sandbox, {"path": MP3_PATHS, "methods": ["GET"], "kind": "truncate", "rate": 1})

    outcome = archive_record(hook, s3, MONITORS, monitor, target)

    assert outcome.status == "failed"
    assert outcome.error.startswith("download: VoIPstudioIncompleteDownloadError")
    assert sandbox.token not in outcome.error
    assert stored_keys(s3, target) == []
    assert no_multipart_uploads(s3, target)
    assert verify_archive(s3, MONITORS, monitor, target).reason == "missing"


def test_large_bodies_go_up_in_checked_parts(add_monitor, hook, s3, target):
    size = 6 * MIB + 123
    monitor = add_monitor(size)
    target = ArchiveTarget(bucket=target.bucket, prefix=target.prefix, chunk_size=5 * MIB)

    outcome = archive_record(hook, s3, MONITORS, monitor, target)

    assert outcome.status == "archived", outcome.error
    head = s3.head_object(Bucket=target.bucket, Key=outcome.key, ChecksumMode="ENABLED")
    assert head["ContentLength"] == size
    assert head["ChecksumSHA256"].endswith("-2")  # S3 checked each of the two parts
    body = s3.get_object(Bucket=target.bucket, Key=outcome.key)["Body"].read()
    side = sidecar_key(target.prefix, MONITORS, monitor)
    sidecar = json.loads(s3.get_object(Bucket=target.bucket, Key=side)["Body"].read())
    assert hashlib.sha256(body).hexdigest() == sidecar["sha256"] == outcome.sha256
    assert head["ChecksumSHA256"] == sidecar["checksum_sha256"] == outcome.s3_checksum
    # Labelled once complete, like a body stored in one PUT.
    assert head["Metadata"] == {"sha256": outcome.sha256, "size": str(size)}
    assert head["ContentType"] == MONITORS.content_type
    assert no_multipart_uploads(s3, target)


def test_a_large_download_broken_mid_stream_leaves_no_object_and_no_parts(
    sandbox, add_monitor, hook, s3, target
):
    size = 23 * MIB
    monitor = add_monitor(size)
    target = ArchiveTarget(bucket=target.bucket, prefix=target.prefix, chunk_size=5 * MIB)
    # Every try breaks after nine tenths of the body: four parts were already uploaded.
    set_faults(sandbox, {"path": MP3_PATHS, "methods": ["GET"], "kind": "truncate", "rate": 1})

    outcome = archive_record(hook, s3, MONITORS, monitor, target)

    assert outcome.status == "failed"
    assert outcome.error.startswith("download: VoIPstudioIncompleteDownloadError")
    tries = requests_to(sandbox, f"/{monitor['id']}.mp3")
    assert len(tries) == hook.max_attempts and all(t["fault"] == "truncate" for t in tries)
    assert all(t["bytes"] > 4 * 5 * MIB for t in tries)  # parts had gone up each time
    assert stored_keys(s3, target) == []
    assert no_multipart_uploads(s3, target)


def test_a_large_download_broken_once_is_archived_whole_on_the_next_try(
    sandbox, add_monitor, hook, s3, target
):
    size = 12 * MIB + 1
    monitor = add_monitor(size)
    target = ArchiveTarget(bucket=target.bucket, prefix=target.prefix, chunk_size=5 * MIB)
    set_faults(
        sandbox, {"path": MP3_PATHS, "methods": ["GET"], "kind": "truncate", "rate": 1, "times": 1}
    )

    outcome = archive_record(hook, s3, MONITORS, monitor, target)

    assert outcome.status == "archived", outcome.error
    body = s3.get_object(Bucket=target.bucket, Key=outcome.key)["Body"].read()
    assert body == sandbox_bytes(sandbox, MONITORS, monitor["id"])
    assert [t["fault"] for t in requests_to(sandbox, f"/{monitor['id']}.mp3")][:2] == [
        "truncate",
        None,
    ]
    assert no_multipart_uploads(s3, target)
    assert verify_archive(s3, MONITORS, monitor, target).ok


def test_a_refused_multipart_upload_leaves_no_object_and_no_parts(add_monitor, hook, s3, target):
    monitor = add_monitor(6 * MIB)
    # Object Lock on a bucket without it: the server refuses the upload.
    locked = ArchiveTarget(
        bucket=target.bucket,
        prefix=target.prefix,
        object_lock_mode="GOVERNANCE",
        object_lock_days=1,
        chunk_size=5 * MIB,
    )

    outcome = archive_record(hook, s3, MONITORS, monitor, locked)

    assert outcome.status == "failed"
    assert outcome.error.startswith("upload: ")
    assert stored_keys(s3, target) == []
    assert no_multipart_uploads(s3, target)


def test_verification_names_what_is_wrong(sandbox, hook, s3, target):
    monitor = small_monitors(sandbox, 1)[0]
    assert verify_archive(s3, MONITORS, monitor, target).reason == "missing"
    archived = archive_record(hook, s3, MONITORS, monitor, target)
    key, side = archived.key, sidecar_key(target.prefix, MONITORS, monitor)
    body = s3.get_object(Bucket=target.bucket, Key=key)["Body"].read()
    sidecar = json.loads(s3.get_object(Bucket=target.bucket, Key=side)["Body"].read())
    good = verify_archive(s3, MONITORS, monitor, target)
    assert (good.ok, good.reason, good.size, good.sha256) == (
        True, "verified", len(body), archived.sha256,
    )  # fmt: skip

    def put(data: bytes, content_type: str = "audio/mpeg", **metadata: str) -> None:
        s3.put_object(
            Bucket=target.bucket,
            Key=key,
            Body=data,
            ContentType=content_type,
            Metadata=metadata,
            ChecksumSHA256=base64.b64encode(hashlib.sha256(data).digest()).decode(),
        )

    def reason() -> str:
        verification = verify_archive(s3, MONITORS, monitor, target)
        assert not verification.ok
        return verification.reason

    put(b"", sha256=archived.sha256)
    assert reason() == "empty object"
    # An error page that was stored as the recording, with a digest of its own.
    put(b'{"message": "Too Many Requests"}', "application/json", sha256=archived.sha256)
    assert reason() == "content type application/json is not audio/mpeg"
    put(body[:-100], sha256=archived.sha256)
    assert reason() == f"size {len(body) - 100} != record size {monitor['size']}"
    put(body, sha256="0" * 64)
    assert reason() == "sha256 metadata differs from sidecar"
    put(body)  # metadata is not evidence: without it, S3's checksum still proves the bytes
    assert verify_archive(s3, MONITORS, monitor, target).ok
    put(body, sha256=archived.sha256)
    s3.put_object(Bucket=target.bucket, Key=side, Body=json.dumps({**sidecar, "size": 1}))
    assert reason() == f"sidecar size 1 != record size {monitor['size']}"
    s3.put_object(Bucket=target.bucket, Key=side, Body=json.dumps({**sidecar, "sha256": "0"}))
    assert reason() == "sha256 metadata differs from sidecar"
    s3.put_object(Bucket=target.bucket, Key=side, Body=b"{not json")
    assert reason() == "sidecar is not valid JSON"
    s3.delete_object(Bucket=target.bucket, Key=side)
    assert reason() == "sidecar missing"

    repaired = archive_record(hook, s3, MONITORS, monitor, target)
    assert repaired.status == "archived"
    assert verify_archive(s3, MONITORS, monitor, target).ok


def test_record_whose_size_disagrees_with_the_body_is_not_archived(sandbox, hook, s3, target):
    monitor = copy.deepcopy(small_monitors(sandbox, 1)[0])
    monitor["size"] += 1

    outcome = archive_record(hook, s3, MONITORS, monitor, target)

    assert outcome.status == "failed"
    assert f"the record's size is {monitor['size']}" in outcome.error
    assert stored_keys(s3, target) == []


def test_batch_keeps_order_and_goes_on_after_a_failure(sandbox, hook, s3, target):
    monitors = small_monitors(sandbox, 5)
    ghost = {**monitors[0], "id": 987654321}
    records = monitors[:2] + [ghost] + monitors[2:]

    outcomes = archive_batch(hook, s3, MONITORS, records, target, max_streams=3)

    assert [o.record_id for o in outcomes] == [r["id"] for r in records]
    assert [o.status for o in outcomes] == ["archived"] * 2 + ["failed"] + ["archived"] * 3
    assert "VoIPstudioNotFoundError" in outcomes[2].error
    summary = summarize(outcomes)
    assert summary["archived"] == 5 and summary["failed_ids"] == [987654321]
    assert summary["bytes"] == sum(m["size"] for m in monitors)
    assert len(stored_keys(s3, target)) == 10  # five binaries and their sidecars


def test_archive_and_summarize_counts_earlier_failures_and_logs_each(
    sandbox, hook, s3, target, caplog
):
    monitors = small_monitors(sandbox, 2)
    ghost = {**monitors[0], "id": 987654322}
    unread = ArchiveOutcome("monitors", 987654323, "failed", "", error="get: gone")
    caplog.set_level(logging.ERROR, logger="voipstudio_provider.engine.archive.writer")

    done = archive_and_summarize(
        hook, s3, MONITORS, [*monitors, ghost], target, max_streams=2, earlier=[unread]
    )

    assert [o.record_id for o in done.outcomes] == [987654323] + [m["id"] for m in monitors] + [
        987654322
    ]
    assert [o.record_id for o in done.failures] == [987654323, 987654322]
    assert done.counts == summarize(done.outcomes)
    assert done.counts["archived"] == 2 and done.counts["failed_ids"] == [987654323, 987654322]
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert "monitors 987654323 not archived: get: gone" in logged
    assert any(line.startswith("monitors 987654322 not archived: ") for line in logged)


def test_batch_logs_progress_a_skip_line_and_one_summary(sandbox, hook, s3, target, caplog):
    monitors = small_monitors(sandbox, 4)
    caplog.set_level(logging.INFO, logger="voipstudio_provider.engine.archive.writer")

    archive_batch(hook, s3, MONITORS, monitors, target, max_streams=2, progress_interval=0)

    lines = [r.getMessage() for r in caplog.records]
    size_mb = sum(m["size"] for m in monitors) / 1e6
    (summary,) = [line for line in lines if "batch done" in line]
    counts = "4 archived, 0 skipped (already archived), 0 failed"
    assert summary.startswith(f"monitors batch done: {counts}, {size_mb:.1f} MB in ")
    progress = [line for line in lines if "batch progress" in line]
    assert progress and all(" of 4 done, " in line for line in progress)
    assert not any("skipped as already archived" in line for line in lines)
    assert not any(str(monitors[0]["id"]) in line for line in lines)  # no line per record

    caplog.clear()
    ghost = {**monitors[0], "id": 987654321}
    archive_batch(hook, s3, MONITORS, [*monitors, ghost], target, max_streams=2)

    lines = [r.getMessage() for r in caplog.records]
    ids = ", ".join(str(m["id"]) for m in monitors)
    assert f"monitors: 4 skipped as already archived: {ids}" in lines
    (summary,) = [line for line in lines if "batch done" in line]
    assert "0 archived, 4 skipped (already archived), 1 failed, 0.0 MB in " in summary
    assert not any("batch progress" in line for line in lines)  # 30 s between two


def test_a_record_whose_sidecar_is_refused_is_failed_not_archived(sandbox, hook, s3, target):
    monitors = small_monitors(sandbox, 3)
    refused = sidecar_key(target.prefix, MONITORS, monitors[1])

    def refuse(params, **_):
        if params.get("Key") == refused:
            raise RuntimeError("the sidecar PUT was refused")

    s3.meta.events.register("provide-client-params.s3.PutObject", refuse)
    try:
        outcomes = archive_batch(hook, s3, MONITORS, monitors, target, max_streams=2)
    finally:
        s3.meta.events.unregister("provide-client-params.s3.PutObject", refuse)

    assert [o.status for o in outcomes] == ["archived", "failed", "archived"]
    assert outcomes[1].error == "check: RuntimeError: the sidecar PUT was refused"
    assert refused not in stored_keys(s3, target)
    assert not verify_archive(s3, MONITORS, monitors[1], target).ok
    again = archive_batch(hook, s3, MONITORS, monitors, target, max_streams=2)
    assert [o.status for o in again] == ["skipped", "archived", "skipped"]
    assert verify_archive(s3, MONITORS, monitors[1], target).ok


@pytest.mark.parametrize(
    "options",
    [
        {"sse": "DES"},
        {"kms_key_id": "key"},
        {"object_lock_mode": "GOVERNANCE"},
        {"object_lock_mode": "FOREVER", "object_lock_days": 1},
        {"object_lock_mode": "COMPLIANCE", "object_lock_days": 0},
        {"chunk_size": 1024},
    ],
)
def test_target_refuses_inconsistent_options(options):
    with pytest.raises(ValueError):
        ArchiveTarget(bucket="archive", **options)


def test_target_write_arguments():
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    target = ArchiveTarget(
        bucket="archive",
        sse="aws:kms",
        kms_key_id="alias/voip",
        storage_class="GLACIER_IR",
        object_lock_mode="COMPLIANCE",
        object_lock_days=30,
        tags={"team": "ops", "kind": "call recording"},
    )
    assert target.object_args(now) == {
        "ServerSideEncryption": "aws:kms",
        "SSEKMSKeyId": "alias/voip",
        "StorageClass": "GLACIER_IR",
        "ObjectLockMode": "COMPLIANCE",
        "ObjectLockRetainUntilDate": dt.datetime(2026, 1, 31, tzinfo=dt.UTC),
        "Tagging": "team=ops&kind=call+recording",
    }


def test_a_body_longer_than_the_record_says_fails_and_stores_nothing(sandbox, hook, s3, target):
    monitor = copy.deepcopy(small_monitors(sandbox, 1)[0])
    monitor["size"] -= 1

    outcome = archive_record(hook, s3, MONITORS, monitor, target)

    assert outcome.status == "failed"
    assert f"more than the record's size ({monitor['size']})" in outcome.error
    assert stored_keys(s3, target) == []
    assert len(requests_to(sandbox, f"/{monitor['id']}.mp3")) == 1  # not asked again


def test_a_body_over_the_targets_maximum_fails_and_stores_nothing(add_monitor, hook, s3, target):
    size = 6 * MIB
    monitor = add_monitor(size)
    bounded = ArchiveTarget(
        bucket=target.bucket, prefix=target.prefix, chunk_size=5 * MIB, max_size=5 * MIB
    )

    outcome = archive_record(hook, s3, MONITORS, monitor, bounded)

    assert outcome.status == "failed"
    assert f"more than the configured maximum ({5 * MIB})" in outcome.error
    assert stored_keys(s3, target) == []
    assert no_multipart_uploads(s3, target)


def test_a_multipart_sidecar_records_the_composite_checksum_s3_reports(
    add_monitor, hook, s3, target
):
    size = 11 * MIB + 5
    monitor = add_monitor(size)
    target = ArchiveTarget(bucket=target.bucket, prefix=target.prefix, chunk_size=5 * MIB)

    outcome = archive_record(hook, s3, MONITORS, monitor, target)

    assert outcome.status == "archived", outcome.error
    sidecar = json.loads(
        s3.get_object(Bucket=target.bucket, Key=sidecar_key(target.prefix, MONITORS, monitor))[
            "Body"
        ].read()
    )
    head = s3.head_object(Bucket=target.bucket, Key=outcome.key, ChecksumMode="ENABLED")
    body = s3.get_object(Bucket=target.bucket, Key=outcome.key)["Body"].read()
    parts = [hashlib.sha256(body[i : i + 5 * MIB]).digest() for i in range(0, size, 5 * MIB)]
    composite = base64.b64encode(hashlib.sha256(b"".join(parts)).digest()).decode() + "-3"
    assert sidecar["checksum_sha256"] == head["ChecksumSHA256"] == composite == outcome.s3_checksum
    assert sidecar["part_size"] == 5 * MIB
    assert verify_archive(s3, MONITORS, monitor, target).ok


def test_a_full_object_checksum_of_the_recorded_digest_proves_a_multipart_copy(
    add_monitor, hook, s3, target
):
    size = 11 * MIB + 5
    monitor = add_monitor(size)
    target = ArchiveTarget(bucket=target.bucket, prefix=target.prefix, chunk_size=5 * MIB)
    outcome = archive_record(hook, s3, MONITORS, monitor, target)
    assert outcome.status == "archived", outcome.error
    body = s3.get_object(Bucket=target.bucket, Key=outcome.key)["Body"].read()
    head = s3.head_object(Bucket=target.bucket, Key=outcome.key)

    def store(data: bytes) -> None:
        # One PUT: S3 reports a full-object SHA-256, as AWS does after the labelling copy,
        # while the sidecar still records the composite of the parts.
        s3.put_object(
            Bucket=target.bucket,
            Key=outcome.key,
            Body=data,
            ContentType=MONITORS.content_type,
            Metadata=head["Metadata"],
            ChecksumSHA256=base64.b64encode(hashlib.sha256(data).digest()).decode(),
        )

    store(body)
    verification = verify_archive(s3, MONITORS, monitor, target)
    assert verification.ok, verification.reason
    assert not verification.s3_checksum.endswith("-3")
    store(body[:-1] + bytes([body[-1] ^ 1]))  # the same size, one bit changed
    verification = verify_archive(s3, MONITORS, monitor, target)
    assert not verification.ok
    assert verification.reason.startswith("S3 checksum ")
