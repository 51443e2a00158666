"""Delete at the source what is safely archived: the engine of retention and purges.

:class:`SourceDeleter` takes the records of one resource, ids ascending, and for each one
decides: kept because its own date is not past the cutoff (or cannot be read), kept
under legal hold (re-read before every batch), kept because its archived copy is missing,
does not check out or cannot be checked, or deleted. When the resource's budget
(``max_deletions``) is spent the walk stops with one audit line saying how many were
left. Before each delete request a write-ahead intent is stored in S3
(:class:`~voipstudio_provider.engine.evidence.intents.DeleteIntents`); each batch is then
confirmed by asking for exactly its ids, with a bounded wait, before ``deleted`` is written.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from voipstudio_provider.endpoints import RESOURCES, Filter, parse_api_datetime
from voipstudio_provider.engine.deletion.chats import ChatArchive
from voipstudio_provider.engine.evidence.audit import (
    DELETED,
    DELETED_UNCONFIRMED,
    FAILED,
    SKIPPED,
    WOULD_DELETE,
    AuditLog,
)
from voipstudio_provider.engine.evidence.intents import DeleteIntents, present_ids
from voipstudio_provider.engine.layout import ARCHIVE_KINDS, archive_key
from voipstudio_provider.engine.subjects.legal_hold import LegalHold
from voipstudio_provider.exceptions import VoIPstudioError, VoIPstudioNotFoundError

log = logging.getLogger(__name__)

#: Ids per delete request batch; the hook splits further to keep URLs short.
DELETE_BATCH = 200
#: The most items one retention or purge run deletes unless told otherwise.
DEFAULT_MAX_DELETIONS = 10_000
#: Seconds to wait for deleted rows to disappear (a 202 delete finishes later). Bounded:
#: what is still listed then is ``deleted_unconfirmed`` and a later attempt confirms it.
CONFIRM_TIMEOUT = 20.0
#: Audit reasons that let an item be deleted; every other reason keeps it.
GO_REASONS = frozenset({"archive_verified", "archive_not_required", "archive_pending"})


_LANDED_LATE = "absent when deleted again: an earlier delete request of this run landed late"


class DeletionUnconfirmedError(RuntimeError):
    """Deleted ids were still listed after the wait: audited, the task must fail."""


def _unknown_fate(error: VoIPstudioError | None, read_error: VoIPstudioError | None) -> str | None:
    """Why the ids still listed may yet be deleted, or ``None`` when their fate is known.

    A refusal on the first try (400, 401, 403) is certain: nothing was deleted. A server
    error, a dropped connection or a refusal after a retry may hide a delete that was
    performed, or that the service performs later; so may any delete whose read-back
    failed.
    """
    if read_error is not None:
        return f"the read-back failed: {type(read_error).__name__}: {read_error}"
    if error is not None and (error.retryable or error.after_retry):
        return f"the delete may have taken effect: {type(error).__name__}: {error}"
    return None


def batched(records: Iterable[dict], size: int) -> Iterator[list[dict]]:
    """Consecutive lists of at most ``size`` records."""
    iterator = iter(records)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


class SourceDeleter:
    """Decide, delete in batches, confirm and audit, for the records of one resource.

    :param hook: a :class:`~voipstudio_provider.hooks.voipstudio.VoIPstudioHook`.
    :param s3_client: a boto3 S3 client for the archive bucket.
    :param target: the :class:`~voipstudio_provider.engine.archive.targets.ArchiveTarget`
        (bucket, prefix) archived copies are checked in.
    :param audit: where each decision is written.
    :param resource: ``monitors``, ``voicemessages`` or ``chatmsgs``.
    :param hold: the legal hold.
    :param dry_run: decide and audit (``would_delete``) but delete nothing.
    :param budget: how many more items this run may delete of this resource.
    :param require_archive: delete only what is verified in the archive (purges may turn
        this off; retention never does).
    :param batch_size: ids per delete batch.
    :param confirm_timeout: seconds to wait for deleted rows to disappear.
    :param checkpoint: called after each batch that deleted something (uploads the audit
        so far, so a crash loses no line about a delete).
    :param audit_fields: fields added to every audit line (e.g. ``cutoff``).
    :param cutoff: a record is deleted only if its own date is before this (checked on the
        client whatever the API filtered).
    :param hold_loader: reads the legal hold again; called before every batch.
    :param intents: the attempt's write-ahead intents; without, no intent is written.
    :param still_matches: for a purge, whether a planned record still matches its criteria.
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
        cutoff: dt.datetime | None = None,
        hold_loader: Callable[[], LegalHold] | None = None,
        intents: DeleteIntents | None = None,
        still_matches: Callable[[dict], bool] | None = None,
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
        self.cutoff = cutoff
        self.hold_loader = hold_loader
        self.intents = intents
        self.still_matches = still_matches
        self.kind = ARCHIVE_KINDS.get(resource)
        self.chats = (
            ChatArchive(hook, s3_client, target, hold, write=not dry_run and require_archive)
            if resource == "chatmsgs"
            else None
        )
        self.deleted = 0
        self.failed = 0
        self.unconfirmed = 0
        #: Records past the cutoff left for the next run when the budget stopped the walk.
        self.left_for_next_run: int | None = None

    # -- deciding ---------------------------------------------------------------------

    def _fields(self, record: dict) -> dict[str, Any]:
        date_field = RESOURCES[self.resource].date_field
        fields = dict(self.audit_fields)
        if date_field:
            fields["record_date"] = record.get(date_field)
        if self.resource == "chatmsgs":
            fields["chat_id"] = record.get("chat_id")
        return fields

    def _note(self, record: dict, action: str, reason: str, detail=None, key=None) -> None:
        self.audit.add(
            self.resource, record["id"], action, reason, detail=detail, archive_key=key,
            **self._fields(record),
        )  # fmt: skip

    def _key(self, record: dict) -> str | None:
        if self.chats is not None:
            return self.chats.key_of(record)
        return archive_key(self.target.prefix, self.kind, record)

    def _date_check(self, record: dict) -> tuple[str, str] | None:
        """Why the record's own date keeps it, or ``None`` when it is past the cutoff."""
        if self.cutoff is None:
            return None
        date_field = RESOURCES[self.resource].date_field
        value = record.get(date_field)
        try:
            moment = parse_api_datetime(value)
        except (TypeError, ValueError):
            return "date_unreadable", f"{date_field} {value!r} is not a date YYYY-MM-DD HH:MM:SS"
        if moment >= self.cutoff:
            return (
                "not_past_cutoff",
                f"{date_field} {value} is not before {self.cutoff.isoformat()}",
            )
        return None

    def _check(self, record: dict) -> tuple[str, str | None, str | None]:
        """``(reason, detail, archive key)``; a reason in :data:`GO_REASONS` lets it go."""
        too_recent = self._date_check(record)
        if too_recent:
            return too_recent[0], too_recent[1], None
        if self.still_matches is not None and not self.still_matches(record):
            return "no_longer_matches", None, self._safe_key(record)
        if self.chats is not None:
            return self.chats.check(record, check_archive=self.require_archive)
        reason = self.hold.reason(self.resource, record)
        key = self._key(record)
        if reason:
            return reason, None, key
        if not self.require_archive:
            return "archive_not_required", None, key
        from voipstudio_provider.engine.archive.writer import verify_archive

        verification = verify_archive(self.s3_client, self.kind, record, self.target)
        if verification.ok:
            return "archive_verified", verification.reason, verification.key
        if verification.reason.startswith("unverifiable"):
            return "archive_unverifiable", verification.reason, verification.key
        return "archive_unverified", verification.reason, verification.key

    def _refresh_hold(self) -> None:
        if self.hold_loader is None:
            return
        hold = self.hold_loader()
        if hold != self.hold:
            log.info("%s: the legal hold changed during the run; from now on: %s",
                     self.resource, hold.describe())  # fmt: skip
            self.hold = hold
            if self.chats is not None:  # chats decide their hold when first seen
                self.chats = ChatArchive(
                    self.hook, self.s3_client, self.target, hold, write=self.chats.write
                )

    def run(self, records: Iterable[dict]) -> None:
        """Decide and delete ``records`` (ids ascending), batch by batch.

        Stops when the budget is spent: the next record gets one ``max_deletions`` line
        saying how many were left, and :attr:`left_for_next_run` says it too.
        """
        for batch in batched(records, self.batch_size):
            self._refresh_hold()
            chosen: list[tuple[dict, str | None, str]] = []
            stopped_at: dict | None = None
            for record in batch:
                if self.budget <= 0:
                    stopped_at = record
                    break
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
                self._delete_and_checkpoint(chosen)
            if stopped_at is not None:
                self._stop_for_budget(stopped_at)
                return

    def _stop_for_budget(self, record: dict) -> None:
        filters = [Filter("id", "gte", record["id"])]
        try:
            left = self.hook.count(self.resource, until=self.cutoff, filters=filters)
        except VoIPstudioError as error:  # the count is for people; the stop is what matters
            log.warning("could not count the %s left: %s", self.resource, error)
            left = None
        self.left_for_next_run = left
        words = "an unknown number of" if left is None else str(left)
        detail = (
            f"max_deletions spent; {words} {self.resource} from id {record['id']} on were "
            "left for the next run"
        )
        self._note(record, SKIPPED, "max_deletions", detail, self._safe_key(record))
        log.warning("%s: %s", self.resource, detail)

    def _safe_key(self, record: dict) -> str | None:
        try:
            return self._key(record)
        except (KeyError, TypeError, ValueError):
            return None

    # -- deleting ---------------------------------------------------------------------

    def _delete_and_checkpoint(self, chosen: list[tuple[dict, str | None, str]]) -> None:
        intent = None
        if self.intents is not None:
            items = {
                record["id"]: {"reason": reason, "archive_key": key, **self._fields(record)}
                for record, key, reason in chosen
            }
            intent = self.intents.record(self.resource, items)
        settled: set[int] = set()
        unconfirmed_before = self.unconfirmed
        try:
            self._delete(chosen, settled)
        finally:
            if self.checkpoint is not None:
                self.checkpoint()
                # Resolved only when every id has its final line in S3: an id whose fate
                # is unknown (unconfirmed, a lost answer, a failed read-back, an
                # interruption before its line) keeps the intent for the source to be asked.
                if intent is not None and settled >= {record["id"] for record, _, _ in chosen}:
                    self.intents.resolve(intent)
        if self.unconfirmed > unconfirmed_before:
            raise DeletionUnconfirmedError(
                f"{self.unconfirmed - unconfirmed_before} {self.resource} were still listed "
                f"{self.confirm_timeout:.0f} s after their delete was accepted; audited "
                "deleted_unconfirmed, a later attempt confirms them"
            )

    def _request_delete(
        self, pending: set[int], by_id: dict[int, tuple[dict, str | None, str]],
        settled: set[int],
    ) -> tuple[VoIPstudioError | None, set[int]]:  # fmt: skip
        """Send the delete of ``pending`` (ids vanished meanwhile are audited ``gone``
        and removed from it); return the error that ended it, if any, and the ids a lost
        answer's retry found already absent."""
        try:
            self.hook.delete_records(self.resource, sorted(pending))
        except VoIPstudioNotFoundError as not_found:
            try:
                done = set(getattr(not_found, "deleted_ids", ()))
                still = present_ids(self.hook, self.resource, pending - done)
            except VoIPstudioError as read_error:
                return read_error, set()
            absent = pending - done - still
            # Gone because another deleting run deleted (and audited) it meanwhile.
            others = self.intents.deleted_elsewhere(self.resource, absent) if self.intents else {}
            for gone, by in sorted(others.items()):
                record, key, _ = by_id[gone]
                self._note(record, SKIPPED, "gone", f"deleted by {by} meanwhile", key)
            pending -= set(others)
            settled |= set(others)
            absent -= set(others)
            if getattr(not_found, "after_retry", False):
                # The 404 answered a retry: the first request most likely deleted the
                # batch and only its answer was lost. What is absent was deleted by this
                # run, and counts against max_deletions.
                retried_away = absent
            else:
                # All or nothing: one id vanished meanwhile (deleted elsewhere); the rest
                # remain.
                retried_away = set()
                earlier = self.intents.earlier if self.intents is not None else {}
                for gone in sorted(absent):
                    record, key, reason = by_id[gone]
                    if gone in earlier:  # this run's earlier accepted delete landed late
                        self.deleted += 1
                        self._note(record, DELETED, reason, _LANDED_LATE, key)
                    else:
                        self._note(record, SKIPPED, "gone", "not found when deleting", key)
                    pending.discard(gone)
                    settled.add(gone)
            if still:
                try:
                    self.hook.delete_records(self.resource, sorted(still))
                except VoIPstudioError as retry_error:
                    return retry_error, retried_away
            return None, retried_away
        except VoIPstudioError as delete_error:
            return delete_error, set()
        return None, set()

    @staticmethod
    def _accepted(error: VoIPstudioError | None, pending: set[int]) -> set[int]:
        """The ids whose delete request was answered with success."""
        if error is None:
            return set(pending)
        return set(getattr(error, "deleted_ids", ())) & pending

    def _delete(self, chosen: list[tuple[dict, str | None, str]], settled: set[int]) -> None:
        """Delete, read back, and write each id's line; ``settled`` gets the ids whose
        line is final (``deleted``, ``gone``, or ``failed`` on a certain refusal)."""
        by_id = {record["id"]: (record, key, reason) for record, key, reason in chosen}
        pending = set(by_id)
        error, retried_away = self._request_delete(pending, by_id, settled)
        read_error: VoIPstudioError | None = None
        try:
            remaining = self._wait_until_gone(pending, patient=error is None)
        except VoIPstudioError as failed_read:
            read_error, remaining = failed_read, set(pending)
        unknown_why = _unknown_fate(error, read_error)
        # A certain refusal deleted nothing: an id it covered that is not listed is one the
        # token cannot see, not one that is gone.
        certain = self._accepted(error, pending) | retried_away if unknown_why is None else None
        absent = set() if read_error is not None else pending - remaining
        # An accepted request proves nothing about an id another run deleted first.
        others = self.intents.deleted_elsewhere(self.resource, absent) if self.intents else {}
        for record_id in sorted(pending):
            record, key, reason = by_id[record_id]
            refused = error is not None and certain is not None and record_id not in certain
            if record_id in others:
                self._note(record, SKIPPED, "gone", f"deleted by {others[record_id]}", key)
                settled.add(record_id)
            elif read_error is None and record_id not in remaining and not refused:
                self.deleted += 1
                detail = (
                    "absent after a retried delete request"
                    if record_id in retried_away
                    else "absence confirmed by reading back"
                )
                self._note(record, DELETED, reason, detail, key)
                settled.add(record_id)
            elif unknown_why is not None:
                # The request may have taken effect, or may still: never `failed` and
                # forgotten; the intent stays until the source is asked again.
                self.unconfirmed += 1
                self._note(record, DELETED_UNCONFIRMED, "delete_outcome_unknown", unknown_why, key)
            elif error is not None:
                self.failed += 1
                self._note(record, FAILED, "delete_error", f"{type(error).__name__}: {error}", key)
                settled.add(record_id)
            else:
                self.unconfirmed += 1
                self._note(record, DELETED_UNCONFIRMED, "delete_unconfirmed", None, key)
        if error is not None or read_error is not None:
            # Audit first, then stop: an API that fails deletes will not start accepting.
            raise error or read_error

    def _wait_until_gone(self, ids: set[int], *, patient: bool = True) -> set[int]:
        """The ids still listed after a bounded poll (no wait after a refused delete)."""
        remaining = present_ids(self.hook, self.resource, ids)
        deadline = time.monotonic() + (self.confirm_timeout if patient else 0.0)
        wait = 0.5
        while remaining and time.monotonic() < deadline:
            time.sleep(min(wait, max(0.0, deadline - time.monotonic())))
            wait = min(wait * 2, 5.0)
            remaining = present_ids(self.hook, self.resource, remaining)
        return remaining
