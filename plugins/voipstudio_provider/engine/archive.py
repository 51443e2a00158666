"""Archive VoIPstudio binaries (recordings, voicemail, PCAPs, traces) to S3 and verify them.

An archived binary is complete when S3's own SHA-256 checksum of the object at
:func:`~.layout.archive_key` equals the checksum computed from the bytes the API served,
as recorded in its JSON sidecar (or, for kinds without one, in its metadata at upload),
and the sidecar describes the very record. :func:`verify_archive`
(:mod:`~voipstudio_provider.engine.proof`) checks exactly that; :func:`archive_record` downloads
only what does not pass it, and keeps a failed copy aside before replacing it. This module
holds no Airflow operator code so that DAGs and tasks can call it with any hook and boto3
client.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import logging
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from typing import IO, Any

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError
from s3transfer.utils import ChunksizeAdjuster

from voipstudio_provider.engine.layout import ArchiveKind, archive_key, quarantine_key, sidecar_key
from voipstudio_provider.engine.proof import (
    ARCHIVE_STORAGE_CLASSES,
    CHECKSUM_METADATA,
    PART_SIZE_METADATA,
    ArchiveListing,
    Verification,
    checksum_of,
    composite_checksum,
    not_found,
    verify_archive,
)
from voipstudio_provider.engine.uploads import StreamingUpload, UploadPool
from voipstudio_provider.exceptions import VoIPstudioError, VoIPstudioIncompleteDownloadError

__all__ = [
    "ARCHIVED", "FAILED", "SKIPPED", "ArchiveOutcome", "ArchiveTarget", "Verification",
    "archive_batch", "archive_record", "put_json", "quarantine", "s3_client_for", "summarize",
    "verify_archive",
]  # fmt: skip

log = logging.getLogger(__name__)

#: S3's smallest multipart part; a smaller chunk would be raised to this by boto3 anyway.
MIN_CHUNK_SIZE = 5 * 1024 * 1024
SSE_ALGORITHMS = ("AES256", "aws:kms")
OBJECT_LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")
ARCHIVED, SKIPPED, FAILED = "archived", "skipped", "failed"
#: Seconds between two progress lines of a long batch.
PROGRESS_INTERVAL = 30.0
#: How many skipped ids the batch's skip line names.
SKIPPED_IDS_LOGGED = 10


@dataclass(frozen=True)
class ArchiveTarget:
    """Where archived objects are written, and how.

    :param bucket: the S3 bucket.
    :param prefix: the key prefix (``{p}`` in the bucket layout).
    :param sse: server-side encryption, ``AES256`` or ``aws:kms``.
    :param kms_key_id: the KMS key for ``aws:kms`` (the bucket's default key when omitted).
    :param storage_class: e.g. ``STANDARD_IA``, ``GLACIER_IR``, ``DEEP_ARCHIVE``.
    :param object_lock_mode: ``GOVERNANCE`` or ``COMPLIANCE``; the bucket must have Object
        Lock enabled.
    :param object_lock_days: days from the upload until the lock expires.
    :param tags: object tags, applied to binaries and sidecars.
    :param chunk_size: bytes a download keeps in memory before spilling to disk, and the
        multipart part size; memory per stream stays within about twice this.
    :param max_size: the most bytes one download may bring; a longer body fails the
        record as soon as it passes this (no limit when ``None``).
    """

    bucket: str
    prefix: str = "voipstudio"
    sse: str | None = None
    kms_key_id: str | None = None
    storage_class: str | None = None
    object_lock_mode: str | None = None
    object_lock_days: int | None = None
    tags: dict[str, str] | None = None
    chunk_size: int = 8 * 1024 * 1024
    max_size: int | None = None

    def __post_init__(self) -> None:
        if not self.bucket:
            raise ValueError("an archive target needs a bucket")
        if self.sse is not None and self.sse not in SSE_ALGORITHMS:
            raise ValueError(f"sse must be one of {SSE_ALGORITHMS}, not {self.sse!r}")
        if self.kms_key_id and self.sse != "aws:kms":
            raise ValueError("kms_key_id needs sse='aws:kms'")
        if self.object_lock_mode is not None and self.object_lock_mode not in OBJECT_LOCK_MODES:
            raise ValueError(f"object_lock_mode must be one of {OBJECT_LOCK_MODES}")
        if (self.object_lock_mode is None) != (self.object_lock_days is None):
            raise ValueError("object_lock_mode and object_lock_days go together")
        if self.object_lock_days is not None and self.object_lock_days < 1:
            raise ValueError("object_lock_days must be at least 1")
        if self.chunk_size < MIN_CHUNK_SIZE:
            raise ValueError(f"chunk_size must be at least {MIN_CHUNK_SIZE} bytes")
        if self.max_size is not None and self.max_size < 1:
            raise ValueError("max_size must be at least 1 byte")

    def object_args(self, now: dt.datetime | None = None) -> dict[str, Any]:
        """The S3 write arguments every archived object gets (encryption, class, lock, tags).

        :param now: the moment the Object Lock retention is counted from (default: now).
        """
        args: dict[str, Any] = {}
        if self.sse:
            args["ServerSideEncryption"] = self.sse
        if self.kms_key_id:
            args["SSEKMSKeyId"] = self.kms_key_id
        if self.storage_class:
            args["StorageClass"] = self.storage_class
        if self.object_lock_mode:
            now = now or dt.datetime.now(dt.UTC)
            args["ObjectLockMode"] = self.object_lock_mode
            args["ObjectLockRetainUntilDate"] = now + dt.timedelta(days=self.object_lock_days)
        if self.tags:
            args["Tagging"] = urllib.parse.urlencode(self.tags)
        return args

    def document_args(self, now: dt.datetime | None = None) -> dict[str, Any]:
        """:meth:`object_args` for JSON documents (sidecars, chats) and quarantine copies:
        the same encryption, lock and tags, in a storage class that can be read at once
        (the bucket's default instead of GLACIER or DEEP_ARCHIVE)."""
        args = self.object_args(now)
        if args.get("StorageClass") in ARCHIVE_STORAGE_CLASSES:
            del args["StorageClass"]
        return args


@dataclass(frozen=True)
class ArchiveOutcome:
    """What happened to one record.

    :param kind: the :class:`~.layout.ArchiveKind` name.
    :param record_id: the record's id.
    :param status: ``archived``, ``skipped`` (already verified in the bucket) or ``failed``.
    :param key: the binary's key in the bucket.
    :param size: the binary's byte count, when known.
    :param sha256: the binary's SHA-256 (hex), when known.
    :param error: why it failed, for a person to read.
    :param s3_checksum: the ``ChecksumSHA256`` S3 reports for the stored object.
    :param etag: the stored object's ETag.
    """

    kind: str
    record_id: int
    status: str
    key: str
    size: int | None = None
    sha256: str | None = None
    error: str | None = None
    s3_checksum: str | None = None
    etag: str | None = None


def _part_size(target: ArchiveTarget, size: int) -> int | None:
    """The part size of a multipart upload of ``size`` bytes, ``None`` for one PUT. It is
    what boto3 will use (raised for bodies that would need over 10,000 parts)."""
    if size < target.chunk_size:
        return None
    return ChunksizeAdjuster().adjust_chunksize(target.chunk_size, size)


def _spool_checksum(spool: IO[bytes], sha256: str, part_size: int | None) -> str:
    """The ``ChecksumSHA256`` S3 will report for the spooled body once uploaded."""
    if part_size is None:
        return checksum_of(sha256)
    spool.seek(0)
    parts = [hashlib.sha256(c).digest() for c in iter(lambda: spool.read(part_size), b"")]
    return composite_checksum(parts)


def _upload(
    s3_client, spool: IO[bytes], key: str, args: dict, target: ArchiveTarget, part_size: int | None
) -> None:
    if part_size is None:
        # One PUT: S3 checks the whole body against the SHA-256 we computed while downloading.
        digest = bytes.fromhex(args["Metadata"]["sha256"])
        args = {**args, "ChecksumSHA256": base64.b64encode(digest).decode()}
    config = TransferConfig(
        multipart_threshold=target.chunk_size,
        multipart_chunksize=part_size or target.chunk_size,
        max_concurrency=1,
        use_threads=False,
    )
    spool.seek(0)
    s3_client.upload_fileobj(spool, target.bucket, key, ExtraArgs=args, Config=config)


def _abort_multipart_uploads(s3_client, bucket: str, key: str) -> None:
    """Abort what a failed upload may have left, so no part of it is stored or billed."""
    try:
        listing = s3_client.list_multipart_uploads(Bucket=bucket, Prefix=key)
        for upload in listing.get("Uploads", []):
            if upload["Key"] == key:
                s3_client.abort_multipart_upload(
                    Bucket=bucket, Key=key, UploadId=upload["UploadId"]
                )
    except ClientError:
        log.warning("could not list or abort multipart uploads of %s", key, exc_info=True)


def _describe(stage: str, error: BaseException) -> str:
    return f"{stage}: {type(error).__name__}: {error}"


def _write_sidecar(
    s3_client, kind: ArchiveKind, record: dict, target: ArchiveTarget, stored: dict
) -> None:
    sidecar = {
        **record,
        **stored,
        "archived_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    put_json(s3_client, target, sidecar_key(target.prefix, kind, record), sidecar)


def put_json(
    s3_client, target: ArchiveTarget, key: str, document: Any, *, sha256_metadata: bool = False
) -> None:
    """Write ``document`` as JSON with the target's options and a SHA-256 that S3 checks.

    Documents are always written in a storage class that can be read at once
    (:meth:`ArchiveTarget.document_args`), with the target's encryption, lock and tags.

    :param sha256_metadata: also keep the digest as ``sha256`` metadata, for a document
        that is itself an archived copy (a chat) and is verified by reading it back.
    """
    body = json.dumps(document, sort_keys=True, default=str).encode()
    digest = hashlib.sha256(body)
    extra = {"Metadata": {"sha256": digest.hexdigest()}} if sha256_metadata else {}
    s3_client.put_object(
        Bucket=target.bucket,
        Key=key,
        Body=body,
        ContentType="application/json",
        ChecksumSHA256=base64.b64encode(digest.digest()).decode(),
        **extra,
        **target.document_args(),
    )


def _copy_args(target: ArchiveTarget) -> dict[str, Any]:
    args = target.document_args()
    if "Tagging" in args:
        args["TaggingDirective"] = "REPLACE"
    return args


def _copy_aside(s3_client, target: ArchiveTarget, source: str, destination: str) -> bool:
    """Copy ``source`` to ``destination`` (same bucket); ``False`` when there is no source."""
    try:
        s3_client.copy(
            {"Bucket": target.bucket, "Key": source},
            target.bucket,
            destination,
            ExtraArgs={"MetadataDirective": "COPY", **_copy_args(target)},
        )
    except ClientError as error:
        if not_found(error):
            return False
        raise
    return True


def quarantine(
    s3_client, kind: ArchiveKind, record: dict, target: ArchiveTarget, reason: str
) -> list[str]:
    """Keep aside what is stored for ``record`` before it is replaced: the binary and its
    sidecar are copied to :func:`~.layout.quarantine_key` keys and the event is logged.

    :param reason: why the stored copy failed verification, for the log.
    :return: the quarantine keys written.
    """
    moment = dt.datetime.now(dt.UTC)
    binary = archive_key(target.prefix, kind, record)
    sources = [binary] + ([sidecar_key(target.prefix, kind, record)] if kind.sidecar else [])
    kept = []
    for source in sources:
        destination = quarantine_key(target.prefix, source, moment)
        if _copy_aside(s3_client, target, source, destination):
            kept.append(destination)
    if kept:
        log.warning(
            "%s %s: stored copy failed verification (%s); kept aside at %s before replacing it",
            kind.name, record["id"], reason, ", ".join(kept),
        )  # fmt: skip
    return kept


def _check_stored(
    s3_client, target: ArchiveTarget, key: str, size: int, checksum: str
) -> dict[str, Any]:
    """What S3 stored at ``key``, checked against what was uploaded."""
    stored = s3_client.head_object(Bucket=target.bucket, Key=key, ChecksumMode="ENABLED")
    stored_size = int(stored["ContentLength"])
    reported = stored.get("ChecksumSHA256")
    problem = None
    if stored_size != size:
        problem = f"stored size {stored_size} != downloaded size {size}"
    elif reported and reported != checksum:
        problem = f"S3 checksum {reported} != {checksum} computed from the downloaded bytes"
    if problem:
        # Never leave an object that is not the whole body; what it replaced is in
        # quarantine.
        s3_client.delete_object(Bucket=target.bucket, Key=key)
        raise RuntimeError(problem)
    if not reported:
        log.warning(
            "s3://%s/%s: the bucket reports no SHA-256 checksum; this copy cannot be proven "
            "without reading it back (verify='download')", target.bucket, key,
        )  # fmt: skip
    return stored


def _skip_or_prepare(
    s3_client, kind: ArchiveKind, record: dict, target: ArchiveTarget, key: str, listing
) -> ArchiveOutcome | str | None:
    """A ``skipped`` outcome, an error message (the stored copy is left as it is), or
    ``None`` when the record is to be downloaded (after keeping a failed copy aside)."""
    record_id = int(record["id"])
    decision = listing.decide(kind, target.prefix, record) if listing is not None else None
    if decision == "archived":
        listed = listing.listed(key) or {}
        return ArchiveOutcome(
            kind.name, record_id, SKIPPED, key, listed.get("Size"), etag=listed.get("ETag")
        )
    if decision == "missing":
        return None
    verification = verify_archive(s3_client, kind, record, target)
    if verification.unverifiable and verification.exists:
        verification = verify_archive(s3_client, kind, record, target, verify="download")
    if verification.ok:
        return ArchiveOutcome(
            kind.name, record_id, SKIPPED, key, verification.size, verification.sha256,
            s3_checksum=verification.s3_checksum, etag=verification.etag,
        )  # fmt: skip
    if verification.unverifiable:
        return f"verify: {verification.reason}; the stored copy is kept as it is"
    if verification.reason != "missing" or kind.sidecar:
        quarantine(s3_client, kind, record, target, verification.reason)
    return None


def _stream_to_s3(
    voip_hook, s3_client, kind, record, target, key, pool, downloads=None
) -> dict[str, Any]:
    """Download ``record``'s body straight into S3 (one PUT, or parts as they arrive).

    A body that breaks cannot be rewound: the upload is aborted (no part stays) and the
    record is downloaded again from the start, as often as the hook tries a request.
    ``downloads`` (a semaphore) is held while the body downloads only: the PUT of a small
    body and the completion of a multipart upload happen while another record downloads.
    """
    attempts = max(1, int(getattr(voip_hook, "max_attempts", 3)))
    for attempt in range(1, attempts + 1):
        upload = StreamingUpload(
            s3_client,
            target.bucket,
            key,
            {"ContentType": kind.content_type, **target.object_args()},
            _part_size(target, record.get("size") or target.chunk_size) or target.chunk_size,
            pool,
        )
        try:
            with downloads or nullcontext():
                result = voip_hook.download(
                    kind.operation,
                    int(record["id"]),
                    upload,
                    expected_size=record.get("size"),
                    max_size=target.max_size,
                )
            stored = upload.finish(result.sha256)
        except VoIPstudioIncompleteDownloadError as error:
            upload.abort()
            if not error.retryable or attempt == attempts:
                raise
            log.info("%s %s: %s; downloading again", kind.name, record["id"], error)
            continue
        except BaseException:
            upload.abort()
            raise
        return {"result": result, **stored}
    raise AssertionError("unreachable")


def _accepted(s3_client, target: ArchiveTarget, key: str, stored: dict) -> None:
    """Check S3's answer to the last request of an upload.

    One PUT carried ``ChecksumSHA256``: S3 refuses a body that does not match it, so its
    acceptance proves the bytes and no HEAD is needed. For parts, S3 checked each part's
    checksum; the composite it answers must equal the one computed from the downloaded
    parts, which catches a part list that is not the body (a missing or reordered part).
    An answer without a checksum comes from storage that keeps none: the copy is kept,
    and retention will not delete its source without ``verify="download"``.
    """
    reported = stored["answer"].get("ChecksumSHA256")
    if reported and reported != stored["checksum"]:
        s3_client.delete_object(Bucket=target.bucket, Key=key)  # never keep a wrong body
        raise RuntimeError(f"S3 checksum {reported} != {stored['checksum']} of the downloaded body")
    if not reported:
        log.warning(
            "s3://%s/%s: the bucket reports no SHA-256 checksum; this copy cannot be proven "
            "without reading it back (verify='download')", target.bucket, key,
        )  # fmt: skip


def archive_record(
    voip_hook,
    s3_client,
    kind: ArchiveKind,
    record: dict,
    target: ArchiveTarget,
    *,
    listing: ArchiveListing | None = None,
    pool: UploadPool | None = None,
    downloads: threading.Semaphore | None = None,
) -> ArchiveOutcome:
    """Archive one record's binary unless it is already archived in the bucket.

    Recordings and voicemail stream straight into S3 (:mod:`~voipstudio_provider.engine.uploads`):
    one PUT for a body under ``chunk_size``, parts uploaded as they arrive for a larger
    one. PCAPs and traces, which have no sidecar, are spooled first so that their digests
    can go into the object's metadata. A verified copy is never overwritten; a stored copy
    that fails verification is first kept aside (:func:`quarantine`). An archive that
    cannot be checked because a bucket keeps no checksums is read back and hashed
    instead; one that cannot be read now (GLACIER) is left as it is and the record fails,
    naming why. Errors are caught and returned as a ``failed`` outcome.

    :param voip_hook: a :class:`~voipstudio_provider.hooks.voipstudio.VoIPstudioHook`.
    :param s3_client: a boto3 S3 client (thread-safe, may be shared).
    :param kind: what kind of binary to archive.
    :param record: the API record; a monitor's ``size`` is the expected byte count.
    :param target: where and how to write.
    :param listing: the bucket's date folders as listed by :class:`ArchiveListing`, to
        skip archived records without a request each (a HEAD where it cannot decide).
    :param pool: the batch's part uploads (a pool of two when omitted).
    :param downloads: a semaphore bounding the batch's downloads at a time; it is held
        while the body downloads, not while it is stored.
    """
    record_id = int(record["id"])
    try:
        key = archive_key(target.prefix, kind, record)
    except (KeyError, TypeError, ValueError) as error:
        return ArchiveOutcome(kind.name, record_id, FAILED, "", error=_describe("key", error))

    def failed(stage: str, error: BaseException | str) -> ArchiveOutcome:
        message = error if isinstance(error, str) else _describe(stage, error)
        log.warning("%s %s failed at %s: %s", kind.name, record_id, stage, message)
        return ArchiveOutcome(kind.name, record_id, FAILED, key, error=message)

    try:
        prepared = _skip_or_prepare(s3_client, kind, record, target, key, listing)
    except Exception as error:
        return failed("verify", error)
    if isinstance(prepared, ArchiveOutcome):
        return prepared
    if isinstance(prepared, str):
        return failed("verify", prepared)
    if not kind.sidecar:
        with downloads or nullcontext():
            return _archive_spooled(voip_hook, s3_client, kind, record, target, key, failed)

    own_pool = UploadPool(2) if pool is None else None
    try:
        stored = _stream_to_s3(
            voip_hook, s3_client, kind, record, target, key, pool or own_pool, downloads
        )
    except VoIPstudioError as error:
        return failed("download", error)
    except Exception as error:
        _abort_multipart_uploads(s3_client, target.bucket, key)
        return failed("upload", error)
    finally:
        if own_pool is not None:
            own_pool.close()

    result = stored["result"]
    try:
        _accepted(s3_client, target, key, stored)
        described = {
            "sha256": result.sha256,
            "size": result.size,
            "checksum_sha256": stored["checksum"],
            "part_size": stored["part_size"],
        }
        _write_sidecar(s3_client, kind, record, target, described)
    except Exception as error:
        return failed("check", error)
    log.debug("archived %s %s to %s (%d bytes)", kind.name, record_id, key, result.size)
    answer = stored["answer"]
    return ArchiveOutcome(
        kind.name, record_id, ARCHIVED, key, result.size, result.sha256,
        s3_checksum=answer.get("ChecksumSHA256"), etag=answer.get("ETag"),
    )  # fmt: skip


def _archive_spooled(voip_hook, s3_client, kind, record, target, key, failed) -> ArchiveOutcome:
    """A body spooled whole before its upload, so its digests go into its metadata."""
    record_id = int(record["id"])
    with tempfile.SpooledTemporaryFile(max_size=target.chunk_size) as spool:
        try:
            result = voip_hook.download(
                kind.operation,
                record_id,
                spool,
                expected_size=record.get("size"),
                max_size=target.max_size,
            )
        except Exception as error:
            return failed("download", error)

        part_size = _part_size(target, result.size)
        checksum = _spool_checksum(spool, result.sha256, part_size)
        metadata = {"sha256": result.sha256, "size": str(result.size)}
        metadata[CHECKSUM_METADATA] = checksum  # what verification compares S3's with
        if part_size:
            metadata[PART_SIZE_METADATA] = str(part_size)
        args = {
            "ContentType": result.content_type or kind.content_type,
            "Metadata": metadata,
            "ChecksumAlgorithm": "SHA256",
            **target.object_args(),
        }
        try:
            _upload(s3_client, spool, key, args, target, part_size)
        except Exception as error:
            _abort_multipart_uploads(s3_client, target.bucket, key)
            return failed("upload", error)

    try:
        # upload_fileobj returns no answer: one HEAD says what was stored.
        stored = _check_stored(s3_client, target, key, result.size, checksum)
    except Exception as error:
        return failed("check", error)
    log.debug("archived %s %s to %s (%d bytes)", kind.name, record_id, key, result.size)
    return ArchiveOutcome(
        kind.name, record_id, ARCHIVED, key, result.size, result.sha256,
        s3_checksum=stored.get("ChecksumSHA256"), etag=stored.get("ETag"),
    )  # fmt: skip


def _hook_per_thread(voip_hook) -> Callable[[], Any]:
    """A factory of hooks like ``voip_hook``: the VoIPstudio hook holds one HTTP session,
    which is not for sharing between threads."""
    settings = {
        name: getattr(voip_hook, name)
        for name in ("max_attempts", "backoff_base", "backoff_cap", "retry_after_cap")
        if hasattr(voip_hook, name)
    }
    return lambda: type(voip_hook)(voip_hook.voipstudio_conn_id, **settings)


class _BatchLog:
    """The operator's view of a batch: a progress line at most every ``interval`` seconds,
    and at the end one line of what was skipped and one summary line. No line per record."""

    def __init__(self, kind: ArchiveKind, total: int, interval: float) -> None:
        self.kind, self.total, self.interval = kind, total, interval
        self.lock = threading.Lock()
        self.start = self.last = time.monotonic()
        self.done = 0
        self.bytes = 0

    def count(self, outcome: ArchiveOutcome) -> None:
        with self.lock:
            self.done += 1
            if outcome.status == ARCHIVED:
                self.bytes += outcome.size or 0
            now = time.monotonic()
            if now - self.last < self.interval or self.done == self.total:
                return
            self.last = now
            done, moved, seconds = self.done, self.bytes, now - self.start
        log.info(
            "%s batch progress: %d of %d done, %.1f MB archived, %.1f MB/s",
            self.kind.name, done, self.total, moved / 1e6, moved / 1e6 / max(seconds, 1e-9),
        )  # fmt: skip

    def finish(self, outcomes: list[ArchiveOutcome]) -> None:
        counts = summarize(outcomes)
        skipped = [o.record_id for o in outcomes if o.status == SKIPPED]
        if skipped:
            shown = ", ".join(map(str, skipped[:SKIPPED_IDS_LOGGED]))
            more = (
                f" and {len(skipped) - SKIPPED_IDS_LOGGED} more"
                if len(skipped) > SKIPPED_IDS_LOGGED
                else ""
            )
            log.info(
                "%s: %d skipped as already archived: %s%s",
                self.kind.name, len(skipped), shown, more,
            )  # fmt: skip
        log.info(
            "%s batch done: %d archived, %d skipped (already archived), %d failed, "
            "%.1f MB in %.1f s",
            self.kind.name, counts[ARCHIVED], counts[SKIPPED], counts[FAILED],
            counts["bytes"] / 1e6, time.monotonic() - self.start,
        )  # fmt: skip


def archive_batch(
    voip_hook,
    s3_client,
    kind: ArchiveKind,
    records: Iterable[dict],
    target: ArchiveTarget,
    max_streams: int = 4,
    hook_factory: Callable[[], Any] | None = None,
    *,
    upload_streams: int | None = None,
    progress_interval: float = PROGRESS_INTERVAL,
) -> list[ArchiveOutcome]:
    """Archive many records with at most ``max_streams`` downloads at a time.

    What is already archived is found from one ``ListObjectsV2`` walk per date folder
    (:class:`ArchiveListing`). While ``max_streams`` records download, up to
    ``upload_streams`` more store what they downloaded (the binary's PUT or the end of its
    multipart upload, then the sidecar's PUT): a record is ``archived`` only once both
    were accepted. Memory stays within about ``max_streams + upload_streams`` bodies under
    ``target.chunk_size`` and ``max_streams`` times twice ``target.chunk_size`` for larger
    ones. A failed record does not stop the others. The batch logs one summary line at
    the end, the skipped ids, and a progress line at most every ``progress_interval``
    seconds.

    :param voip_hook: a VoIPstudio hook; with more than one stream, each stream uses a hook
        of its own built like this one (same connection and retry settings).
    :param s3_client: a boto3 S3 client, shared by the streams (boto3 clients are
        thread-safe); see :func:`s3_client_for` for one with enough connections.
    :param kind: what kind of binary to archive.
    :param records: the API records.
    :param target: where and how to write.
    :param max_streams: parallel downloads.
    :param hook_factory: builds the hook of each stream, instead of copying ``voip_hook``.
    :param upload_streams: records being stored while others download (default
        ``max_streams``; ``0`` stores each record in the thread that downloaded it).
    :param progress_interval: seconds between two progress lines.
    :return: one outcome per record, in the order of ``records``.
    """
    if max_streams < 1:
        raise ValueError("max_streams must be at least 1")
    upload_streams = max_streams if upload_streams is None else int(upload_streams)
    if upload_streams < 0:
        raise ValueError("upload_streams must be at least 0")
    records = list(records)
    listing = ArchiveListing(s3_client, target.bucket)
    progress = _BatchLog(kind, len(records), progress_interval)
    workers = max_streams + upload_streams if len(records) > 1 else 1
    downloads = threading.BoundedSemaphore(max_streams) if workers > max_streams else None
    with UploadPool(max_streams) as parts:

        def archive(hook, record: dict) -> ArchiveOutcome:
            outcome = archive_record(
                hook, s3_client, kind, record, target,
                listing=listing, pool=parts, downloads=downloads,
            )  # fmt: skip
            progress.count(outcome)
            return outcome

        if workers == 1:
            outcomes = [archive(voip_hook, r) for r in records]
            progress.finish(outcomes)
            return outcomes

        make_hook = hook_factory or _hook_per_thread(voip_hook)
        local = threading.local()
        made: list[Any] = []
        made_lock = threading.Lock()

        def archive_one(record: dict) -> ArchiveOutcome:
            hook = getattr(local, "hook", None)
            if hook is None:
                hook = local.hook = make_hook()
                with made_lock:
                    made.append(hook)
            return archive(hook, record)

        try:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="archive") as pool:
                outcomes = list(pool.map(archive_one, records))
        finally:
            for hook in made:
                close = getattr(hook, "close", None)
                if close is not None:
                    close()
    progress.finish(outcomes)
    return outcomes


def s3_client_for(aws_conn_id: str | None, max_streams: int):
    """A boto3 S3 client of the Amazon connection with a connection pool for every request
    :func:`archive_batch` has in flight (the connection's own botocore ``config`` kept)."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from botocore.config import Config

    base = S3Hook(aws_conn_id=aws_conn_id).conn_config.botocore_config or Config()
    # Each stream's download thread, as many storing threads, their parts, the listing.
    pool = max(10, 4 * int(max_streams) + 2)
    return S3Hook(
        aws_conn_id=aws_conn_id, config=base.merge(Config(max_pool_connections=pool))
    ).get_conn()


def summarize(outcomes: Iterable[ArchiveOutcome]) -> dict[str, Any]:
    """A small, XCom-sized summary: counts per status, bytes archived, failed ids.

    :param outcomes: what :func:`archive_batch` returned.
    """
    summary: dict[str, Any] = {ARCHIVED: 0, SKIPPED: 0, FAILED: 0, "bytes": 0, "failed_ids": []}
    for outcome in outcomes:
        summary[outcome.status] += 1
        if outcome.status == ARCHIVED:
            summary["bytes"] += outcome.size or 0
        elif outcome.status == FAILED:
            summary["failed_ids"].append(outcome.record_id)
    return summary
