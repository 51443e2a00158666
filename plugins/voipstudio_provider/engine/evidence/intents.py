"""What a deletion at the source rests on: a bucket that proves what it stores, and a
write-ahead record of every delete request.

:func:`probe_bucket` writes a small object under the run's audit prefix, heads it with
``ChecksumMode=ENABLED`` and reads it back: a bucket that refuses the write, keeps no
SHA-256 checksum or gives back other bytes cannot prove an archived copy, so nothing is
deleted (:class:`BucketProbeError` names the reason).

:class:`DeleteIntents` writes, before each delete request, an *intent* object naming the
resource, the ids, the run, the try and the time (``{run_id}.intents/`` beside the audit
parts). It is removed once every id's outcome line is in S3. An intent still there means
an attempt ended between its request and its audit (an exception, a timeout, a killed
worker): :func:`reconcile_intents` asks the source which of its ids are gone and writes
their lines, so the audit never lacks a line for an id that is gone.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from voipstudio_provider.endpoints import Filter
from voipstudio_provider.engine.evidence.audit import (
    DELETED,
    DELETED_UNCONFIRMED,
    FAILED,
    SKIPPED,
    AuditLog,
    audit_outcomes,
    audit_part,
    audit_parts_prefix,
    deleted_by_other_runs,
)
from voipstudio_provider.engine.evidence.leases import AttemptLease
from voipstudio_provider.engine.layout import audit_key
from voipstudio_provider.engine.s3objects import LOCK_ARGS, put_checked, put_json, stored_checksum

log = logging.getLogger(__name__)


class BucketProbeError(RuntimeError):
    """The archive bucket cannot prove what it stores: nothing may be deleted."""


def evidence_args(target, *, lock: bool) -> dict[str, Any]:
    """The S3 write arguments of audit objects, plans and probes, from the run's target.

    Encryption and tags as the archive gets them; never a cold storage class (the audit
    must be readable at once); Object Lock only for what is final (``lock``).

    :param target: an :class:`~voipstudio_provider.engine.archive.targets.ArchiveTarget`.
    """
    args = {k: v for k, v in target.object_args().items() if k != "StorageClass"}
    if not lock:
        args = {k: v for k, v in args.items() if k not in LOCK_ARGS}
    return args


# -- the bucket probe ---------------------------------------------------------------------


def probe_key(prefix: str, dag_id: str, run_id: str, part: str) -> str:
    """``{run_id}.probe/{part}.txt`` beside the run's audit: temporary, removed after."""
    return audit_key(prefix, dag_id, run_id).removesuffix(".jsonl") + f".probe/{part}.txt"


def probe_bucket(s3_client, target, dag_id: str, run_id: str, part: str) -> None:
    """Write, head with checksum and read back a small object; raise when any step fails.

    :param target: the run's :class:`~voipstudio_provider.engine.archive.targets.ArchiveTarget`.
    :param part: names this task attempt's probe object (e.g. ``monitors.try1``).
    :raises BucketProbeError: naming what failed; nothing must be deleted then.
    """
    key = probe_key(target.prefix, dag_id, run_id, part)
    body = f"voipstudio deletion probe {uuid.uuid4()} {dt.datetime.now(dt.UTC).isoformat()}\n"
    data = body.encode()
    expected = base64.b64encode(hashlib.sha256(data).digest()).decode()
    where = f"s3://{target.bucket}/{key}"
    try:
        try:
            put_checked(
                s3_client, target.bucket, key, data, content_type="text/plain",
                write_args=evidence_args(target, lock=False),
            )  # fmt: skip
        except (ClientError, BotoCoreError) as error:
            raise BucketProbeError(f"probe: writing {where} failed: {error}") from None
        try:
            checksum = stored_checksum(s3_client, target.bucket, key)
            answer = s3_client.get_object(Bucket=target.bucket, Key=key)
            with answer["Body"] as stream:
                read_back = stream.read()
        except (ClientError, BotoCoreError) as error:
            raise BucketProbeError(f"probe: reading {where} back failed: {error}") from None
        if checksum is None:
            raise BucketProbeError(
                f"probe: {where} reports no ChecksumSHA256, so archived copies cannot be "
                "proven; nothing is deleted"
            )
        if checksum != expected:
            raise BucketProbeError(
                f"probe: {where} reports ChecksumSHA256 {checksum}, not {expected}"
            )
        if read_back != data:
            raise BucketProbeError(f"probe: {where} gave back other bytes than were written")
    finally:
        with contextlib.suppress(ClientError, BotoCoreError):
            s3_client.delete_object(Bucket=target.bucket, Key=key)
    log.info("bucket probe passed: %s stores, checksums and reads back", target.bucket)


# -- write-ahead intents ------------------------------------------------------------------


def intents_prefix(prefix: str, dag_id: str, run_id: str) -> str:
    """Where a run's delete intents wait for their outcome: ``{run_id}.intents/``."""
    return audit_key(prefix, dag_id, run_id).removesuffix(".jsonl") + ".intents/"


class DeleteIntents:
    """The write-ahead intents of one task attempt.

    :param s3_client: a boto3 S3 client.
    :param target: the run's :class:`~voipstudio_provider.engine.archive.targets.ArchiveTarget`.
    :param dag_id: the DAG's id.
    :param run_id: the DAG run's id.
    :param part: the attempt's name, e.g. ``monitors.try2``.
    """

    def __init__(self, s3_client, target, dag_id: str, run_id: str, part: str) -> None:
        self.s3_client = s3_client
        self.target = target
        self.dag_id = dag_id
        self.run_id = run_id
        self.part = part
        self._seq = 0
        self._write_args = evidence_args(target, lock=False)
        #: Ids an earlier attempt of the run asked to delete that were still listed when
        #: this one began (id -> reason, archive key): their delete may yet land.
        self.earlier: dict[int, dict[str, Any]] = {}
        self.started = dt.datetime.now(dt.UTC)

    def record(self, resource: str, items: dict[int, dict[str, Any]]) -> str:
        """Write the intent to delete ``items`` (id -> its audit fields); return its key.

        Returns only once S3 has stored the intent, checksum checked.
        """
        self._seq += 1
        key = (
            f"{intents_prefix(self.target.prefix, self.dag_id, self.run_id)}"
            f"{self.part}.{self._seq:05d}.{uuid.uuid4().hex[:8]}.json"
        )
        document = {
            "dag_id": self.dag_id,
            "run_id": self.run_id,
            "attempt": self.part,
            "resource": resource,
            "ids": sorted(items),
            "items": {str(i): fields for i, fields in sorted(items.items())},
            "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        put_json(self.s3_client, self.target.bucket, key, document, write_args=self._write_args)
        return key

    def deleted_elsewhere(self, resource: str, ids: set[int]) -> dict[int, str]:
        """Which of ``ids`` another deleting run audited deleted since this attempt began
        (id -> ``dag_id/run_id``)."""
        if not ids:
            return {}
        found = deleted_by_other_runs(
            self.s3_client, self.target.bucket, self.target.prefix, self.dag_id, self.run_id,
            self.started - dt.timedelta(minutes=1), {(resource, i) for i in ids},
        )  # fmt: skip
        return {record_id: by for (_, record_id), by in found.items()}

    def resolve(self, key: str) -> None:
        """Remove an intent whose every id has its outcome line in S3."""
        self.s3_client.delete_object(Bucket=self.target.bucket, Key=key)


def pending_intents(
    s3_client, target, dag_id: str, run_id: str, resource: str | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """The intents of a run still waiting for their outcome, oldest first."""
    below = intents_prefix(target.prefix, dag_id, run_id)
    found: list[tuple[str, dict[str, Any]]] = []
    paginator = s3_client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=target.bucket, Prefix=below):
        for obj in page.get("Contents", []):
            answer = s3_client.get_object(Bucket=target.bucket, Key=obj["Key"])
            with answer["Body"] as body:
                document = json.loads(body.read())
            if resource is None or document["resource"] == resource:
                found.append((obj["Key"], document))
    return sorted(found, key=lambda item: (item[1]["time"], item[0]))


def id_runs(ids: Iterable[int]) -> list[tuple[int, int]]:
    """Contiguous runs of ids, ``[(first, last), ...]``: ``[1, 2, 3, 7]`` gives two."""
    runs: list[tuple[int, int]] = []
    for record_id in sorted(set(ids)):
        if runs and record_id == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], record_id)
        else:
            runs.append((record_id, record_id))
    return runs


def fetch_by_ids(hook, resource: str, ids: Iterable[int]) -> Iterator[dict]:
    """The records of ``ids`` the API still has, ids ascending, asking for exactly them.

    One filter per contiguous run of ids (``eq`` for a single id, ``gte``/``lte`` for a
    run), never the whole span between the lowest and the highest.
    """
    for first, last in id_runs(ids):
        if first == last:
            filters = [Filter("id", "eq", first)]
        else:
            filters = [Filter("id", "gte", first), Filter("id", "lte", last)]
        yield from hook.iter_records(resource, filters=filters)


def present_ids(hook, resource: str, ids: Iterable[int]) -> set[int]:
    """Which of ``ids`` the API still lists (see :func:`fetch_by_ids`)."""
    wanted = set(ids)
    return {row["id"] for row in fetch_by_ids(hook, resource, wanted) if row["id"] in wanted}


def reconcile_intents(
    hook,
    s3_client,
    target,
    audit: AuditLog,
    dag_id: str,
    run_id: str,
    *,
    resource: str | None = None,
    final: bool = False,
    wait: float = 0.0,
    line_fields: dict[str, Any] | None = None,
    still_open: dict[int, dict[str, Any]] | None = None,
) -> list[str]:
    """Write the outcome of every id of the run's pending intents; return the keys of the
    intents every id of which now has its outcome.

    An id with a ``deleted`` or ``skipped`` line already is left alone. Any other id the
    source no longer lists gets a ``deleted`` line (after a ``deleted_unconfirmed`` one,
    that line is the later confirmation). An id still listed keeps its intent pending and
    is decided again by the attempt's walk (``still_open`` gets it, id -> reason and
    archive key); when ``final`` (the run's audit is being written) it is audited
    ``failed`` instead, and its intent is released. The caller uploads ``audit``, then
    resolves the returned intents.

    :param wait: when ``final``, seconds to keep asking about ids still listed whose
        delete was not refused for certain (it may land late) before releasing them.
    :param line_fields: added to every line written (e.g. ``recovered_by``).
    """
    intents = pending_intents(s3_client, target, dag_id, run_id, resource)
    if not intents:
        return []
    settled: list[str] = []
    outcomes = audit_outcomes(s3_client, target.bucket, target.prefix, dag_id, run_id)
    extra = dict(line_fields or {})
    for key, intent in intents:
        name = intent["resource"]
        attempt = intent.get("attempt")
        ids = [int(i) for i in intent["ids"]]
        still = present_ids(hook, name, ids)
        # Any id not refused for certain may still be deleted late (a queued delete, a
        # request sent just before the process died): ask again before releasing it.
        maybe_late = {
            i for i in still if not outcomes.get((name, i), set()) & {DELETED, SKIPPED, FAILED}
        }
        if final and wait > 0 and maybe_late:
            still = (still - maybe_late) | _ask_until(hook, name, maybe_late, wait)
        # An id gone because another deleting run deleted it has that run's line already.
        elsewhere = _deleted_elsewhere(
            s3_client, target, dag_id, run_id, intent,
            {(name, i) for i in ids if i not in still and not outcomes.get((name, i))},
        )  # fmt: skip
        open_ids = 0
        for record_id in ids:
            done = outcomes.get((name, record_id), set())
            if done & {DELETED, SKIPPED}:
                continue
            fields = dict(intent["items"].get(str(record_id), {})) | extra
            reason = fields.pop("reason", "archive_verified")
            archive_key = fields.pop("archive_key", None)
            if (name, record_id) in elsewhere:
                detail = f"deleted by {elsewhere[(name, record_id)]}, not by {attempt}"
                audit.add(
                    name, record_id, SKIPPED, "gone", detail=detail, archive_key=archive_key,
                    **fields,
                )  # fmt: skip
                outcomes.setdefault((name, record_id), set()).add(SKIPPED)
            elif record_id not in still:
                detail = f"absent at the source when the delete intent of {attempt} was reconciled"
                audit.add(
                    name, record_id, DELETED, reason, detail=detail, archive_key=archive_key,
                    **fields,
                )  # fmt: skip
                outcomes.setdefault((name, record_id), set()).add(DELETED)
            elif final and not done & {FAILED}:
                why = "delete_unconfirmed" if DELETED_UNCONFIRMED in done else "delete_interrupted"
                audit.add(
                    name, record_id, FAILED, why, archive_key=archive_key,
                    detail=f"still at the source after the delete intent of {attempt}",
                    **fields,
                )  # fmt: skip
                outcomes.setdefault((name, record_id), set()).add(FAILED)
            elif not done & {FAILED}:
                # Still listed, and the request may yet land: the intent stays, and the
                # attempt's walk learns the id (a later 404 on it is this run's delete).
                open_ids += 1
                if still_open is not None:
                    still_open[record_id] = {"reason": reason, "archive_key": archive_key}
        log.warning(
            "reconciled the delete intent %s of %s (%d ids, %d still at the source)",
            key, attempt, len(ids), len(still),
        )  # fmt: skip
        if not open_ids:
            settled.append(key)
    return settled


def _deleted_elsewhere(
    s3_client, target, dag_id: str, run_id: str, intent: dict, gone: set[tuple[str, int]]
) -> dict[tuple[str, int], str]:
    if not gone:
        return {}
    since = dt.datetime.fromisoformat(intent["time"]) - dt.timedelta(minutes=1)
    return deleted_by_other_runs(
        s3_client, target.bucket, target.prefix, dag_id, run_id, since, gone
    )


def _ask_until(hook, resource: str, ids: set[int], wait: float) -> set[int]:
    """The ids of ``ids`` still listed after asking again for up to ``wait`` seconds."""
    deadline = time.monotonic() + wait
    still = set(ids)
    while still and time.monotonic() < deadline:
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        still = present_ids(hook, resource, still)
    return still


@contextlib.contextmanager
def deletion_attempt(
    hook, s3_client, target, dag_id: str, run_id: str, resource: str, try_number: int
) -> Iterator[tuple[AuditLog, DeleteIntents]]:
    """The audit part and the intents of one deleting task attempt, earlier ones reconciled.

    ``with deletion_attempt(hook, s3, target, dag_id, run_id, "monitors", 2) as (audit,
    intents): ...``; the audit part is uploaded when the block ends, however it ends, and
    the attempt holds its lease (:class:`~.leases.AttemptLease`) meanwhile.
    """
    part = f"{resource}.try{try_number}"
    write_args = evidence_args(target, lock=False)
    # The lease says "alive" to a run that settles what dead runs left (engine.evidence.recovery).
    with (
        AttemptLease(s3_client, target, dag_id, run_id, part, write_args),
        audit_part(
            s3_client, target.bucket, target.prefix, dag_id, run_id, part, write_args
        ) as audit,
    ):
        intents = DeleteIntents(s3_client, target, dag_id, run_id, part)
        handled = reconcile_intents(
            hook, s3_client, target, audit, dag_id, run_id, resource=resource,
            still_open=intents.earlier,
        )  # fmt: skip
        if len(audit):
            audit.upload(s3_client, target.bucket, audit.key)
        for key in handled:
            intents.resolve(key)
        yield audit, intents


def reconcile_run(
    hook,
    s3_client,
    target,
    dag_id: str,
    run_id: str,
    *,
    wait: float = 0.0,
    line_fields: dict[str, Any] | None = None,
    part_name: str = "reconciled",
) -> int:
    """Reconcile every pending intent of a run into a part of its own; return how many.

    Called when the run's audit is written, by its own teardown or by a later run that
    settles it: an id still at the source is audited ``failed`` then and released.

    :param wait: see :func:`reconcile_intents`.
    :param line_fields: added to every line written.
    :param part_name: the part's name before its time stamp.
    """
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    part = f"{part_name}.{stamp}.{uuid.uuid4().hex[:8]}"
    key = f"{audit_parts_prefix(target.prefix, dag_id, run_id)}{part}.jsonl"
    with AuditLog(dag_id, run_id, key, evidence_args(target, lock=False)) as audit:
        handled = reconcile_intents(
            hook, s3_client, target, audit, dag_id, run_id, final=True, wait=wait,
            line_fields=line_fields,
        )  # fmt: skip
        if len(audit):
            audit.upload(s3_client, target.bucket, key)
    for intent in handled:
        s3_client.delete_object(Bucket=target.bucket, Key=intent)
    return len(handled)
