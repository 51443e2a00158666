"""Delete at the source what is safely archived: the engine of retention and purges.

:class:`SourceDeleter` takes the records of one resource, ids ascending, and for each one
decides: kept under legal hold, kept because its archived copy is missing or does not
check out, kept because the run's ``max_deletions`` is reached, or deleted. Deletes go in
id batches and are confirmed by reading back (a delete answered 202 finishes later) before
"deleted" is written to the audit log. Chat messages are archived first, with their chat,
by :class:`ChatArchive`.

:func:`retain_resource` is the retention task: it walks the records older than the
resource's cutoff by keyset (``id gt last id``), so its own deletes and calls arriving
meanwhile never make it skip a row.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from voipstudio_provider.audit import (
    DELETED,
    FAILED,
    SKIPPED,
    WOULD_DELETE,
    AuditLog,
    audit_part,
    deletions_so_far,
    merge_audit_parts,
)
from voipstudio_provider.endpoints import RESOURCES, Filter
from voipstudio_provider.exceptions import VoIPstudioError, VoIPstudioNotFoundError
from voipstudio_provider.layout import ARCHIVE_KINDS, archive_key, chat_key, record_day
from voipstudio_provider.phone_numbers import REGION_VARIABLE, parse_region
from voipstudio_provider.policy import (
    LegalHold,
    parse_legal_hold,
    parse_retention_policy,
    retention_cutoff,
)

log = logging.getLogger(__name__)

#: Ids per delete request batch; the hook splits further to keep URLs short.
DELETE_BATCH = 200
#: Seconds to wait for deleted rows to disappear (a 202 delete finishes later).
CONFIRM_TIMEOUT = 60.0
#: Audit reasons that let an item be deleted; every other reason keeps it.
GO_REASONS = frozenset({"archive_verified", "archive_not_required", "archive_pending"})


def batched(records: Iterable[dict], size: int) -> Iterator[list[dict]]:
    """Consecutive lists of at most ``size`` records."""
    iterator = iter(records)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def present_ids(hook, resource: str, ids: Iterable[int]) -> set[int]:
    """Which of ``ids`` the API still lists (one keyset walk over their id range)."""
    wanted = set(ids)
    if not wanted:
        return set()
    bounds = [Filter("id", "gte", min(wanted)), Filter("id", "lte", max(wanted))]
    return {row["id"] for row in hook.iter_records(resource, filters=bounds) if row["id"] in wanted}


def _fingerprint(record: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


class _ChatState:
    """What one chat's archive holds: its key, why it is held, the archived messages."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.hold_reason: str | None = None
        self.archived: dict[int, str] = {}  # message id -> fingerprint of the archived copy
        self.problem: str | None = None  # why the archive cannot be trusted


class ChatArchive:
    """Each chat with all its messages in ``{p}/chats/date=YYYY-MM-DD/{chat_id}.json``.

    The object is ``{"chat": {...}, "messages": [...], "archived_at": ...}`` with the body's
    SHA-256 in its ``sha256`` metadata. Messages archived by an earlier run (and since
    deleted at the source) stay in it: a new copy merges the old one with what the API has
    now. An object that does not match its own ``sha256`` is never overwritten; its chat's
    messages are kept. A chat is held as a whole when its id is held or a held number is
    in a visitor field or in any of its messages.

    :param write: archive chats (off for dry runs, which only say what they would do).
    """

    def __init__(self, hook, s3_client, target, hold: LegalHold, *, write: bool) -> None:
        self.hook = hook
        self.s3_client = s3_client
        self.target = target
        self.hold = hold
        self.write = write
        self._chats: dict[int, _ChatState] = {}

    def key_of(self, message: dict) -> str:
        return self._state(int(message["chat_id"]), message).key

    def check(self, message: dict, *, check_archive: bool) -> tuple[str, str | None, str]:
        """``(reason, detail, key)`` for one message; a reason in :data:`GO_REASONS` lets
        it go."""
        state = self._state(int(message["chat_id"]), message)
        if state.hold_reason:
            return state.hold_reason, f"chat {message['chat_id']} is held", state.key
        if self.hold.held_id("chatmsgs", message["id"]):
            return "legal_hold_id", None, state.key
        if not check_archive:
            return "archive_not_required", None, state.key
        if state.problem:
            return "archive_unverified", state.problem, state.key
        if state.archived.get(message["id"]) == _fingerprint(message):
            return "archive_verified", "verified in the chat archive", state.key
        if not self.write:
            return "archive_pending", None, state.key
        return "archive_unverified", "message not in the chat archive", state.key

    def _state(self, chat_id: int, message: dict) -> _ChatState:
        if chat_id not in self._chats:
            self._chats[chat_id] = self._load(chat_id, message)
        return self._chats[chat_id]

    def _load(self, chat_id: int, message: dict) -> _ChatState:
        try:
            chat = self.hook.get_record("chats", chat_id)
        except VoIPstudioNotFoundError:
            chat = None
        messages = list(
            self.hook.iter_records("chatmsgs", filters=[Filter("chat_id", "eq", chat_id)])
        )
        first = min(messages or [message], key=lambda m: m["id"])
        day = record_day("chats", chat) if chat else record_day("chatmsgs", first)
        state = _ChatState(chat_key(self.target.prefix, chat_id, day))
        # The archive first: a message naming a held number may have been deleted at the
        # source by an earlier run, and still holds the rest of its chat.
        stored = self._read(state)
        state.hold_reason = self._hold_reason(chat_id, chat, stored, messages)
        if state.hold_reason or state.problem:
            return state
        current = {m["id"]: m for m in messages}
        if self.write and any(state.archived.get(i) != _fingerprint(m) for i, m in current.items()):
            merged = {m["id"]: m for m in (stored or {}).get("messages", [])} | current
            self._put(state, chat or (stored or {}).get("chat"), merged)
            self._read(state)
        return state

    def _hold_reason(
        self, chat_id: int, chat: dict | None, stored: dict | None, messages: list[dict]
    ) -> str | None:
        """Why the chat is held, from the chat and messages at the source and archived."""
        stored = stored or {}
        known = [*stored.get("messages", []), *messages]
        return self.hold.chat_reason(chat_id, chat, known) or self.hold.chat_reason(
            chat_id, stored.get("chat"), []
        )

    def _read(self, state: _ChatState) -> dict | None:
        try:
            answer = self.s3_client.get_object(Bucket=self.target.bucket, Key=state.key)
        except self.s3_client.exceptions.NoSuchKey:
            state.archived = {}
            return None
        with answer["Body"] as body:
            raw = body.read()
        if answer.get("Metadata", {}).get("sha256") != hashlib.sha256(raw).hexdigest():
            state.problem = "chat archive does not match its sha256 metadata"
            return None
        stored = json.loads(raw)
        state.archived = {m["id"]: _fingerprint(m) for m in stored.get("messages", [])}
        return stored

    def _put(self, state: _ChatState, chat: dict | None, messages: dict[int, dict]) -> None:
        document = {
            "chat": chat,
            "messages": [messages[i] for i in sorted(messages)],
            "archived_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        from voipstudio_provider.archive import put_json

        put_json(self.s3_client, self.target, state.key, document, sha256_metadata=True)


class SourceDeleter:
    """Decide, delete in batches, confirm and audit, for the records of one resource.

    :param hook: a :class:`~voipstudio_provider.hooks.voipstudio.VoIPstudioHook`.
    :param s3_client: a boto3 S3 client for the archive bucket.
    :param target: the :class:`~voipstudio_provider.archive.ArchiveTarget` (bucket, prefix)
        archived copies are checked in.
    :param audit: where each decision is written.
    :param resource: ``monitors``, ``voicemessages`` or ``chatmsgs``.
    :param hold: the legal hold.
    :param dry_run: decide and audit (``would_delete``) but delete nothing.
    :param budget: how many more items this run may delete (``max_deletions`` left).
    :param require_archive: delete only what is verified in the archive (purges may turn
        this off; retention never does).
    :param batch_size: ids per delete batch.
    :param confirm_timeout: seconds to wait for deleted rows to disappear.
    :param checkpoint: called after each batch that deleted something (uploads the audit
        so far, so a crash loses no line about a delete).
    :param audit_fields: fields added to every audit line (e.g. ``cutoff``).
    """

    def __init__(
        self,
        hook,
        s3_client,
        target,
        audit: AuditLog,
        resource: str,
        *,
        hold: LegalHold,
        dry_run: bool,
        budget: int,
        require_archive: bool = True,
        batch_size: int = DELETE_BATCH,
        confirm_timeout: float = CONFIRM_TIMEOUT,
        checkpoint: Callable[[], None] | None = None,
        audit_fields: Mapping[str, Any] | None = None,
    ) -> None:
        if resource not in ("monitors", "voicemessages", "chatmsgs"):
            raise ValueError(f"deleting {resource} at the source is not supported")
        self.hook = hook
        self.s3_client = s3_client
        self.target = target
        self.audit = audit
        self.resource = resource
        self.hold = hold
        self.dry_run = dry_run
        self.budget = max(0, int(budget))
        self.require_archive = require_archive
        self.batch_size = batch_size
        self.confirm_timeout = confirm_timeout
        self.checkpoint = checkpoint
        self.audit_fields = dict(audit_fields or {})
        self.kind = ARCHIVE_KINDS.get(resource)
        self.chats = (
            ChatArchive(hook, s3_client, target, hold, write=not dry_run and require_archive)
            if resource == "chatmsgs"
            else None
        )
        self.deleted = 0
        self.failed = 0

    # -- deciding ---------------------------------------------------------------------

    def _note(self, record: dict, action: str, reason: str, detail=None, key=None) -> None:
        date_field = RESOURCES[self.resource].date_field
        fields = dict(self.audit_fields)
        if date_field:
            fields["record_date"] = record.get(date_field)
        if self.resource == "chatmsgs":
            fields["chat_id"] = record.get("chat_id")
        self.audit.add(
            self.resource, record["id"], action, reason, detail=detail, archive_key=key, **fields
        )

    def _key(self, record: dict) -> str | None:
        if self.chats is not None:
            return self.chats.key_of(record)
        return archive_key(self.target.prefix, self.kind, record)

    def _check(self, record: dict) -> tuple[str, str | None, str | None]:
        """``(reason, detail, archive key)``; a reason in :data:`GO_REASONS` lets it go."""
        if self.chats is not None:
            return self.chats.check(record, check_archive=self.require_archive)
        reason = self.hold.reason(self.resource, record)
        key = self._key(record)
        if reason:
            return reason, None, key
        if not self.require_archive:
            return "archive_not_required", None, key
        from voipstudio_provider.archive import verify_archive

        verification = verify_archive(self.s3_client, self.kind, record, self.target)
        if not verification.ok:
            return "archive_unverified", verification.reason, verification.key
        return "archive_verified", verification.reason, verification.key

    def run(self, records: Iterable[dict]) -> None:
        """Decide and delete ``records`` (ids ascending), batch by batch."""
        for batch in batched(records, self.batch_size):
            chosen: list[tuple[dict, str | None, str]] = []
            for record in batch:
                if self.budget <= 0:
                    self._note(record, SKIPPED, "max_deletions", key=self._safe_key(record))
                    continue
                reason, detail, key = self._check(record)
                if reason not in GO_REASONS:
                    self._note(record, SKIPPED, reason, detail, key)
                    continue
                self.budget -= 1
                if self.dry_run:
                    self._note(record, WOULD_DELETE, reason, detail, key)
                else:
                    chosen.append((record, key, reason))
            if chosen:
                self._delete(chosen)
                if self.checkpoint:
                    self.checkpoint()

    def _safe_key(self, record: dict) -> str | None:
        try:
            return self._key(record)
        except (KeyError, ValueError):
            return None

    # -- deleting ---------------------------------------------------------------------

    def _delete(self, chosen: list[tuple[dict, str | None, str]]) -> None:
        by_id = {record["id"]: (record, key, reason) for record, key, reason in chosen}
        pending = set(by_id)
        retried_away: set[int] = set()
        error: VoIPstudioError | None = None
        try:
            self.hook.delete_records(self.resource, sorted(pending))
        except VoIPstudioNotFoundError as not_found:
            done = set(getattr(not_found, "deleted_ids", ()))
            still = present_ids(self.hook, self.resource, pending - done)
            absent = pending - done - still
            if getattr(not_found, "after_retry", False):
                # The 404 answered a retry: the first request most likely deleted the
                # batch and only its answer was lost. What is absent was deleted by this
                # run, and counts against max_deletions.
                retried_away = absent
            else:
                # All or nothing: one id vanished meanwhile (deleted elsewhere); the rest
                # remain.
                for gone in sorted(absent):
                    record, key, _ = by_id[gone]
                    self._note(record, SKIPPED, "gone", "not found when deleting", key)
                    pending.discard(gone)
            if still:
                try:
                    self.hook.delete_records(self.resource, sorted(still))
                except VoIPstudioError as retry_error:
                    error = retry_error
        except VoIPstudioError as delete_error:
            error = delete_error
        remaining = self._wait_until_gone(pending)
        for record_id in sorted(pending):
            record, key, reason = by_id[record_id]
            if record_id in remaining:
                self.failed += 1
                why = "delete_error" if error is not None else "delete_unconfirmed"
                detail = f"{type(error).__name__}: {error}" if error is not None else None
                self._note(record, FAILED, why, detail, key)
            else:
                self.deleted += 1
                detail = (
                    "absent after a retried delete request"
                    if record_id in retried_away
                    else "absence confirmed by reading back"
                )
                self._note(record, DELETED, reason, detail, key)
        if error is not None:
            # Audit first, then stop: an API that refuses deletes will not start accepting.
            raise error

    def _wait_until_gone(self, ids: set[int]) -> set[int]:
        remaining = present_ids(self.hook, self.resource, ids)
        deadline = time.monotonic() + self.confirm_timeout
        wait = 0.5
        while remaining and time.monotonic() < deadline:
            time.sleep(min(wait, max(0.0, deadline - time.monotonic())))
            wait = min(wait * 2, 5.0)
            remaining = present_ids(self.hook, self.resource, remaining)
        return remaining


def retain_resource(
    hook,
    s3_client,
    target,
    audit: AuditLog,
    resource: str,
    cutoff: dt.datetime,
    *,
    hold: LegalHold,
    dry_run: bool,
    budget: int,
    checkpoint: Callable[[], None] | None = None,
    confirm_timeout: float = CONFIRM_TIMEOUT,
) -> SourceDeleter:
    """Delete the records of ``resource`` dated before ``cutoff`` that are safely archived.

    :param cutoff: records whose date field is earlier are past retention.
    :return: the deleter, whose ``deleted`` and ``failed`` say what happened.
    """
    deleter = SourceDeleter(
        hook,
        s3_client,
        target,
        audit,
        resource,
        hold=hold,
        dry_run=dry_run,
        budget=budget,
        checkpoint=checkpoint,
        confirm_timeout=confirm_timeout,
        audit_fields={"cutoff": cutoff.isoformat()},
    )
    deleter.run(hook.iter_records(resource, until=cutoff))
    return deleter


# -- the retention DAG's tasks ------------------------------------------------------------

POLICY_VARIABLE = "voipstudio_retention_policy"
HOLD_VARIABLE = "voipstudio_legal_hold"
DEFAULT_MAX_DELETIONS = 10_000


def _variable(name: str) -> Any:
    from airflow.sdk import Variable

    return Variable.get(name, default=None)


def load_default_region() -> str | None:
    """The region national numbers are read in, from ``voipstudio_default_region``."""
    return parse_region(_variable(REGION_VARIABLE))


def load_legal_hold() -> LegalHold:
    """The legal hold from its Variable, its national numbers read in the default region;
    a hold that cannot be read, or a number in it that is not one valid number, stops
    the run."""
    return parse_legal_hold(_variable(HOLD_VARIABLE), region=load_default_region())


def retention_windows(data_interval_end: dt.datetime) -> list[dict[str, Any]]:
    """One ``{"resource", "days", "cutoff"}`` per resource the policy does not keep forever.

    Reads and checks the policy and the legal hold Variables, so a typo in either fails
    the run before anything is deleted.

    :param data_interval_end: the run's end; cutoffs count back from it, so a re-run of
        the same run deletes up to the same moment.
    """
    policy = parse_retention_policy(_variable(POLICY_VARIABLE))
    hold = load_legal_hold()
    log.info("retention policy %s; legal hold %s", policy, hold.describe())
    return [
        {"resource": r, "days": d, "cutoff": retention_cutoff(d, data_interval_end).isoformat()}
        for r, d in policy.items()
        if d is not None
    ]


def clients(voipstudio_conn_id: str, aws_conn_id: str):
    """A VoIPstudio hook and a boto3 S3 client from the two Airflow connections."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from voipstudio_provider.hooks.voipstudio import VoIPstudioHook

    return VoIPstudioHook(voipstudio_conn_id=voipstudio_conn_id), S3Hook(aws_conn_id).get_conn()


def run_retention(
    window: Mapping[str, Any],
    *,
    params: Mapping[str, Any],
    dag_id: str,
    run_id: str,
    try_number: int,
    voipstudio_conn_id: str = "voipstudio_default",
    aws_conn_id: str = "aws_default",
) -> dict[str, Any]:
    """The task of one resource: delete what is past retention and safely archived.

    Its audit lines go to this attempt's part of the run's audit log, uploaded after each
    deleting batch and when the task ends, however it ends.

    :param window: one item of :func:`retention_windows`.
    :param params: the run's params (``dry_run``, ``max_deletions``, ``bucket``, ``prefix``).
    :return: a small summary: counts per action and reason, for XCom.
    """
    from voipstudio_provider.archive import ArchiveTarget
    from voipstudio_provider.settings import resolve_bucket_and_prefix

    resource = window["resource"]
    cutoff = dt.datetime.fromisoformat(window["cutoff"])
    bucket, prefix = resolve_bucket_and_prefix(params)
    dry_run = bool(params.get("dry_run", False))
    max_deletions = int(params.get("max_deletions", DEFAULT_MAX_DELETIONS))
    hold = load_legal_hold()
    hook, s3_client = clients(voipstudio_conn_id, aws_conn_id)
    budget = max_deletions - deletions_so_far(s3_client, bucket, prefix, dag_id, run_id)
    log.info(
        "%s: deleting records before %s (%s days), dry_run=%s, %d of max_deletions %d left",
        resource, cutoff.isoformat(), window.get("days"), dry_run, max(budget, 0), max_deletions,
    )  # fmt: skip
    part = f"{resource}.try{try_number}"
    with audit_part(s3_client, bucket, prefix, dag_id, run_id, part) as audit:
        try:
            retain_resource(
                hook,
                s3_client,
                ArchiveTarget(bucket=bucket, prefix=prefix),
                audit,
                resource,
                cutoff,
                hold=hold,
                dry_run=dry_run,
                budget=budget,
                checkpoint=lambda: audit.upload(s3_client, bucket, audit.key),
            )
        finally:
            summary = audit.summary()
            log.info("%s retention: %s", resource, json.dumps(summary, sort_keys=True))
    return {"resource": resource, "cutoff": cutoff.isoformat(), "dry_run": dry_run, **summary}


def fail_run() -> None:
    """Task run only when another task of the run failed: fail the run as well.

    ``write_audit_log`` is a teardown whose own failure fails the run, which makes it the
    run's only leaf in Airflow's eyes; this task, downstream of the work, keeps a failed
    task failing the run.
    """
    raise RuntimeError("another task of this run failed; its log says why")


def write_audit_log(
    params: Mapping[str, Any], dag_id: str, run_id: str, aws_conn_id: str = "aws_default"
) -> dict[str, Any]:
    """Join the run's audit parts into ``{p}/audit/{dag_id}/{run_id}.jsonl``; summarise it.

    :return: counts per resource, action and reason, and the audit object's key.
    """
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from voipstudio_provider.settings import resolve_bucket_and_prefix

    bucket, prefix = resolve_bucket_and_prefix(params)
    s3_client = S3Hook(aws_conn_id).get_conn()
    summary = merge_audit_parts(s3_client, bucket, prefix, dag_id, run_id)
    log.info("audit s3://%s/%s: %s", bucket, summary["key"], json.dumps(summary, sort_keys=True))
    return summary
