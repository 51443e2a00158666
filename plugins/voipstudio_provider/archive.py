"""Archive VoIPstudio binaries (recordings, voicemail, PCAPs, traces) to S3 and verify them.

An archived binary is complete when its object exists at :func:`~.layout.archive_key`,
carries its SHA-256 in the ``sha256`` metadata, has the record's ``size`` (monitors), and,
for kinds with a sidecar, the JSON sidecar beside it agrees on ``sha256`` and ``size``.
:func:`verify_archive` checks exactly that; :func:`archive_record` downloads only what does
not pass it. This module holds no Airflow operator code so that DAGs and tasks can call it
with any hook and boto3 client.
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

from voipstudio_provider.endpoints import bare_media_type
from voipstudio_provider.layout import ArchiveKind, archive_key, sidecar_key

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


@dataclass(frozen=True)
class Verification:
    """The answer of :func:`verify_archive`.

    :param ok: the archive of this record is complete.
    :param reason: ``verified``, or what is wrong, in words for an audit line.
    :param key: the binary's key that was checked.
    :param size: the stored object's byte count, if it exists.
    :param sha256: the stored object's ``sha256`` metadata, if present.
    """

    ok: bool
    reason: str
    key: str
    size: int | None = None
    sha256: str | None = None


def _not_found(error: ClientError) -> bool:
    code = str(error.response.get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound")


def _head(s3_client, bucket: str, key: str) -> dict | None:
    try:
        return s3_client.head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if _not_found(error):
            return None
        raise


def _read_sidecar(s3_client, bucket: str, key: str) -> dict | None:
    try:
        body = s3_client.get_object(Bucket=bucket, Key=key)["Body"]
    except ClientError as error:
        if _not_found(error):
            return None
        raise
    with body:
        return json.loads(body.read())


def verify_archive(
    s3_client, kind: ArchiveKind, record: dict, target: ArchiveTarget
) -> Verification:
    """Check, without downloading the binary, that ``record`` is completely archived.

    :param s3_client: a boto3 S3 client.
    :param kind: what kind of binary the record has.
    :param record: the API record (its id and date field place the key).
    :param target: the bucket and prefix to look in.
    :return: ``ok`` with reason ``verified``, or the first thing found wrong.
    """
    key = archive_key(target.prefix, kind, record)
    head = _head(s3_client, target.bucket, key)
    if head is None:
        return Verification(False, "missing", key)
    size = int(head["ContentLength"])
    sha256 = head.get("Metadata", {}).get("sha256")

    def wrong(reason: str) -> Verification:
        return Verification(False, reason, key, size, sha256)

    if not sha256:
        return wrong("no sha256 metadata")
    if size == 0:
        return wrong("empty object")
    # An error page stored as a recording has the right digest of the wrong thing.
    content_type = bare_media_type(head.get("ContentType"))
    if content_type != bare_media_type(kind.content_type):
        return wrong(f"content type {content_type or 'missing'} is not {kind.content_type}")
    expected = record.get("size")
    if expected is not None and size != int(expected):
        return wrong(f"size {size} != record size {int(expected)}")
    if not kind.sidecar:
        return Verification(True, "verified", key, size, sha256)

    side_key = sidecar_key(target.prefix, kind, record)
    try:
        sidecar = _read_sidecar(s3_client, target.bucket, side_key)
    except ValueError:
        return wrong("sidecar is not valid JSON")
    if sidecar is None:
        return wrong("sidecar missing")
    if sidecar.get("sha256") != sha256:
        return wrong("sha256 metadata differs from sidecar")
    if sidecar.get("size") != size:
        return wrong(f"size {size} != sidecar size {sidecar.get('size')}")
    return Verification(True, "verified", key, size, sha256)


def _upload(s3_client, spool: IO[bytes], key: str, args: dict, target: ArchiveTarget) -> None:
    size = args["Metadata"]["size"]
    if int(size) < target.chunk_size:
        # One PUT: S3 checks the whole body against the SHA-256 we computed while downloading.
        digest = bytes.fromhex(args["Metadata"]["sha256"])
        args = {**args, "ChecksumSHA256": base64.b64encode(digest).decode()}
    config = TransferConfig(
        multipart_threshold=target.chunk_size,
        multipart_chunksize=target.chunk_size,
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
    s3_client, kind: ArchiveKind, record: dict, target: ArchiveTarget, size: int, sha256: str
) -> None:
    sidecar = {
        **record,
        "sha256": sha256,
        "size": size,
        "archived_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    put_json(s3_client, target, sidecar_key(target.prefix, kind, record), sidecar)


def put_json(
    s3_client, target: ArchiveTarget, key: str, document: Any, *, sha256_metadata: bool = False
) -> None:
    """Write ``document`` as JSON with the target's options and a SHA-256 that S3 checks.

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
        **target.object_args(),
    )


def archive_record(
    voip_hook, s3_client, kind: ArchiveKind, record: dict, target: ArchiveTarget
) -> ArchiveOutcome:
    """Archive one record's binary unless it is already verified in the bucket.

    The body is spooled (in memory up to ``chunk_size``, then on disk) before the upload
    starts: the ``sha256`` metadata must be set when the upload begins, and a short body
    then never starts one. Errors are caught and returned as a ``failed`` outcome.

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

    def failed(stage: str, error: BaseException) -> ArchiveOutcome:
        log.warning("%s %s failed at %s: %s", kind.name, record_id, stage, error)
        return ArchiveOutcome(kind.name, record_id, FAILED, key, error=_describe(stage, error))

    try:
        verification = verify_archive(s3_client, kind, record, target)
    except Exception as error:
        return failed("verify", error)
    if verification.ok:
        return ArchiveOutcome(
            kind.name, record_id, SKIPPED, key, verification.size, verification.sha256
        )

    with tempfile.SpooledTemporaryFile(max_size=target.chunk_size) as spool:
        try:
            result = voip_hook.download(
                kind.operation, record_id, spool, expected_size=record.get("size")
            )
        except Exception as error:
            return failed("download", error)

        metadata = {"sha256": result.sha256, "size": str(result.size)}
        args = {
            "ContentType": result.content_type or kind.content_type,
            "Metadata": metadata,
            "ChecksumAlgorithm": "SHA256",
            **target.object_args(),
        }
        try:
            _upload(s3_client, spool, key, args, target)
        except Exception as error:
            _abort_multipart_uploads(s3_client, target.bucket, key)
            return failed("upload", error)

    try:
        stored = _head(s3_client, target.bucket, key)
        stored_size = None if stored is None else int(stored["ContentLength"])
        if stored_size != result.size:
            if stored is not None:  # never leave an object that is not the whole body
                s3_client.delete_object(Bucket=target.bucket, Key=key)
            raise RuntimeError(f"stored size {stored_size} != downloaded size {result.size}")
        if kind.sidecar:
            _write_sidecar(s3_client, kind, record, target, result.size, result.sha256)
    except Exception as error:
        return failed("check", error)

    log.info("archived %s %s to %s (%d bytes)", kind.name, record_id, key, result.size)
    return ArchiveOutcome(kind.name, record_id, ARCHIVED, key, result.size, result.sha256)


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
