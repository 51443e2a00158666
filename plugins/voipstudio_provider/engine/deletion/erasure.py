"""Erasure of archived copies: what a purge erases at the source goes from the archive too,
unless something obliges the archive to keep it.

For each record to erase (a purged record, or an archived-only record of the purged number
found through the :mod:`~voipstudio_provider.engine.subjects.subject_index`), every stored version
of every archived object of it (binary, sidecar, chat archive, quarantined copies) is
deleted by version, so no older version survives, unless

- a legal hold applies (the Variable's register, or the version's own S3 legal hold):
  kept, with the reason;
- an Object Lock retention is in force: kept, ``erase_after`` its ``RetainUntilDate``
  (the latest of the record's objects: a record goes whole or stays whole);
- a duty to keep applies (``voipstudio_minimum_keep_days`` per resource): kept,
  ``erase_after`` the day the record is old enough.

Every version erased or kept is one line of ``{p}/audit/erasure/{run_id}.jsonl``. What is
kept with a date goes to ``{p}/erasure/pending/{run_id}.json``; :func:`erase_due` (a daily
task) erases it once the date has passed, checking everything again. An erased record's
manifest lines become tombstones (:func:`~.manifests.write_tombstones`) and its subject
index lines are removed. Deletes go through the erasure client only: a role that the
archive and retention roles are not.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from voipstudio_provider.engine.layout import (
    ARCHIVE_KINDS,
    erasure_audit_key,
    erasure_pending_key,
    key_day,
)
from voipstudio_provider.engine.s3objects import (
    error_code,
    is_not_found,
    jsonl,
    put_checked,
    put_json,
)
from voipstudio_provider.engine.subjects.object_holds import (
    ON,
    hold_status,
    record_versions,
    version_args,
)

log = logging.getLogger(__name__)

ERASED, KEPT, ABSENT = "erased", "kept", "absent"
PENDING_FOLDER = "erasure/pending/"


#: Resources whose records have archived copies.
ERASABLE_RESOURCES = ("monitors", "voicemessages", "cdrs", "msdrs", "chats")


def parse_minimum_keep_days(value: str | Mapping | None) -> dict[str, int]:
    """``voipstudio_minimum_keep_days``: ``{"monitors": 2555, "voicemessages": 365}``.

    :raises ValueError: naming the entry, for JSON that is not an object, a resource that
        has no archived copies, or days that are not a whole number of 0 or more.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return {}
    try:
        given = json.loads(value) if isinstance(value, str) else value
    except ValueError as error:
        raise ValueError(f"voipstudio_minimum_keep_days is not JSON: {error}") from None
    if not isinstance(given, Mapping):
        raise ValueError("voipstudio_minimum_keep_days must map resources to days")
    days = {}
    for resource, count in given.items():
        if resource not in ERASABLE_RESOURCES:
            raise ValueError(
                f"voipstudio_minimum_keep_days names {resource!r}; "
                f"known: {', '.join(ERASABLE_RESOURCES)}"
            )
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"voipstudio_minimum_keep_days of {resource} must be days >= 0")
        days[resource] = count
    return days


@dataclass(frozen=True)
class ErasureRules:
    """What keeps an archived copy from erasure.

    :param hold: the :class:`~voipstudio_provider.engine.subjects.legal_hold.LegalHold`.
    :param keep_days: days each resource must be kept from its record's own date
        (``voipstudio_minimum_keep_days``); a resource not named has no such duty.
    :param now: the moment the decisions are made at (aware UTC).
    """

    hold: Any
    keep_days: Mapping[str, int] = field(default_factory=dict)
    now: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    def hold_reason(self, subject: Mapping[str, Any]) -> str | None:
        """Why the register holds a record: its id, a message of its chat, or a number."""
        resource, record_id = subject["resource"], int(subject["record_id"])
        if self.hold.held_id(resource, record_id):
            return f"legal_hold_id ids.{resource}:{record_id}"
        for message in subject.get("message_ids", ()):
            if self.hold.held_id("chatmsgs", message):
                return f"legal_hold_id ids.chatmsgs:{message}"
        for number in subject.get("numbers", ()):
            if number["number"] in self.hold.numbers:
                return "legal_hold_number"
        return None

    def kept_until(self, subject: Mapping[str, Any]) -> dt.datetime | None:
        """The moment a duty to keep the record ends, if it has not ended yet."""
        days = self.keep_days.get(subject["resource"])
        if not days:
            return None
        day = dt.date.fromisoformat(subject["date"])
        until = dt.datetime.combine(day, dt.time(), dt.UTC) + dt.timedelta(days=int(days))
        return until if until > self.now else None


def subjects_of_plan(plan: Mapping[str, Any], index, prefix: str) -> list[dict[str, Any]]:
    """The records a purge plan deletes, as subjects to erase: the index line of each, or,
    for a record the index does not name, its keys from the plan's date of it."""
    from voipstudio_provider.engine.layout import archive_key, sidecar_key

    subjects = []
    for resource, entry in sorted(plan.get("resources", {}).items()):
        dates = entry.get("dates", {})
        for record_id in entry.get("ids", []):
            line = index.of_record(resource, int(record_id))
            if line is not None:
                subjects.append(line)
                continue
            when = dates.get(str(record_id))
            kinds = [k for k in ARCHIVE_KINDS.values() if k.resource == resource]
            if when is None or not kinds:
                continue
            record = {"id": record_id, _date_field(resource): when}
            keys = [archive_key(prefix, k, record) for k in kinds]
            keys += [sidecar_key(prefix, k, record) for k in kinds if k.sidecar]
            day = key_day(keys[0]).isoformat()
            subjects.append({"resource": resource, "record_id": int(record_id), "date": day,
                             "keys": keys, "numbers": []})  # fmt: skip
    return subjects


def _date_field(resource: str) -> str:
    from voipstudio_provider.endpoints import RESOURCES

    return RESOURCES[resource].date_field or "created_at"


def subjects_of_number(index, number: str) -> list[dict[str, Any]]:
    """Every indexed record that involves ``number`` (E.164) beyond doubt."""
    return index.of_number(number, exact=True)


def _version_lock(s3_client, bucket: str, key: str, version_id: str) -> tuple[str, Any]:
    """``(legal hold, RetainUntilDate or None)`` of a stored version, from one HEAD (and
    ``GetObjectLegalHold`` when the HEAD does not show the flag)."""
    head = s3_client.head_object(Bucket=bucket, Key=key, **version_args(version_id))
    status = head.get("ObjectLockLegalHoldStatus") or hold_status(
        s3_client, bucket, key, version_id
    )
    return status, head.get("ObjectLockRetainUntilDate")


@dataclass
class ErasureRun:
    """One erasure: the audit lines, what stays pending, and the records fully erased.

    :param target: the archive (``bucket``, ``prefix``, write options).
    :param run_id: the run erasing (named in every audit line).
    :param reason: why the records are erased (``compliance_purge``).
    :param purge_run: the purge run that decided it, named in the tombstones.
    """

    s3: Any
    erasure_client: Any
    target: Any
    rules: ErasureRules
    run_id: str
    reason: str = "compliance_purge"
    purge_run: str | None = None
    lines: list[dict[str, Any]] = field(default_factory=list)
    pending: list[dict[str, Any]] = field(default_factory=list)
    erased_refs: list[tuple[str, int]] = field(default_factory=list)
    erased_keys: dict[str, dict[str, Any]] = field(default_factory=dict)

    def _line(self, subject, key, version, action: str, why: str, **extra) -> None:
        self.lines.append({
            "at": self.rules.now.isoformat(timespec="seconds"), "action": action,
            "resource": subject["resource"], "record_id": int(subject["record_id"]),
            "key": key, "version_id": version, "reason": why, "run_id": self.run_id,
            "purge_run": self.purge_run, **extra,
        })  # fmt: skip

    def _keep(self, subject, key, version, why: str, erase_after: dt.datetime | None) -> None:
        after = erase_after.astimezone(dt.UTC).isoformat() if erase_after else None
        self._line(subject, key, version, KEPT, why, erase_after=after)
        self.pending.append({
            "resource": subject["resource"], "record_id": int(subject["record_id"]),
            "date": subject["date"], "keys": list(subject["keys"]), "key": key,
            "version_id": version, "reason": why, "erase_after": after,
        })  # fmt: skip

    def erase(self, subject: Mapping[str, Any]) -> None:
        """Erase, or keep with its reason, every stored version of one record."""
        bucket = self.target.bucket
        versions = record_versions(self.s3, bucket, self.target.prefix, subject["keys"])
        ref = (subject["resource"], int(subject["record_id"]))
        if not versions:
            # Nothing stored: no tombstone either, so a lost object is never called erased.
            self._line(subject, None, None, ABSENT, "no archived object")
            self.erased_refs.append(ref)
            return
        held = self.rules.hold_reason(subject)
        if held is not None:
            for key, version in versions:
                self._line(subject, key, version, KEPT, held)
            return
        until = self.rules.kept_until(subject)
        if until is not None:
            for key, version in versions:
                self._keep(subject, key, version, "minimum_keep_days", until)
            return
        # A record goes whole or stays whole: a kept binary keeps the sidecar describing it.
        locks = [_version_lock(self.s3, bucket, key, version) for key, version in versions]
        if any(status == ON for status, _ in locks):
            for key, version in versions:
                self._line(subject, key, version, KEPT, "legal_hold_on_object")
            return
        retained = [until for _, until in locks if until is not None and until > self.rules.now]
        if retained:
            for key, version in versions:
                self._keep(subject, key, version, "object_lock_retention", max(retained))
            return
        left = sum(1 for key, version in versions if not self._delete(subject, key, version))
        if left == 0:
            self.erased_refs.append(ref)
            for key in sorted({key for key, _ in versions} & set(subject["keys"])):
                self.erased_keys[key] = {
                    "erased_at": self.rules.now.isoformat(timespec="seconds"),
                    "reason": self.reason, "purge_run": self.purge_run,
                }  # fmt: skip

    def _delete(self, subject, key: str, version: str) -> bool:
        try:
            self.erasure_client.delete_object(
                Bucket=self.target.bucket, Key=key, **version_args(version)
            )
        except ClientError as error:
            if is_not_found(error):
                return True
            # S3 refused (a lock this caller could not see): kept, and tried again daily.
            self._keep(subject, key, version, f"refused_by_s3 {error_code(error)}", None)
            return False
        self._line(subject, key, version, ERASED, self.reason)
        return True

    def counts(self) -> dict[str, int]:
        return {
            "erased": sum(1 for x in self.lines if x["action"] == ERASED),
            "kept": sum(1 for x in self.lines if x["action"] == KEPT),
            "pending": len(self.pending),
            "records_erased": len(self.erased_refs),
        }


def erase_subjects(
    s3_client, erasure_client, target, index, subjects: Iterable[Mapping[str, Any]],
    rules: ErasureRules, run_id: str, *, reason: str = "compliance_purge",
    purge_run: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Erase the archived copies of ``subjects``; audit, tombstone and un-index what went.

    :param s3_client: reads the archive (the role of the DAG that erases).
    :param erasure_client: the only client that deletes (the erasure role); it also
        writes what the erasure changes: its audit, its pending list, the tombstoned
        manifests and the rewritten index objects.
    :param index: the subject index (:class:`~.subject_index.SubjectIndex`), read.
    :return: counts, ``audit_key``, ``pending_key``, ``manifests`` (versions written).
    """
    from voipstudio_provider.engine.evidence.manifests import manifest_index, write_tombstones
    from voipstudio_provider.engine.subjects.subject_index import forget

    run = ErasureRun(s3_client, erasure_client, target, rules, run_id, reason, purge_run)
    seen = set()
    for subject in subjects:
        ref = (subject["resource"], int(subject["record_id"]))
        if ref not in seen:
            seen.add(ref)
            run.erase(subject)
    result: dict[str, Any] = {**run.counts(), "audit_key": None, "pending_key": None}
    if run.lines:
        key = erasure_audit_key(target.prefix, run_id)
        # The deleting role writes its own audit, as retention and the purge do.
        put_checked(
            erasure_client, target.bucket, key, jsonl(run.lines),
            content_type="application/x-ndjson", write_args=target.document_args(),
        )  # fmt: skip
        result["audit_key"] = key
    # The pending list names keys and ids only; it is rewritten as items go.
    pending_key = erasure_pending_key(target.prefix, run_id)
    if run.pending:
        document = {"run_id": run_id, "purge_run": purge_run, "reason": reason,
                    "items": run.pending}  # fmt: skip
        put_json(erasure_client, target.bucket, pending_key, document, write_args=_plain(target))
        result["pending_key"] = pending_key
    by_day: dict[dt.date, dict[str, dict]] = {}
    for key, why in run.erased_keys.items():
        by_day.setdefault(key_day(key), {})[key] = why
    manifests = manifest_index(s3_client, target.bucket, target.prefix) if by_day else {}
    written = []
    for day, erased in sorted(by_day.items()):
        # The erasure role writes what erasure changes, whichever role runs the DAG.
        document = write_tombstones(erasure_client, target, day, erased, manifests)
        if document is not None:
            written.append(document["jsonl"]["key"])
    result["manifests"] = written
    result["index_objects_rewritten"] = forget(
        erasure_client, erasure_client, target, index, run.erased_refs
    )
    log.info("erasure %s: %s", run_id, {k: result[k] for k in run.counts()})
    return result


def _plain(target) -> dict[str, Any]:
    from voipstudio_provider.engine.subjects.subject_index import index_write_args

    return index_write_args(target)


def pending_items(s3_client, bucket: str, prefix: str) -> dict[str, dict[str, Any]]:
    """Every pending list by key: ``{key: document}``."""
    found = {}
    paginator = s3_client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=f"{prefix}/{PENDING_FOLDER}"):
        for obj in page.get("Contents", []):
            body = s3_client.get_object(Bucket=bucket, Key=obj["Key"])["Body"]
            with body:
                found[obj["Key"]] = json.loads(body.read())
    return found


def erase_due(
    s3_client, erasure_client, target, index, rules: ErasureRules, run_id: str
) -> dict[str, Any]:
    """Erase the pending copies whose date has passed (or that S3 refused without one),
    deciding everything again; keep the pending lists of what must still wait.

    :return: the counts of :func:`erase_subjects`, and ``waiting`` (items not yet due).
    """
    from voipstudio_provider.engine.subjects.subject_index import _versions

    lists = pending_items(s3_client, target.bucket, target.prefix)
    now = rules.now.isoformat()
    due: dict[tuple[str, int], dict[str, Any]] = {}
    purge_runs: dict[tuple[str, int], str | None] = {}
    for document in lists.values():
        for item in document["items"]:
            if item["erase_after"] is None or item["erase_after"] <= now:
                ref = (item["resource"], int(item["record_id"]))
                due[ref] = index.lines.get(ref) or {
                    k: item[k] for k in ("resource", "record_id", "date", "keys")
                }
                purge_runs[ref] = document.get("purge_run")
    purges = ",".join(sorted({p for p in purge_runs.values() if p})) or None
    result = erase_subjects(
        s3_client, erasure_client, target, index, due.values(), rules, run_id,
        reason="erase_after_passed", purge_run=purges,
    )  # fmt: skip
    # The new run's pending list holds whatever must still wait; the old lists go.
    for key in lists:
        remaining = [
            item for item in lists[key]["items"]
            if (item["resource"], int(item["record_id"])) not in due
        ]  # fmt: skip
        before = _versions(s3_client, target.bucket, key)
        if remaining:
            # Written before the old versions go: a failure in between loses no item.
            put_json(erasure_client, target.bucket, key, {**lists[key], "items": remaining},
                     write_args=_plain(target))  # fmt: skip
        for version in before:
            erasure_client.delete_object(Bucket=target.bucket, Key=key, VersionId=version)
        if not before and not remaining:
            erasure_client.delete_object(Bucket=target.bucket, Key=key)
    result["waiting"] = sum(
        1
        for d in lists.values()
        for i in d["items"]
        if (i["resource"], int(i["record_id"])) not in due
    )
    return result
