"""Compare the source with the archive, day by day (README, "voipstudio_reconcile").

For each day and each archived resource the source is listed once (the API, by its date
field) and the bucket is listed once by the day's prefix (one LIST per 1,000 keys). An
object is ``verified`` when the listing's size and ETag equal what the archiver recorded
in its ledger (:mod:`~voipstudio_provider.engine.archive.ledger`); an object with no ledger
line (archived before ledgers existed) gets the byte-level check of
:func:`~voipstudio_provider.engine.archive.proof.verify_archive`, one HEAD. The findings:

- ``missing``: a source record whose archive object is absent;
- ``unverified``: the object is there but differs from what was archived, or cannot be
  checked (a size or ETag that changed, a sidecar that is gone);
- ``orphaned``: an archived object whose source record is gone without an audit line
  saying it was deleted, or which the archive never wrote.

An object erased with an audit line (``{p}/audit/erasure/``) is counted ``erased``, never
a gap.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from voipstudio_provider.engine.archive.ledger import bare_etag, read_day
from voipstudio_provider.engine.layout import (
    ARCHIVE_KINDS,
    archive_key,
    parse_api_datetime,
    sidecar_key,
)

log = logging.getLogger(__name__)

#: The binary kinds the archive DAGs keep by default; traces are optional and not required.
RECONCILED_KINDS = ("monitors", "voicemessages", "cdr_pcaps", "msdr_pcaps")
#: Everything the reconciliation can compare: the binaries, per-user CSVs, archived chats.
RECONCILED_RESOURCES = (*RECONCILED_KINDS, "cdr_csv", "chats")
#: Kept only when a run asks for them (``include_traces``): checked where they exist.
OPTIONAL_KINDS = {"cdr_pcaps": "cdr_traces", "msdr_pcaps": "msdr_traces"}
FINDINGS = ("missing", "unverified", "orphaned")
_OBJECT_ID = re.compile(r"/(\d+)\.[a-z0-9]+$")
_CSV_KEY = re.compile(r"/cdr-csv/user_id=(\d+)/date=(\d{4}-\d{2}-\d{2})/cdrs\.csv$")
_CHAT_KEY = re.compile(r"/chats/date=(\d{4}-\d{2}-\d{2})/(\d+)\.json$")


def count_requests(s3_client) -> Counter[str]:
    """Count the S3 requests ``s3_client`` makes from now on, by operation name."""
    counts: Counter[str] = Counter()

    def seen(model, **_) -> None:
        counts[model.name] += 1

    s3_client.meta.events.register("before-call.s3.*", seen)
    return counts


def day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(day, dt.time(), dt.UTC)
    return start, start + dt.timedelta(days=1)


def list_objects(s3_client, bucket: str, prefix: str, start_after: str | None = None):
    """``(key, size, etag)`` of every object below ``prefix``, one LIST per 1,000 keys."""
    args = {"Bucket": bucket, "Prefix": prefix}
    if start_after:
        args["StartAfter"] = start_after
    for page in s3_client.get_paginator("list_objects_v2").paginate(**args):
        for obj in page.get("Contents", []):
            yield obj["Key"], int(obj["Size"]), bare_etag(obj.get("ETag"))


@dataclass
class DayResult:
    """What one day of one kind holds: counts, gaps and the manifest entries."""

    counts: Counter[str] = field(default_factory=Counter)
    gaps: list[dict[str, Any]] = field(default_factory=list)
    entries: list[dict[str, Any]] = field(default_factory=list)

    def add_gap(
        self, finding: str, record_id: int, key: str, reason: str, date: str | None
    ) -> None:
        """Count a finding and name it: ``date`` is the record's own (``None``: always due)."""
        self.counts[finding] += 1
        self.gaps.append(
            {"finding": finding, "id": record_id, "key": key, "reason": reason, "date": date}
        )


class Reconciler:
    """Compares source and bucket for a range of days.

    :param voip_hook: a :class:`~voipstudio_provider.hooks.voipstudio.VoIPstudioHook`.
    :param s3_client: a boto3 S3 client.
    :param target: the :class:`~voipstudio_provider.engine.archive.targets.ArchiveTarget`
        (bucket, prefix).
    :param kinds: the binary kinds to reconcile.
    """

    def __init__(self, voip_hook, s3_client, target, kinds: Sequence[str] = RECONCILED_KINDS):
        self.hook = voip_hook
        self.s3 = s3_client
        self.target = target
        names = [*kinds, *(OPTIONAL_KINDS[k] for k in kinds if k in OPTIONAL_KINDS)]
        self.kinds = [ARCHIVE_KINDS[name] for name in names]
        self._deleted: set[tuple[str, int]] | None = None
        self._erased: set[str] | None = None
        self._manifests: dict | None = None
        self._manifest_times: dict[str, dt.datetime] = {}

    # --- the source and the bucket of one day -------------------------------------------

    def source_day(self, resource: str, day: dt.date) -> dict[int, dict]:
        since, until = day_bounds(day)
        return {int(r["id"]): r for r in self.hook.iter_records(resource, since=since, until=until)}

    def bucket_day(self, folder: str, day: dt.date) -> dict[str, tuple[int, str | None]]:
        prefix = f"{self.target.prefix}/{folder}/date={day.isoformat()}/"
        return {
            key: (size, etag)
            for key, size, etag in list_objects(self.s3, self.target.bucket, prefix)
        }

    def deleted(self) -> set[tuple[str, int]]:
        """``(resource, id)`` of every deletion the audit logs record (read once, lazily)."""
        from voipstudio_provider.engine.evidence.audit import read_audit

        if self._deleted is None:
            self._deleted = set()
            below = f"{self.target.prefix}/audit/"
            for key, _, _ in list_objects(self.s3, self.target.bucket, below):
                if not key.endswith(".jsonl") or ".parts/" in key:
                    continue
                for line in read_audit(self.s3, self.target.bucket, key):
                    if line.get("action") == "deleted":
                        self._deleted.add((str(line.get("resource")), int(line.get("id"))))
        return self._deleted

    def erased(self) -> set[str]:
        """Keys whose every stored version an erasure removed, as its audit lines say."""
        from voipstudio_provider.engine.evidence.audit import read_audit

        if self._erased is None:
            self._erased = set()
            below = f"{self.target.prefix}/audit/erasure/"
            for key, _, _ in list_objects(self.s3, self.target.bucket, below):
                for line in read_audit(self.s3, self.target.bucket, key):
                    if line.get("action") == "erased":
                        self._erased.add(str(line.get("key")))
        return self._erased

    def ledger_day(self, day: dt.date) -> dict[str, dict[str, Any]]:
        """What the archive recorded for ``day``: the day's latest manifest, updated by the
        ledger objects stored since (from an hour before it: a batch may have written its
        ledger while the manifest was being computed)."""
        from voipstudio_provider.engine.evidence.manifests import manifest_index, read_lines
        from voipstudio_provider.engine.layout import manifest_key

        if self._manifests is None:
            self._manifests = manifest_index(
                self.s3, self.target.bucket, self.target.prefix, self._manifest_times
            )
        base, newer_than = None, None
        if self._manifests.get(day):
            version, key = self._manifests[day][-1]
            lines_key = manifest_key(self.target.prefix, day, version, "jsonl")
            base = read_lines(self.s3, self.target.bucket, lines_key)
            newer_than = self._manifest_times[key] - dt.timedelta(hours=1)
        bucket, prefix = self.target.bucket, self.target.prefix
        return read_day(self.s3, bucket, prefix, day, base=base, newer_than=newer_than)[0]

    # --- one kind, one day ---------------------------------------------------------------

    def check_kind_day(
        self,
        kind,
        day: dt.date,
        records: Mapping[int, dict],
        listing: Mapping[str, tuple[int, str | None]],
        ledger: Mapping[str, dict],
    ) -> DayResult:
        from voipstudio_provider.engine.archive.writer import verify_archive

        result = DayResult()
        date_field = _date_field(kind.resource)
        optional = kind.name in OPTIONAL_KINDS.values()
        expected_keys = set()
        for record_id, record in sorted(records.items()):
            key = archive_key(self.target.prefix, kind, record)
            expected_keys.add(key)
            if optional and key not in listing:
                continue
            result.counts["source"] += 1
            when = record.get(date_field)

            def gap(finding: str, reason: str, record_id=record_id, key=key, when=when) -> None:
                result.add_gap(finding, record_id, key, reason, when)

            if key not in listing:
                if key in self.erased():
                    result.counts["erased"] += 1
                    continue
                gap("missing", "no object")
                continue
            size, etag = listing[key]
            line = ledger.get(key)
            if kind.sidecar and sidecar_key(self.target.prefix, kind, record) not in listing:
                gap("unverified", "sidecar missing")
                continue
            if line is None:
                result.counts["checked_by_head"] += 1
                check = verify_archive(self.s3, kind, record, self.target)
                if not check.ok:
                    gap("unverified", check.reason)
                    continue
                line = self._entry_from_head(kind, record_id, key)
            elif (size, etag) != (line["size"], line["etag"]):
                gap(
                    "unverified",
                    f"size {size}, ETag {etag} differ from the archived "
                    f"{line['size']}, {line['etag']}",
                )
                continue
            if record.get("size") is not None and int(record["size"]) != size:
                gap("unverified", f"size {size} != record size {int(record['size'])}")
                continue
            result.counts["verified"] += 1
            result.entries.append(line)

        for key in sorted(listing):
            found = _OBJECT_ID.search(key)
            if key in expected_keys or not key.endswith(f".{kind.suffix}") or found is None:
                continue
            record_id = int(found.group(1))
            if (kind.resource, record_id) in self.deleted():
                result.counts["deleted_at_source"] += 1
                if key in ledger:
                    result.entries.append(ledger[key])
                continue
            reason = "no source record" if key in ledger else "not written by the archive"
            result.add_gap("orphaned", record_id, key, reason, None)
        return result

    def _entry_from_head(self, kind, record_id: int, key: str) -> dict[str, Any]:
        head = self.s3.head_object(Bucket=self.target.bucket, Key=key, ChecksumMode="ENABLED")
        return {
            "kind": kind.name,
            "record_id": record_id,
            "key": key,
            "size": int(head["ContentLength"]),
            "sha256": head.get("Metadata", {}).get("sha256"),
            "s3_checksum": head.get("ChecksumSHA256"),
            "etag": bare_etag(head.get("ETag")),
            "archived_at": head["LastModified"].astimezone(dt.UTC).isoformat(timespec="seconds"),
        }

    def check_day(self, day: dt.date, with_cdrs: bool = False) -> dict[str, Any]:
        """Every kind of ``day``: ``{kind name: DayResult}``, and under ``"__cdrs__"`` the
        day's CDRs when a kind or ``with_cdrs`` (the CSV check) needed them."""
        ledger = self.ledger_day(day)
        sources: dict[str, dict[int, dict]] = {}
        if with_cdrs:
            sources["cdrs"] = self.source_day("cdrs", day)
        listings: dict[str, dict] = {}
        results = {}
        for kind in self.kinds:
            if kind.resource not in sources:
                sources[kind.resource] = self.source_day(kind.resource, day)
            if kind.folder not in listings:
                listings[kind.folder] = self.bucket_day(kind.folder, day)
            results[kind.name] = self.check_kind_day(
                kind, day, sources[kind.resource], listings[kind.folder], ledger
            )
        return results | {"__cdrs__": sources.get("cdrs")}


def _date_field(resource: str) -> str:
    from voipstudio_provider.endpoints import RESOURCES

    return RESOURCES[resource].date_field


def csv_findings(
    cdrs_by_day: Mapping[dt.date, Mapping[int, dict]],
    csv_keys: Mapping[tuple[int, dt.date], str],
    prefix: str,
    listed_users: Iterable[int] = (),
) -> DayResult:
    """Per-user CSVs: one per user with calls on a day; a CSV without calls is orphaned
    unless its user is listed for export every day (``voipstudio_export_user_ids``)."""
    from voipstudio_provider.engine.layout import cdr_csv_key

    result = DayResult()
    listed = {int(u) for u in listed_users}
    for day, cdrs in sorted(cdrs_by_day.items()):
        users = sorted({int(c["user_id"]) for c in cdrs.values() if c.get("user_id") is not None})
        for user_id in users:
            result.counts["source"] += 1
            if (user_id, day) in csv_keys:
                result.counts["verified"] += 1
                continue
            key = cdr_csv_key(prefix, user_id, day)
            result.add_gap("missing", user_id, key, "no CSV for a user with calls", day.isoformat())
        for (user_id, csv_day), key in sorted(csv_keys.items()):
            if csv_day == day and user_id not in users and user_id not in listed:
                reason = "no calls of this user that day at the source"
                result.add_gap("orphaned", user_id, key, reason, day.isoformat())
    return result


def csv_keys_in(s3_client, bucket: str, prefix: str, first: dt.date, last: dt.date) -> dict:
    keys = {}
    for key, _, _ in list_objects(s3_client, bucket, f"{prefix}/cdr-csv/"):
        found = _CSV_KEY.search(key)
        if found:
            day = dt.date.fromisoformat(found.group(2))
            if first <= day <= last:
                keys[(int(found.group(1)), day)] = key
    return keys


def chat_findings(reconciler: Reconciler, first: dt.date, last: dt.date) -> DayResult:
    """Archived chats: each must still be at the source or have an audited deletion."""
    result = DayResult()
    prefix = f"{reconciler.target.prefix}/chats/"
    start_after = f"{prefix}date={(first - dt.timedelta(days=1)).isoformat()}/~"
    archived = []
    for key, _, _ in list_objects(reconciler.s3, reconciler.target.bucket, prefix, start_after):
        found = _CHAT_KEY.search(key)
        if found and dt.date.fromisoformat(found.group(1)) > last:
            break
        if found:
            archived.append((int(found.group(2)), key))
    if not archived:
        return result
    at_source = {int(c["id"]) for c in reconciler.hook.iter_records("chats")}
    for chat_id, key in archived:
        result.counts["archived"] += 1
        if chat_id in at_source or ("chats", chat_id) in reconciler.deleted():
            result.counts["verified"] += 1
            continue
        reason = "chat neither at the source nor audited as deleted"
        result.add_gap("orphaned", chat_id, key, reason, None)
    return result


def days(first: dt.date, last: dt.date) -> Iterator[dt.date]:
    day = first
    while day <= last:
        yield day
        day += dt.timedelta(days=1)


def gap_age_hours(gap: Mapping[str, Any], now: dt.datetime) -> float | None:
    """Hours since the gap's record date (``None``: a finding that is always overdue)."""
    when = gap.get("date")
    if not when:
        return None
    moment = parse_api_datetime(when) if " " in when else day_bounds(dt.date.fromisoformat(when))[1]
    return (now - moment).total_seconds() / 3600
