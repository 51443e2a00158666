"""Archive VoIPstudio binaries (recordings, voicemail, PCAPs, traces) to S3 and verify them.

An archived binary is complete when S3's own SHA-256 checksum of the object at
:func:`~.layout.archive_key` equals the checksum computed from the bytes the API served,
as recorded in its JSON sidecar (or, for kinds without one, in its metadata at upload),
and the sidecar describes the very record. :func:`verify_archive`
(:mod:`~voipstudio_provider.proof`) checks exactly that; :func:`archive_record` downloads
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
import urllib.parse
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError
from s3transfer.utils import ChunksizeAdjuster

from voipstudio_provider.layout import ArchiveKind, archive_key, quarantine_key, sidecar_key
from voipstudio_provider.proof import (
    ARCHIVE_STORAGE_CLASSES,
    CHECKSUM_METADATA,
    PART_SIZE_METADATA,
    Verification,
    checksum_of,
    composite_checksum,
    not_found,
    verify_archive,
)

__all__ = [
    "ARCHIVED", "FAILED", "SKIPPED", "ArchiveOutcome", "ArchiveTarget", "Verification",
    "archive_batch", "archive_record", "put_json", "quarantine", "summarize", "verify_archive",
]  # fmt: skip

log = logging.getLogger(__name__)

#: S3's smallest multipart part; a smaller chunk would be raised to this by boto3 anyway.
MIN_CHUNK_SIZE = 5 * 1024 * 1024
SSE_ALGORITHMS = ("AES256", "aws:kms")
OBJECT_LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")
ARCHIVED, SKIPPED, FAILED = "archived", "skipped", "failed"


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


def archive_record(
    voip_hook, s3_client, kind: ArchiveKind, record: dict, target: ArchiveTarget
) -> ArchiveOutcome:
    """Archive one record's binary unless it is already verified in the bucket.

    The body is spooled (in memory up to ``chunk_size``, then on disk) before the upload
    starts: the ``sha256`` metadata must be set when the upload begins, and a short body
    then never starts one. A verified copy is never overwritten; a stored copy that fails
    verification is first kept aside (:func:`quarantine`). An archive that cannot be
    checked because a bucket keeps no checksums is read back and hashed instead; one that
    cannot be read now (GLACIER) is left as it is and the record fails, naming why. Errors
    are caught and returned as a ``failed`` outcome.

    :param voip_hook: a :class:`~voipstudio_provider.hooks.voipstudio.VoIPstudioHook`.
    :param s3_client: a boto3 S3 client (thread-safe, may be shared).
    :param kind: what kind of binary to archive.
    :param record: the API record; a monitor's ``size`` is the expected byte count.
    :param target: where and how to write.
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
        verification = verify_archive(s3_client, kind, record, target)
        if verification.unverifiable and verification.exists:
            verification = verify_archive(s3_client, kind, record, target, verify="download")
    except Exception as error:
        return failed("verify", error)
    if verification.ok:
        return ArchiveOutcome(
            kind.name, record_id, SKIPPED, key, verification.size, verification.sha256,
            s3_checksum=verification.s3_checksum, etag=verification.etag,
        )  # fmt: skip
    if verification.unverifiable:
        return failed("verify", f"verify: {verification.reason}; the stored copy is kept as it is")
    if verification.reason != "missing" or kind.sidecar:
        try:
            quarantine(s3_client, kind, record, target, verification.reason)
        except Exception as error:
            return failed("quarantine", error)

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
        if not kind.sidecar:  # the digests verification compares S3's checksum with
            metadata[CHECKSUM_METADATA] = checksum
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
        stored = _check_stored(s3_client, target, key, result.size, checksum)
        if kind.sidecar:
            described = {
                "sha256": result.sha256,
                "size": result.size,
                "checksum_sha256": checksum,
                "part_size": part_size,
            }
            _write_sidecar(s3_client, kind, record, target, described)
    except Exception as error:
        return failed("check", error)

    log.info("archived %s %s to %s (%d bytes)", kind.name, record_id, key, result.size)
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


def archive_batch(
    voip_hook,
    s3_client,
    kind: ArchiveKind,
    records: Iterable[dict],
    target: ArchiveTarget,
    max_streams: int = 4,
    hook_factory: Callable[[], Any] | None = None,
) -> list[ArchiveOutcome]:
    """Archive many records with at most ``max_streams`` downloads and uploads at a time.

    Memory stays within about ``max_streams`` times twice ``target.chunk_size``. A failed
    record does not stop the others.

    :param voip_hook: a VoIPstudio hook; with more than one stream, each stream uses a hook
        of its own built like this one (same connection and retry settings).
    :param s3_client: a boto3 S3 client, shared by the streams (boto3 clients are
        thread-safe).
    :param kind: what kind of binary to archive.
    :param records: the API records.
    :param target: where and how to write.
    :param max_streams: parallel streams.
    :param hook_factory: builds the hook of each stream, instead of copying ``voip_hook``.
    :return: one outcome per record, in the order of ``records``.
    """
    if max_streams < 1:
        raise ValueError("max_streams must be at least 1")
    records = list(records)
    if max_streams == 1 or len(records) <= 1:
        return [archive_record(voip_hook, s3_client, kind, r, target) for r in records]

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
        return archive_record(hook, s3_client, kind, record, target)

    try:
        with ThreadPoolExecutor(max_workers=max_streams, thread_name_prefix="archive") as pool:
            return list(pool.map(archive_one, records))
    finally:
        for hook in made:
            close = getattr(hook, "close", None)
            if close is not None:
                close()


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
