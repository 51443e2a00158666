"""The audit log of deletions: one JSON line per deleted or skipped item.

A run's audit log is the object :func:`~.layout.audit_key` (``{p}/audit/{dag_id}/
{run_id}.jsonl``). S3 has no append, and a run deletes from several tasks, so each task
attempt writes its own part below ``{run_id}.parts/`` when it ends, however it ends, and
the run's last task joins the parts into the one object (:func:`merge_audit_parts`).

A line reads::

    {"time": "2026-11-20T03:00:05+00:00", "dag_id": "voipstudio_retention",
     "run_id": "scheduled__...", "resource": "monitors", "id": 42, "action": "deleted",
     "reason": "archive_verified", "detail": "verified",
     "archive_key": "voipstudio/recordings/date=2025-11-01/42.mp3",
     "record_date": "2025-11-01 10:00:00"}

``action`` is ``deleted``, ``deleted_unconfirmed`` (the delete was accepted but the id
was still listed after the wait; a later attempt confirms it), ``would_delete`` (dry run),
``skipped`` or ``failed`` (and ``masked`` / ``would_mask`` for CDRs a purge masks);
``reason`` is one of :data:`REASONS`; ``detail`` says more in words.

Every object written here carries S3's own ``ChecksumSHA256`` and the run's encryption
options; the finished audit object also gets the run's Object Lock options (the parts are
temporary and are removed once joined).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import tempfile
from collections import Counter
from collections.abc import Iterator
from typing import Any

from botocore.exceptions import ClientError

from voipstudio_provider.engine.layout import audit_key
from voipstudio_provider.engine.s3objects import is_not_found, put_checked

log = logging.getLogger(__name__)

DELETED, WOULD_DELETE, SKIPPED, FAILED = "deleted", "would_delete", "skipped", "failed"
DELETED_UNCONFIRMED = "deleted_unconfirmed"
MASKED, WOULD_MASK = "masked", "would_mask"
ACTIONS = (DELETED, DELETED_UNCONFIRMED, WOULD_DELETE, SKIPPED, FAILED, MASKED, WOULD_MASK)

#: Why an item was deleted, kept, or could not be deleted.
REASONS: dict[str, str] = {
    "archive_verified": "the archived copy exists and checks out",
    "archive_not_required": "deleted without an archive check (purge, require_archive off)",
    "archive_unverified": "no complete archived copy: kept",
    "archive_unverifiable": "the bucket or object gives no checksum, or cannot be read now: kept",
    "date_unreadable": "the record's own date cannot be read: kept",
    "not_past_cutoff": "the record's own date is not before the cutoff: kept",
    "no_longer_matches": "planned, but the record no longer matches the purge: kept",
    "held_when_planned": "under legal hold when the plan was made: kept",
    "archive_pending": "dry run: the chat would be archived first, then the message deleted",
    "legal_hold_id": "the id is under legal hold: kept",
    "legal_hold_number": "a phone number under legal hold is involved: kept",
    "max_deletions": "the resource's max_deletions was spent: the walk stopped here",
    "gone": "no longer at the source when its turn came (or deleted by another run)",
    "delete_error": "the API refused or failed the delete",
    "delete_unconfirmed": "still listed after the delete was accepted",
    "delete_outcome_unknown": "the delete failed or its answer was lost; it may have taken "
    "effect, so the source is asked again",
    "delete_interrupted": "an attempt was interrupted around its delete; still at the source",
    "number_matched": "the CDR involves the phone number of the purge",
}

#: The DAGs that delete at the source.
DELETING_DAG_IDS = ("voipstudio_retention", "voipstudio_compliance_purge")

_SPOOL_BYTES = 4 * 1024 * 1024
#: What ``max_deletions`` counts: a deletion that could not be confirmed counts too.
_DELETING = (DELETED, DELETED_UNCONFIRMED, WOULD_DELETE)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class AuditLog:
    """The audit lines of one task attempt, spooled (memory, then disk) until uploaded.

    :param dag_id: the DAG's id, written on every line.
    :param run_id: the DAG run's id, written on every line.
    :param key: the object this log is uploaded to, when it has one.
    :param write_args: S3 write arguments of the uploads (encryption), see
        :func:`~voipstudio_provider.engine.evidence.intents.evidence_args`.
    """

    def __init__(
        self,
        dag_id: str,
        run_id: str,
        key: str | None = None,
        write_args: dict[str, Any] | None = None,
    ) -> None:
        self.dag_id = dag_id
        self.run_id = run_id
        self.key = key
        self.write_args = dict(write_args or {})
        self._spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)
        self._counts: Counter[tuple[str, str, str]] = Counter()

    def add(
        self,
        resource: str,
        record_id: int,
        action: str,
        reason: str,
        *,
        detail: str | None = None,
        archive_key: str | None = None,
        **fields: Any,
    ) -> None:
        """Write one line.

        :param resource: the record's resource (``monitors``, ``chatmsgs`` ...).
        :param record_id: the record's id.
        :param action: one of :data:`ACTIONS`.
        :param reason: one of :data:`REASONS`.
        :param detail: more words for a person (e.g. ``size 10 != record size 12``).
        :param archive_key: the archive key the item was checked against.
        :param fields: more small values (``record_date``, ``cutoff``, ``chat_id`` ...).
        """
        if action not in ACTIONS:
            raise ValueError(f"unknown audit action {action!r}")
        if reason not in REASONS:
            raise ValueError(f"unknown audit reason {reason!r}")
        line = {
            "time": _now(),
            "dag_id": self.dag_id,
            "run_id": self.run_id,
            "resource": resource,
            "id": int(record_id),
            "action": action,
            "reason": reason,
            "detail": detail or REASONS[reason],
            "archive_key": archive_key,
            **fields,
        }
        self._spool.write(json.dumps(line, sort_keys=True, default=str).encode() + b"\n")
        self._counts[(resource, action, reason)] += 1

    def __len__(self) -> int:
        return sum(self._counts.values())

    def summary(self) -> dict[str, Any]:
        """Counts per resource, action and reason: small enough for XCom and the log."""
        return summarize_counts(self._counts)

    @property
    def deletions(self) -> int:
        """Items deleted, or that a dry run would delete: what ``max_deletions`` counts."""
        return sum(_deletions_by_resource(self._counts).values())

    def deletions_of(self, resource: str) -> int:
        """:attr:`deletions` of one resource."""
        return _deletions_by_resource(self._counts).get(resource, 0)

    def upload(self, s3_client, bucket: str, key: str) -> None:
        """Write every line so far as the one object ``key`` (S3 has no append)."""
        _put_lines(
            s3_client, bucket, key, self._spool, _deletions_by_resource(self._counts),
            self.write_args,
        )  # fmt: skip

    def close(self) -> None:
        self._spool.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def summarize_counts(counts: Counter[tuple[str, str, str]]) -> dict[str, Any]:
    """``{"lines": n, "resources": {res: {action: n, "reasons": {reason: n}}}}``."""
    resources: dict[str, dict[str, Any]] = {}
    for (resource, action, reason), n in sorted(counts.items()):
        entry = resources.setdefault(resource, {a: 0 for a in ACTIONS} | {"reasons": {}})
        entry[action] += n
        entry["reasons"][reason] = entry["reasons"].get(reason, 0) + n
    return {"lines": sum(counts.values()), "resources": resources}


def _deletions_by_resource(counts: Counter[tuple[str, str, str]]) -> dict[str, int]:
    by_resource: Counter[str] = Counter()
    for (resource, action, _), n in counts.items():
        if action in _DELETING:
            by_resource[resource] += n
    return dict(by_resource)


def _put_lines(
    s3_client, bucket: str, key: str, spool, deletions: dict[str, int], write_args: dict
) -> None:
    per_resource = ",".join(f"{r}={n}" for r, n in sorted(deletions.items()))
    # put_object streams the spool and leaves it open (upload_fileobj would close it, and
    # the log goes on after a checkpoint).
    put_checked(
        s3_client, bucket, key, spool, content_type="application/x-ndjson",
        write_args=write_args,
        metadata={"deletions": str(sum(deletions.values())), "deletions-by-resource": per_resource},
    )  # fmt: skip
    spool.seek(0, 2)


def audit_parts_prefix(prefix: str, dag_id: str, run_id: str) -> str:
    """Where a run's task attempts leave their audit parts: ``{run_id}.parts/``."""
    return audit_key(prefix, dag_id, run_id).removesuffix(".jsonl") + ".parts/"


def audit_part_key(prefix: str, dag_id: str, run_id: str, part: str) -> str:
    """The part one task attempt writes, e.g. ``{run_id}.parts/monitors.try1.jsonl``."""
    return f"{audit_parts_prefix(prefix, dag_id, run_id)}{part}.jsonl"


def _keys_below(s3_client, bucket: str, below: str) -> list[str]:
    keys: list[str] = []
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=below):
        keys.extend(obj["Key"] for obj in page.get("Contents", []))
    return sorted(keys)


def _object_lines(s3_client, bucket: str, key: str) -> Iterator[bytes]:
    try:
        body = s3_client.get_object(Bucket=bucket, Key=key)["Body"]
    except ClientError as error:
        if is_not_found(error):
            return
        raise
    with body:
        for line in body.iter_lines():
            if line.strip():
                yield line


def _part_etags(s3_client, bucket: str, below: str) -> dict[str, str]:
    """The parts below ``below``, key -> ETag, in key order."""
    parts: dict[str, str] = {}
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=below):
        for obj in page.get("Contents", []):
            parts[obj["Key"]] = obj["ETag"]
    return dict(sorted(parts.items()))


def _delete_if_unchanged(s3_client, bucket: str, key: str, etag: str) -> None:
    """Delete a joined part unless its attempt has uploaded it again since it was read.

    A part is rewritten whole at each checkpoint; one rewritten meanwhile holds lines the
    join has not seen, so it stays for the next join.
    """
    try:
        now = s3_client.head_object(Bucket=bucket, Key=key)["ETag"]
    except ClientError as error:
        if is_not_found(error):
            return
        raise
    if now != etag:
        log.warning("audit part s3://%s/%s changed while it was joined; kept", bucket, key)
        return
    s3_client.delete_object(Bucket=bucket, Key=key)


def deleted_by_other_runs(
    s3_client,
    bucket: str,
    prefix: str,
    dag_id: str,
    run_id: str,
    since: dt.datetime,
    wanted: set[tuple[str, int]],
) -> dict[tuple[str, int], str]:
    """Which of ``wanted`` another deleting run audited ``deleted`` in what it wrote since
    ``since``: ``(resource, id) -> "dag_id/run_id"``.

    Reads only the audit objects and parts of :data:`DELETING_DAG_IDS` written since then,
    so it is cheap where it is needed: when an id named by an intent is found gone.
    """
    found: dict[tuple[str, int], str] = {}
    for other_dag in DELETING_DAG_IDS:
        below = audit_key(prefix, other_dag, "").removesuffix(".jsonl")
        pages = s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=below)
        for obj in (o for page in pages for o in page.get("Contents", [])):
            key = obj["Key"]
            if obj["LastModified"] < since or not key.endswith(".jsonl"):
                continue
            if key.startswith(audit_key(prefix, dag_id, run_id).removesuffix(".jsonl") + "."):
                continue  # the run's own object and parts
            for line in _object_lines(s3_client, bucket, key):
                item = json.loads(line)
                which = (item["resource"], int(item["id"]))
                if item["action"] != DELETED or which not in wanted or item["run_id"] == run_id:
                    continue
                # An object rewritten lately (a dead run settled, parts joined) holds old
                # lines too: only a deletion audited since then counts.
                written = item.get("time")
                if written is None or dt.datetime.fromisoformat(written) >= since:
                    found.setdefault(which, f"{item['dag_id']}/{item['run_id']}")
    return found


def read_audit(s3_client, bucket: str, key: str) -> list[dict[str, Any]]:
    """Every line of an audit object, decoded (for reports and tests; it may be large)."""
    return [json.loads(line) for line in _object_lines(s3_client, bucket, key)]


def audit_outcomes(
    s3_client, bucket: str, prefix: str, dag_id: str, run_id: str
) -> dict[tuple[str, int], set[str]]:
    """The actions audited so far per ``(resource, id)`` of a run (object and parts)."""
    outcomes: dict[tuple[str, int], set[str]] = {}
    for key in (
        audit_key(prefix, dag_id, run_id),
        *_keys_below(s3_client, bucket, audit_parts_prefix(prefix, dag_id, run_id)),
    ):
        for line in _object_lines(s3_client, bucket, key):
            item = json.loads(line)
            outcomes.setdefault((item["resource"], int(item["id"])), set()).add(item["action"])
    return outcomes


def merge_audit_parts(
    s3_client,
    bucket: str,
    prefix: str,
    dag_id: str,
    run_id: str,
    write_args: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Join a run's audit parts (and any audit object already there) into the audit object.

    Lines already in the object are kept, so clearing and re-running one task of a run
    adds its lines instead of losing the others'; a line is never written twice, and an
    id's ``deleted`` line only once, so merging again after an interruption is harmless.
    Parts are deleted once joined, unless rewritten meanwhile.

    :param write_args: S3 write arguments of the audit object (encryption, Object Lock).

    :return: the summary of the whole audit object (see :func:`summarize_counts`) and its
        ``key``.
    """
    key = audit_key(prefix, dag_id, run_id)
    parts = _part_etags(s3_client, bucket, audit_parts_prefix(prefix, dag_id, run_id))
    seen: set[bytes] = set()
    deleted: set[tuple[str, int]] = set()
    counts: Counter[tuple[str, str, str]] = Counter()
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as spool:
        for source in (key, *parts):
            for line in _object_lines(s3_client, bucket, source):
                fingerprint = hashlib.sha256(line).digest()
                if fingerprint in seen:
                    continue
                item = json.loads(line)
                if item["action"] == DELETED:
                    # One deletion, one line: the same deletion confirmed twice (by the
                    # attempt and by a run that settled it meanwhile) keeps its first line.
                    which = (item["resource"], int(item["id"]))
                    if which in deleted:
                        continue
                    deleted.add(which)
                seen.add(fingerprint)
                spool.write(line + b"\n")
                counts[(item["resource"], item["action"], item["reason"])] += 1
        if parts or seen:
            deletions = _deletions_by_resource(counts)
            _put_lines(s3_client, bucket, key, spool, deletions, dict(write_args or {}))
    for part, etag in parts.items():
        _delete_if_unchanged(s3_client, bucket, part, etag)
    summary = summarize_counts(counts)
    summary["key"] = key
    log.info("audit log s3://%s/%s: %d lines from %d parts", bucket, key, len(seen), len(parts))
    return summary


def deletions_so_far(
    s3_client, bucket: str, prefix: str, dag_id: str, run_id: str, resource: str | None = None
) -> int:
    """Items a run has deleted (or, dry, would delete) so far, from its audit objects.

    Each audit object carries its counts in the ``deletions`` and ``deletions-by-resource``
    metadata, so this costs one HEAD per task attempt, not a read of every line. Parts not
    yet merged may be counted twice after an interrupted merge, and a deletion confirmed by
    a later attempt counts twice, which only makes the cap stricter.

    :param resource: count only this resource's deletions (default: all).
    """
    total = 0
    for key in (
        audit_key(prefix, dag_id, run_id),
        *_keys_below(s3_client, bucket, audit_parts_prefix(prefix, dag_id, run_id)),
    ):
        try:
            head = s3_client.head_object(Bucket=bucket, Key=key)
        except ClientError as error:
            if is_not_found(error):
                continue
            raise
        total += _deletions_in(head.get("Metadata", {}), resource)
    return total


def _deletions_in(metadata: dict[str, str], resource: str | None) -> int:
    if resource is None:
        return int(metadata.get("deletions", 0))
    if "deletions-by-resource" not in metadata:  # written before counts per resource
        return int(metadata.get("deletions", 0))
    counts = dict(
        item.split("=", 1) for item in metadata["deletions-by-resource"].split(",") if item
    )
    return int(counts.get(resource, 0))


@contextlib.contextmanager
def audit_part(
    s3_client,
    bucket: str,
    prefix: str,
    dag_id: str,
    run_id: str,
    part: str,
    write_args: dict[str, Any] | None = None,
) -> Iterator[AuditLog]:
    """An :class:`AuditLog` uploaded as the part ``part`` when the block ends, however.

    ``with audit_part(s3, bucket, prefix, dag_id, run_id, "monitors.try1") as audit: ...``
    """
    key = audit_part_key(prefix, dag_id, run_id, part)
    audit = AuditLog(dag_id, run_id, key, write_args)
    try:
        yield audit
    finally:
        try:
            audit.upload(s3_client, bucket, key)
            log.info("audit part s3://%s/%s: %d lines", bucket, key, len(audit))
        finally:
            audit.close()
