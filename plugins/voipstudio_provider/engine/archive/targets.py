"""Where and how archived objects are written, and what happened to each record.

:class:`ArchiveTarget` holds the bucket, the prefix and the S3 write arguments of every
archived object; :class:`ArchiveOutcome` is one record's result and :func:`summarize`
counts a batch of them; :func:`s3_client_for` makes a client sized for a batch's streams.
"""

from __future__ import annotations

import datetime as dt
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from voipstudio_provider.engine.s3objects import LOCK_ARGS as LOCK_ARGS

__all__ = [
    "ARCHIVE_STORAGE_CLASSES", "ARCHIVED", "FAILED", "LOCK_ARGS", "MIN_CHUNK_SIZE",
    "OBJECT_LOCK_MODES", "SKIPPED", "SSE_ALGORITHMS",
    "ArchiveOutcome", "ArchiveTarget", "s3_client_for", "summarize",
]  # fmt: skip

#: S3's smallest multipart part; a smaller chunk would be raised to this by boto3 anyway.
MIN_CHUNK_SIZE = 5 * 1024 * 1024
SSE_ALGORITHMS = ("AES256", "aws:kms")
OBJECT_LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")
#: Storage classes whose objects must be restored before they can be read.
ARCHIVE_STORAGE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})
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


def s3_client_for(aws_conn_id: str | None, max_streams: int):
    """A boto3 S3 client of the Amazon connection with a connection pool for every request
    :func:`~voipstudio_provider.engine.archive.writer.archive_batch` has in flight (the
    connection's own botocore ``config`` kept)."""
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

    :param outcomes: what :func:`~voipstudio_provider.engine.archive.writer.archive_batch` returned.
    """
    summary: dict[str, Any] = {ARCHIVED: 0, SKIPPED: 0, FAILED: 0, "bytes": 0, "failed_ids": []}
    for outcome in outcomes:
        summary[outcome.status] += 1
        if outcome.status == ARCHIVED:
            summary["bytes"] += outcome.size or 0
        elif outcome.status == FAILED:
            summary["failed_ids"].append(outcome.record_id)
    return summary
