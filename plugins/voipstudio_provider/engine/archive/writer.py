"""Archive VoIPstudio binaries (recordings, voicemail, PCAPs, traces) to S3 and verify them.

An archived binary is complete when S3's own SHA-256 checksum of the object at
:func:`~.layout.archive_key` equals the checksum computed from the bytes the API served, as
recorded in its JSON sidecar (or, for kinds without one, in its metadata at upload), and the
sidecar describes the very record. :func:`verify_archive`
(:mod:`~voipstudio_provider.engine.archive.proof`) checks exactly that;
:func:`archive_record` downloads only what does not pass it, and keeps a failed copy aside
before replacing it; :func:`archive_batch` archives many with parallel streams, and
:func:`archive_and_summarize` is the one entry the operator and the archive DAGs' batches
share. The target and the outcomes are in
:mod:`~voipstudio_provider.engine.archive.targets`, the checks of what S3 stored and the
quarantine in :mod:`~voipstudio_provider.engine.archive.stored`, the uploads in
:mod:`~voipstudio_provider.engine.archive.uploads`. This module holds no Airflow operator
code so that DAGs and tasks can call it with any hook and boto3 client.
"""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from voipstudio_provider.engine import s3objects
from voipstudio_provider.engine.archive.progress import PROGRESS_INTERVAL, BatchLog, hook_per_thread
from voipstudio_provider.engine.archive.proof import (
    CHECKSUM_METADATA,
    PART_SIZE_METADATA,
    ArchiveListing,
    Verification,
    verify_archive,
)
from voipstudio_provider.engine.archive.stored import check_accepted, quarantine, skip_or_prepare
from voipstudio_provider.engine.archive.targets import (
    ARCHIVED,
    FAILED,
    SKIPPED,
    ArchiveOutcome,
    ArchiveTarget,
    s3_client_for,
    summarize,
)
from voipstudio_provider.engine.archive.uploads import (
    UploadPool,
    part_size_for,
    spool_checksum,
    stream_to_s3,
    upload_spooled,
)
from voipstudio_provider.engine.layout import ArchiveKind, archive_key, sidecar_key
from voipstudio_provider.exceptions import VoIPstudioError

__all__ = [
    "ARCHIVED", "FAILED", "SKIPPED", "ArchiveOutcome", "ArchiveTarget", "ArchivedBatch",
    "Verification", "archive_and_summarize", "archive_batch", "archive_record", "put_json",
    "quarantine", "s3_client_for", "summarize", "verify_archive",
]  # fmt: skip

log = logging.getLogger(__name__)


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
    s3objects.put_json(
        s3_client, target.bucket, key, document,
        write_args=target.document_args(), sha256_metadata=sha256_metadata,
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

    Recordings and voicemail stream straight into S3
    (:mod:`~voipstudio_provider.engine.archive.uploads`):
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
        prepared = skip_or_prepare(s3_client, kind, record, target, key, listing)
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
        stored = stream_to_s3(
            voip_hook, s3_client, kind, record, target, key, pool or own_pool, downloads
        )
    except VoIPstudioError as error:
        return failed("download", error)
    except Exception as error:  # the upload aborted its own parts
        return failed("upload", error)
    finally:
        if own_pool is not None:
            own_pool.close()

    result = stored["result"]
    try:
        check_accepted(s3_client, target, key, stored)
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

        part_size = part_size_for(target, result.size)
        checksum = spool_checksum(spool, result.sha256, part_size)
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
            answer = upload_spooled(s3_client, spool, key, args, target, part_size)
        except Exception as error:  # a multipart upload aborted its own parts
            return failed("upload", error)

    stored = {"answer": answer, "checksum": checksum}
    try:
        check_accepted(s3_client, target, key, stored)
    except Exception as error:
        return failed("check", error)
    log.debug("archived %s %s to %s (%d bytes)", kind.name, record_id, key, result.size)
    return ArchiveOutcome(
        kind.name, record_id, ARCHIVED, key, result.size, result.sha256,
        s3_checksum=answer.get("ChecksumSHA256"), etag=answer.get("ETag"),
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
    progress = BatchLog(kind, len(records), progress_interval)
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

        make_hook = hook_factory or hook_per_thread(voip_hook)
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


@dataclass(frozen=True)
class ArchivedBatch:
    """What :func:`archive_and_summarize` did.

    :param outcomes: one outcome per record, earlier failures first.
    :param counts: :func:`summarize` of the outcomes.
    :param failures: the ``failed`` outcomes, in order.
    """

    outcomes: list[ArchiveOutcome]
    counts: dict[str, Any]
    failures: list[ArchiveOutcome] = field(default_factory=list)


def archive_and_summarize(
    voip_hook,
    s3_client,
    kind: ArchiveKind,
    records: Iterable[dict],
    target: ArchiveTarget,
    *,
    max_streams: int = 4,
    earlier: Sequence[ArchiveOutcome] = (),
    logger: logging.Logger | None = None,
) -> ArchivedBatch:
    """Archive ``records`` (:func:`archive_batch`), count the outcomes and log each failure.

    The one way records are archived by the operator, the archive DAGs' batches and the
    reconciliation's re-archive; each caller shapes its own summary and error from it.

    :param earlier: outcomes already known (e.g. records that could not be read), counted
        and reported with the batch's.
    :param logger: where failures are logged (default: this module's logger).
    """
    outcomes = list(earlier) + archive_batch(
        voip_hook, s3_client, kind, records, target, max_streams=int(max_streams)
    )
    failures = [o for o in outcomes if o.status == FAILED]
    for outcome in failures:
        (logger or log).error("%s %s not archived: %s", kind.name, outcome.record_id, outcome.error)
    return ArchivedBatch(outcomes, summarize(outcomes), failures)
