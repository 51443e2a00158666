"""What S3 stored: checks of an upload's answer, quarantine of a failed copy, cleanup.

The archive writer removes only what it created in the same call: a failed multipart upload
is aborted by its own upload id (:func:`abort_upload`), and a stored object that is not the
whole downloaded body is deleted by the version id S3 gave it (:func:`remove_own_version`).
In a bucket without versioning nothing names that object alone (another run may have
written the same key, with the same bytes and ETag), so it is left for the reconciliation
to judge and the log says why. A stored copy that fails verification is copied aside by
:func:`quarantine` before it is replaced.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from botocore.exceptions import ClientError

from voipstudio_provider.engine.archive.proof import verify_archive
from voipstudio_provider.engine.archive.targets import SKIPPED, ArchiveOutcome, ArchiveTarget
from voipstudio_provider.engine.layout import ArchiveKind, archive_key, quarantine_key, sidecar_key
from voipstudio_provider.engine.s3objects import error_code, is_not_found

__all__ = [
    "abort_upload",
    "check_accepted",
    "quarantine",
    "remove_own_version",
    "skip_or_prepare",
]

log = logging.getLogger("voipstudio_provider.engine.archive.writer")
#: Tries of an abort before the upload is left to the bucket's lifecycle rule.
ABORT_ATTEMPTS = 3


def abort_upload(s3_client, bucket: str, key: str, upload_id: str) -> bool:
    """Abort the multipart upload ``upload_id`` so no part of it stays stored or billed.

    Only this upload: another run's upload of the same key is never touched. Tried
    :data:`ABORT_ATTEMPTS` times; an upload already gone (completed or aborted) counts as
    done.

    :return: whether no part of the upload is left.
    """
    for attempt in range(1, ABORT_ATTEMPTS + 1):
        try:
            s3_client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            return True
        except ClientError as error:
            if error_code(error) == "NoSuchUpload":
                return True
            if attempt == ABORT_ATTEMPTS:
                log.warning(
                    "could not abort the multipart upload %s of s3://%s/%s: %s; a lifecycle "
                    "rule for incomplete uploads removes its parts", upload_id, bucket, key, error,
                )  # fmt: skip
    return False


def remove_own_version(s3_client, bucket: str, key: str, version: str | None, why: str) -> None:
    """Delete the version ``version`` of ``key``, which this call created, because ``why``.

    Without a version id (a bucket without versioning) nothing is deleted: the object at the
    key may by now be another run's verified archive, which a delete of the key, or one
    conditional on an ETag that identical bytes share, would destroy. It is left for the
    reconciliation and the next archive run to judge, and the log says so. A refused delete
    (an archive role without ``s3:DeleteObjectVersion``) also leaves it.
    """
    if version is None:
        log.warning(
            "left s3://%s/%s as it is (%s): the bucket keeps no versions, so the object "
            "at the key cannot be told apart from another run's; the reconciliation judges "
            "it", bucket, key, why,
        )  # fmt: skip
        return
    try:
        s3_client.delete_object(Bucket=bucket, Key=key, VersionId=version)
    except ClientError as error:
        log.warning("kept s3://%s/%s version %s (%s): %s", bucket, key, version, why, error)


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
        problem = f"S3 checksum {reported} != {stored['checksum']} of the downloaded body"
        # Never keep a wrong body that is ours; never delete what may be another run's.
        remove_own_version(
            s3_client, target.bucket, key, stored["answer"].get("VersionId"), problem
        )
        raise RuntimeError(problem)
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
