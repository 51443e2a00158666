"""A compliance purge without Airflow: the request, its plan, and deleting exactly the plan.

:func:`parse_purge_request` checks the purge form and builds a :class:`PurgeRequest`, which
knows which records it matches (exactly one E.164 number, through :mod:`~.phone_numbers`)
and the criteria a plan records (:mod:`~.plans`). :func:`build_plan` lists what matches per
resource, held items apart; :func:`purge_planned` deletes a plan's ids that still match,
are not held and are verified, once a second person approved it, through
:class:`~voipstudio_provider.engine.deletion.deleter.SourceDeleter`. Masking the number in CDRs is
in :mod:`~.masking`.

A recording or voicemessage involves a number through its caller, called or caller id
fields; a chat through its visitor's name or e-mail or any of its messages, and then
every message of that chat is purged.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from voipstudio_provider.endpoints import RESOURCES, parse_api_datetime
from voipstudio_provider.engine.deletion.deleter import DEFAULT_MAX_DELETIONS, SourceDeleter
from voipstudio_provider.engine.evidence.audit import SKIPPED, AuditLog
from voipstudio_provider.engine.evidence.intents import fetch_by_ids
from voipstudio_provider.engine.subjects.legal_hold import LegalHold
from voipstudio_provider.engine.subjects.phone_numbers import (
    find_match,
    parse_number,
    reading_regions,
    record_numbers,
    to_e164,
)

if TYPE_CHECKING:
    from phonenumbers import PhoneNumber

    from voipstudio_provider.engine.deletion.approval import Approval
    from voipstudio_provider.engine.subjects.phone_numbers import FoundNumber

PURGE_RESOURCES: tuple[str, ...] = ("monitors", "voicemessages", "chatmsgs")
#: What a masked CDR shows instead of the number.
MASKED_NUMBER = "masked"
MASK_BATCH = 100


@dataclass(frozen=True)
class PurgeRequest:
    """What a person asked for in the purge form.

    :param resources: which of :data:`PURGE_RESOURCES` to purge.
    :param older_than: purge records dated before this UTC day.
    :param phone_number: purge records involving exactly this number, in E.164.
    :param dry_run: plan and report only (nothing is asked for approval).
    :param require_archive: delete only what is verified in the archive.
    :param mask_cdrs: mask ``phone_number`` in matching CDRs.
    :param max_deletions: the most items the purge may delete; a larger plan stops the
        run before anything is deleted.
    :param approval_hours: how long the approval request stays open.
    :param erase_archive: erase the archived copies of what the purge deleted too.
    :param region: the Variable ``voipstudio_default_region``; national numbers in
        records are read in it and in the purged number's own country (:attr:`regions`).
    """

    resources: tuple[str, ...]
    older_than: dt.date | None = None
    phone_number: str | None = None
    dry_run: bool = True
    require_archive: bool = True
    mask_cdrs: bool = False
    max_deletions: int = DEFAULT_MAX_DELETIONS
    approval_hours: float = 72
    erase_archive: bool = False
    region: str | None = None

    @property
    def cutoff(self) -> dt.datetime | None:
        if self.older_than is None:
            return None
        return dt.datetime.combine(self.older_than, dt.time(), tzinfo=dt.UTC)

    @property
    def regions(self) -> tuple[str, ...]:
        """Regions a national number in a record is read in: the purged number's own
        country and the default region; a record matches only when its text reads as
        that number and as no other (:func:`~.phone_numbers.find_match`)."""
        numbers = [self._number] if self.phone_number is not None else []
        return reading_regions(self.region, numbers)

    @cached_property
    def _number(self) -> PhoneNumber:
        return parse_number(self.phone_number, None, source="phone_number")

    def matched_text(self, numbers: Iterable[FoundNumber]) -> str | None:
        """The text of the first of ``numbers`` that is the purge's number beyond doubt."""
        match = find_match(numbers, [self._number], exact=True)
        return match[0].text if match else None

    def match(self, resource: str, record: Mapping[str, Any]) -> str | None:
        """The number text in ``record`` that is the purge's number, or ``None``."""
        if self.phone_number is None:
            return None
        return self.matched_text(record_numbers(resource, record, self.regions))

    def matches(self, resource: str, record: Mapping[str, Any]) -> bool:
        """Whether a record's own fields match (the date is filtered by the API)."""
        return self.phone_number is None or self.match(resource, record) is not None

    def criteria(self) -> dict[str, Any]:
        values = asdict(self)
        values["older_than"] = self.older_than.isoformat() if self.older_than else None
        values["resources"] = list(self.resources)
        return values


def parse_purge_request(params: Mapping[str, Any], region: str | None = None) -> PurgeRequest:
    """Check the form and build the request; refuse a purge with no criterion at all.

    :param region: the region national numbers are read in (the purge task reads it from
        the Variable ``voipstudio_default_region`` when the form gives a number);
        ``None`` reads international forms only.
    :raises ValueError: unknown resources, a bad date, a ``phone_number`` that is not one
        valid number (a national one without a region among them), no ``older_than`` nor
        ``phone_number``, ``mask_cdrs`` without a number, a ``max_deletions`` that is
        not a whole number of at least 1, ``approval_hours`` not above 0, or an
        ``erase_archive`` that is not true or false.
    """
    resources = tuple(params.get("resources") or PURGE_RESOURCES)
    unknown = set(resources) - set(PURGE_RESOURCES)
    if unknown:
        raise ValueError(f"resources must be among {PURGE_RESOURCES}, not {sorted(unknown)}")
    older_than = params.get("older_than") or None
    if older_than is not None and not isinstance(older_than, dt.date):
        try:
            older_than = dt.date.fromisoformat(str(older_than))
        except ValueError:
            raise ValueError(f"older_than must be a date YYYY-MM-DD, not {older_than!r}") from None
    phone = params.get("phone_number") or None
    if phone is not None:
        phone = to_e164(parse_number(phone, region, source="phone_number"))
    if older_than is None and phone is None:
        raise ValueError(
            "nothing to purge by: set older_than (a date), phone_number, or both; "
            "nothing was planned or deleted"
        )
    mask = bool(params.get("mask_cdrs", False))
    if mask and phone is None:
        raise ValueError("mask_cdrs needs a phone_number")
    max_deletions = params.get("max_deletions", DEFAULT_MAX_DELETIONS)
    if isinstance(max_deletions, bool) or not isinstance(max_deletions, int) or max_deletions < 1:
        raise ValueError(
            f"max_deletions must be a whole number of at least 1, not {max_deletions!r}"
        )
    hours = params.get("approval_hours", 72)
    if isinstance(hours, bool) or not isinstance(hours, int | float) or not hours > 0:
        raise ValueError(f"approval_hours must be a number of hours above 0, not {hours!r}")
    erase_archive = params.get("erase_archive", False)
    if not isinstance(erase_archive, bool):
        raise ValueError(f"erase_archive must be true or false, not {erase_archive!r}")
    return PurgeRequest(
        resources=resources,
        older_than=older_than,
        phone_number=phone,
        dry_run=bool(params.get("dry_run", True)),
        require_archive=bool(params.get("require_archive", True)),
        mask_cdrs=mask,
        max_deletions=max_deletions,
        approval_hours=hours,
        erase_archive=erase_archive,
        region=region,
    )


# -- planning -----------------------------------------------------------------------------


def _plan_records(hook, request: PurgeRequest, resource: str, hold: LegalHold) -> dict:
    ids, held, matched, dates, reasons = [], [], {}, {}, {}
    date_field = RESOURCES[resource].date_field
    for record in hook.iter_records(resource, until=request.cutoff):
        text = request.match(resource, record)
        if request.phone_number is not None and text is None:
            continue
        reason = hold.reason(resource, record)
        (held if reason else ids).append(record["id"])
        dates[str(record["id"])] = record.get(date_field) if date_field else None
        if reason:
            reasons[str(record["id"])] = reason
        if text is not None:
            matched[str(record["id"])] = text
    return _entry(request, ids, held, matched, dates, reasons)


def _entry(
    request: PurgeRequest, ids: list, held: list, matched: dict, dates: dict, reasons: dict
) -> dict:
    """A resource's plan: ``count``, ``ids``, ``held``, ``dates`` (id -> the record's own
    date), ``hold_reasons`` (held id -> why) and, for a number, ``matched`` (id -> the
    number text found in that record, held ones included)."""
    entry = {"count": len(ids), "ids": ids, "held": held, "dates": dates, "hold_reasons": reasons}
    if request.phone_number is not None:
        entry["matched"] = matched
    return entry


def _plan_chat_messages(hook, request: PurgeRequest, hold: LegalHold) -> dict:
    """Messages to purge: dated before the cutoff, in a chat involving the number."""
    chat_match: dict[int, str] = {}  # chat id -> the number text found in it
    held_chats: set[int] = set()  # chats where a held number appears
    candidates: list[tuple[int, int]] = []  # (message id, chat id)

    def read(chat_id: int, resource: str, record: Mapping[str, Any]) -> None:
        text = request.match(resource, record)
        if text is not None:
            chat_match.setdefault(chat_id, text)
        if hold.held_number(hold.numbers_of(resource, record)):
            held_chats.add(chat_id)

    seen: set[int] = set()
    dates: dict[str, str] = {}
    for message in hook.iter_records("chatmsgs"):
        seen.add(message["chat_id"])
        read(message["chat_id"], "chatmsgs", message)
        created = parse_api_datetime(message["created_at"])
        if request.cutoff is None or created < request.cutoff:
            candidates.append((message["id"], message["chat_id"]))
            dates[str(message["id"])] = message["created_at"]
    for chat in hook.iter_records("chats"):
        if chat["id"] in seen:
            read(chat["id"], "chats", chat)

    def held(message_id: int, chat_id: int) -> str | None:
        if hold.held_id("chatmsgs", message_id) or hold.held_id("chats", chat_id):
            return "legal_hold_id"
        return "legal_hold_number" if chat_id in held_chats else None

    ids, kept, chats, matched, reasons, planned_dates = [], [], set(), {}, {}, {}
    for message_id, chat_id in candidates:
        if request.phone_number is None or chat_id in chat_match:
            reason = held(message_id, chat_id)
            (kept if reason else ids).append(message_id)
            chats.add(chat_id)
            planned_dates[str(message_id)] = dates[str(message_id)]
            if reason:
                reasons[str(message_id)] = reason
            if chat_id in chat_match:
                matched[str(message_id)] = chat_match[chat_id]
    entry = _entry(request, ids, kept, matched, planned_dates, reasons)
    return {**entry, "chat_ids": sorted(chats)}


def _plan_cdr_masks(hook, request: PurgeRequest, hold: LegalHold) -> dict:
    ids, held, matched, dates, reasons = [], [], {}, {}, {}
    for cdr in hook.iter_records("cdrs", until=request.cutoff):
        text = request.match("cdrs", cdr)
        if text is not None:
            reason = hold.reason("cdrs", cdr)
            (held if reason else ids).append(cdr["id"])
            matched[str(cdr["id"])] = text
            dates[str(cdr["id"])] = cdr.get(RESOURCES["cdrs"].date_field)
            if reason:
                reasons[str(cdr["id"])] = reason
    return _entry(request, ids, held, matched, dates, reasons)


def build_plan(hook, request: PurgeRequest, hold: LegalHold) -> dict[str, Any]:
    """What the purge would delete per resource (``ids``), and what the hold keeps.

    :return: ``{"criteria": {...}, "resources": {res: {"count", "ids", "held"}},
        "cdrs_to_mask": {...} (with mask_cdrs)}``; with a ``phone_number`` each resource
        also has ``matched``, id -> the exact number text that matched in that record.
    """
    plan: dict[str, Any] = {"criteria": request.criteria(), "resources": {}}
    for resource in request.resources:
        if resource == "chatmsgs":
            plan["resources"][resource] = _plan_chat_messages(hook, request, hold)
        else:
            plan["resources"][resource] = _plan_records(hook, request, resource, hold)
    if request.mask_cdrs:
        plan["cdrs_to_mask"] = _plan_cdr_masks(hook, request, hold)
    return plan


def plan_counts(plan: Mapping[str, Any]) -> dict[str, Any]:
    """The plan without its id lists: small enough for XCom and the log."""
    counts = {
        r: {"count": e["count"], "held": len(e["held"])} for r, e in plan["resources"].items()
    }
    if "cdrs_to_mask" in plan:
        counts["cdrs_to_mask"] = {
            "count": plan["cdrs_to_mask"]["count"],
            "held": len(plan["cdrs_to_mask"]["held"]),
        }
    return counts


# -- executing ----------------------------------------------------------------------------


def planned_records(hook, resource: str, ids: Iterable[int]) -> Iterator[dict]:
    """The planned records the API still has, ids ascending, asking for exactly those ids
    (:func:`~voipstudio_provider.engine.evidence.intents.fetch_by_ids`)."""
    wanted = set(ids)
    for record in fetch_by_ids(hook, resource, wanted):
        if record["id"] in wanted:
            yield record


def _still_matches(request: PurgeRequest, resource: str, plan: Mapping[str, Any]):
    """Whether a planned record still matches the purge (its number; a message's chat)."""
    if resource == "chatmsgs":
        chats = set(plan["resources"].get("chatmsgs", {}).get("chat_ids", []))
        return lambda message: message.get("chat_id") in chats
    return lambda record: request.matches(resource, record)


def audit_held(
    hook, audit: AuditLog, resource: str, plan: Mapping[str, Any], hold: LegalHold,
    audit_fields: Mapping[str, Any] | None = None,
) -> int:  # fmt: skip
    """One ``skipped`` line per item the plan lists as held; return how many.

    :param audit_fields: fields every line carries (the approval).
    """
    held = list(plan["resources"].get(resource, {}).get("held", []))
    found = {record["id"]: record for record in planned_records(hook, resource, held)}
    for record_id in held:
        record = found.get(record_id)
        reason = hold.reason(resource, record) if record else None
        if reason is None and resource == "chatmsgs" and record is not None:
            reason = "legal_hold_id" if hold.held_id("chats", record["chat_id"]) else None
        audit.add(
            resource, record_id, SKIPPED, reason or "held_when_planned",
            detail=None if reason else "held when the plan was made: kept",
            chat_id=record.get("chat_id") if record and resource == "chatmsgs" else None,
            **dict(audit_fields or {}),
        )  # fmt: skip
    return len(held)


def purge_planned(
    hook, s3_client, target, audit: AuditLog, request: PurgeRequest, resource: str,
    plan: Mapping[str, Any], hold: LegalHold, checkpoint=None, *, approval: Approval,
    hold_loader=None, intents=None,
) -> SourceDeleter:  # fmt: skip
    """Delete the planned ids of ``resource``, as ``approval`` approved them.

    Only planned ids are touched, each checked again: it still matches the criteria (and
    its own date is before ``older_than``), it is not held (the hold is read again before
    every batch with ``hold_loader``) and its archive verifies. Records gone since planning
    get a ``gone`` line; every held item of the plan gets a ``skipped`` line. Every line
    carries who asked and who approved (:meth:`~.approval.Approval.audit_fields`).

    :raises PermissionError: a dry run, which deletes nothing.
    """
    if request.dry_run:
        raise PermissionError("a dry run deletes nothing")
    fields = approval.audit_fields()
    ids = list(plan["resources"].get(resource, {}).get("ids", []))
    audit_held(hook, audit, resource, plan, hold, fields)
    deleter = SourceDeleter(
        hook, s3_client, target, audit, resource, hold=hold, dry_run=False, audit_fields=fields,
        budget=len(ids), require_archive=request.require_archive, checkpoint=checkpoint,
        cutoff=request.cutoff, hold_loader=hold_loader, intents=intents,
        still_matches=_still_matches(request, resource, plan),
    )  # fmt: skip
    seen: set[int] = set()

    def tracked() -> Iterator[dict]:
        for record in planned_records(hook, resource, ids):
            seen.add(record["id"])
            yield record

    deleter.run(tracked())
    for missing in sorted(set(ids) - seen):
        audit.add(resource, missing, SKIPPED, "gone", detail="no longer at the source", **fields)
    return deleter
