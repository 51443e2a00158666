"""What S3 stored: checks of an upload's answer, quarantine of a failed copy, cleanup.

A stored object that is not the whole downloaded body is deleted at once (what it replaced
is in quarantine); a stored copy that fails verification is copied aside by
:func:`quarantine` before it is replaced; a failed multipart upload is aborted by
:func:`abort_multipart_uploads` so no part of it stays.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from botocore.exceptions import ClientError

from voipstudio_provider.engine.layout import ArchiveKind, archive_key, quarantine_key, sidecar_key
from voipstudio_provider.engine.proof import verify_archive
from voipstudio_provider.engine.s3objects import is_not_found
from voipstudio_provider.engine.targets import SKIPPED, ArchiveOutcome, ArchiveTarget

__all__ = [
    "abort_multipart_uploads",
    "check_accepted",
    "check_stored",
    "quarantine",
    "skip_or_prepare",
]

log = logging.getLogger("voipstudio_provider.engine.archive")


def abort_multipart_uploads(s3_client, bucket: str, key: str) -> None:
    """Abort what a failed upload may have left, so no part of it is stored or billed."""
    try:
        listing = s3_client.list_multipart_uploads(Bucket=bucket, Prefix=key)
        for upload in listing.get("Uploads", []):
            if upload["Key"] == key:
                s3_client.abort_multipartupload_spooled(
                    Bucket=bucket, Key=key, UploadId=upload["UploadId"]
                )
    except ClientError:
        log.warning("could not list or abort multipart uploads of %s", key, exc_info=True)


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
        if is_not_found(error):
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


def check_stored(
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


def check_accepted(s3_client, target: ArchiveTarget, key: str, stored: dict) -> None:
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


def skip_or_prepare(
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
