"""The compliance purge: plan, then (only when confirmed) delete exactly the plan.

A purge is asked for by a person, with ``older_than`` (a date), a ``phone_number``, or
both. :func:`build_plan` lists what matches per resource, held items apart, and the plan
is written to :func:`~.layout.plan_key` before anything else happens. Deleting then takes
``dry_run`` false **and** ``confirm`` exactly ``PURGE``; it deletes only planned ids, with
the archive check, legal hold, batching and audit of retention
(:class:`~.retention.SourceDeleter`). CDRs cannot be deleted one by one in this API; with
``mask_cdrs`` the number is masked in matching CDRs through the bulk PATCH instead.

A recording or voicemessage involves a number through its caller, called or caller id
fields; a chat through its visitor's name or e-mail or any of its messages, and then
every message of that chat is purged.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from voipstudio_provider.audit import MASKED, SKIPPED, WOULD_MASK, AuditLog, audit_part
from voipstudio_provider.endpoints import RESOURCES, Filter
from voipstudio_provider.layout import parse_api_datetime, plan_key
from voipstudio_provider.phone_numbers import (
    CDR_NAME_FIELDS,
    find_match,
    numbers_in_value,
    parse_number,
    record_numbers,
    to_e164,
)
from voipstudio_provider.policy import LegalHold
from voipstudio_provider.retention import (
    DEFAULT_MAX_DELETIONS,
    SourceDeleter,
    batched,
    clients,
    load_default_region,
    load_legal_hold,
)

if TYPE_CHECKING:
    from phonenumbers import PhoneNumber

    from voipstudio_provider.phone_numbers import FoundNumber

log = logging.getLogger(__name__)

PURGE_RESOURCES: tuple[str, ...] = ("monitors", "voicemessages", "chatmsgs")
CONFIRM_PHRASE = "PURGE"
#: What a masked CDR shows instead of the number.
MASKED_NUMBER = "masked"
MASK_BATCH = 100


@dataclass(frozen=True)
class PurgeRequest:
    """What a person asked for in the purge form.

    :param resources: which of :data:`PURGE_RESOURCES` to purge.
    :param older_than: purge records dated before this UTC day.
    :param phone_number: purge records involving exactly this number, in E.164.
    :param dry_run: plan and report only.
    :param confirm: must be exactly ``PURGE`` for anything to be deleted.
    :param require_archive: delete only what is verified in the archive.
    :param mask_cdrs: mask ``phone_number`` in matching CDRs.
    :param max_deletions: the most items the purge may delete; a larger plan stops the
        run before anything is deleted.
    :param region: the region national numbers in records are read in
        (``voipstudio_default_region``); ``None`` reads international forms only.
    """

    resources: tuple[str, ...]
    older_than: dt.date | None = None
    phone_number: str | None = None
    dry_run: bool = True
    confirm: str = ""
    require_archive: bool = True
    mask_cdrs: bool = False
    max_deletions: int = DEFAULT_MAX_DELETIONS
    region: str | None = None

    @property
    def confirmed(self) -> bool:
        """Deleting is allowed: not a dry run, and ``confirm`` is exactly ``PURGE``."""
        return not self.dry_run and self.confirm == CONFIRM_PHRASE

    @property
    def cutoff(self) -> dt.datetime | None:
        if self.older_than is None:
            return None
        return dt.datetime.combine(self.older_than, dt.time(), tzinfo=dt.UTC)

    @property
    def regions(self) -> tuple[str, ...]:
        return (self.region,) if self.region else ()

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
        values.pop("confirm")
        return values


def parse_purge_request(params: Mapping[str, Any], region: str | None = None) -> PurgeRequest:
    """Check the form and build the request; refuse a purge with no criterion at all.

    :param region: the region national numbers are read in; default: the Variable
        ``voipstudio_default_region``, read only when the form gives a number.
    :raises ValueError: unknown resources, a bad date, a ``phone_number`` that is not one
        valid number (a national one without a region among them), no ``older_than`` nor
        ``phone_number``, ``mask_cdrs`` without a number, or a ``max_deletions`` that is
        not a whole number of at least 1.
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
        region = region or load_default_region()
        phone = to_e164(parse_number(phone, region, source="phone_number"))
    if older_than is None and phone is None:
        raise ValueError("a purge needs older_than, phone_number, or both")
    mask = bool(params.get("mask_cdrs", False))
    if mask and phone is None:
        raise ValueError("mask_cdrs needs a phone_number")
    max_deletions = params.get("max_deletions", DEFAULT_MAX_DELETIONS)
    if isinstance(max_deletions, bool) or not isinstance(max_deletions, int) or max_deletions < 1:
        raise ValueError(
            f"max_deletions must be a whole number of at least 1, not {max_deletions!r}"
        )
    return PurgeRequest(
        resources=resources,
        older_than=older_than,
        phone_number=phone,
        dry_run=bool(params.get("dry_run", True)),
        confirm=str(params.get("confirm") or ""),
        require_archive=bool(params.get("require_archive", True)),
        mask_cdrs=mask,
        max_deletions=max_deletions,
        region=region,
    )


# -- planning -----------------------------------------------------------------------------


def _plan_records(hook, request: PurgeRequest, resource: str, hold: LegalHold) -> dict:
    ids, held, matched = [], [], {}
    for record in hook.iter_records(resource, until=request.cutoff):
        text = request.match(resource, record)
        if request.phone_number is not None and text is None:
            continue
        (held if hold.reason(resource, record) else ids).append(record["id"])
        if text is not None:
            matched[str(record["id"])] = text
    return _entry(request, ids, held, matched)


def _entry(request: PurgeRequest, ids: list, held: list, matched: dict) -> dict:
    """A resource's plan: ``count``, ``ids``, ``held`` and, for a number, ``matched``
    (id -> the number text found in that record, held ones included)."""
    entry = {"count": len(ids), "ids": ids, "held": held}
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
    for message in hook.iter_records("chatmsgs"):
        seen.add(message["chat_id"])
        read(message["chat_id"], "chatmsgs", message)
        created = parse_api_datetime(message["created_at"])
        if request.cutoff is None or created < request.cutoff:
            candidates.append((message["id"], message["chat_id"]))
    for chat in hook.iter_records("chats"):
        if chat["id"] in seen:
            read(chat["id"], "chats", chat)

    def held(message_id: int, chat_id: int) -> bool:
        return (
            hold.held_id("chatmsgs", message_id)
            or hold.held_id("chats", chat_id)
            or chat_id in held_chats
        )

    ids, kept, chats, matched = [], [], set(), {}
    for message_id, chat_id in candidates:
        if request.phone_number is None or chat_id in chat_match:
            (kept if held(message_id, chat_id) else ids).append(message_id)
            chats.add(chat_id)
            if chat_id in chat_match:
                matched[str(message_id)] = chat_match[chat_id]
    return {**_entry(request, ids, kept, matched), "chat_ids": sorted(chats)}


def _plan_cdr_masks(hook, request: PurgeRequest, hold: LegalHold) -> dict:
    ids, held, matched = [], [], {}
    for cdr in hook.iter_records("cdrs", until=request.cutoff):
        text = request.match("cdrs", cdr)
        if text is not None:
            (held if hold.reason("cdrs", cdr) else ids).append(cdr["id"])
            matched[str(cdr["id"])] = text
    return _entry(request, ids, held, matched)


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


def write_plan(s3_client, bucket: str, key: str, plan: Mapping[str, Any]) -> None:
    body = json.dumps(plan, sort_keys=True, indent=1).encode()
    s3_client.put_object(
        Bucket=bucket,
        Key=key,
        Body=body,
        ContentType="application/json",
        Metadata={"sha256": hashlib.sha256(body).hexdigest()},
    )


def read_plan(s3_client, bucket: str, key: str) -> dict[str, Any]:
    """The plan written by :func:`write_plan`; refuse one that does not match its sha256."""
    answer = s3_client.get_object(Bucket=bucket, Key=key)
    with answer["Body"] as body:
        raw = body.read()
    if answer.get("Metadata", {}).get("sha256") != hashlib.sha256(raw).hexdigest():
        raise ValueError(f"the purge plan s3://{bucket}/{key} was changed after it was written")
    return json.loads(raw)


# -- executing ----------------------------------------------------------------------------


def planned_records(hook, resource: str, ids: Iterable[int]) -> Iterator[dict]:
    """The planned records the API still has, ids ascending (one walk over their range)."""
    wanted = set(ids)
    if not wanted:
        return
    bounds = [Filter("id", "gte", min(wanted)), Filter("id", "lte", max(wanted))]
    for record in hook.iter_records(resource, filters=bounds):
        if record["id"] in wanted:
            yield record


def purge_planned(
    hook, s3_client, target, audit: AuditLog, request: PurgeRequest, resource: str,
    plan: Mapping[str, Any], hold: LegalHold, checkpoint=None,
) -> SourceDeleter:  # fmt: skip
    """Delete the planned ids of ``resource`` (or, dry, say what would go).

    Records gone since planning get a ``gone`` line; a hold added since planning still
    keeps its items.
    """
    if not (request.dry_run or request.confirmed):
        raise PermissionError(f"confirm must be exactly {CONFIRM_PHRASE!r}; nothing was deleted")
    ids = list(plan["resources"].get(resource, {}).get("ids", []))
    deleter = SourceDeleter(
        hook, s3_client, target, audit, resource, hold=hold, dry_run=request.dry_run,
        budget=len(ids), require_archive=request.require_archive, checkpoint=checkpoint,
    )  # fmt: skip
    seen: set[int] = set()

    def tracked() -> Iterator[dict]:
        for record in planned_records(hook, resource, ids):
            seen.add(record["id"])
            yield record

    deleter.run(tracked())
    for missing in sorted(set(ids) - seen):
        audit.add(resource, missing, SKIPPED, "gone", detail="no longer at the source")
    return deleter


def _masked(cdr: Mapping[str, Any], request: PurgeRequest) -> dict[str, Any]:
    """The PATCH row replacing every field where the number appears, in any format: the
    number fields and the names repeating it. A field goes as a whole: a caller id such as
    ``"Ann" <+44 20 7946 0000>`` also names the person."""
    row: dict[str, Any] = {"id": cdr["id"]}
    for name in (*RESOURCES["cdrs"].number_fields, *CDR_NAME_FIELDS):
        if request.matched_text(numbers_in_value(cdr.get(name), request.regions)):
            row[name] = MASKED_NUMBER
    return row


def mask_planned_cdrs(
    hook, audit: AuditLog, request: PurgeRequest, plan: Mapping[str, Any], hold: LegalHold
) -> int:
    """Mask the purge's number in the planned CDRs by bulk PATCH; return how many.

    Each batch is read back: a CDR still showing the number is audited as ``failed``.
    """
    if not (request.dry_run or request.confirmed):
        raise PermissionError(f"confirm must be exactly {CONFIRM_PHRASE!r}; nothing was masked")
    ids = plan.get("cdrs_to_mask", {}).get("ids", [])
    masked = 0
    for batch in batched(planned_records(hook, "cdrs", ids), MASK_BATCH):
        rows = []
        for cdr in batch:
            if hold.reason("cdrs", cdr):
                audit.add("cdrs", cdr["id"], SKIPPED, "legal_hold_number")
            elif request.dry_run:
                audit.add("cdrs", cdr["id"], WOULD_MASK, "number_matched")
            else:
                rows.append(_masked(cdr, request))
        if not rows:
            continue
        hook.update_records("cdrs", rows)
        for cdr in planned_records(hook, "cdrs", [row["id"] for row in rows]):
            if request.matches("cdrs", cdr):
                audit.add("cdrs", cdr["id"], "failed", "number_matched", detail="still unmasked")
            else:
                masked += 1
                audit.add("cdrs", cdr["id"], MASKED, "number_matched")
    return masked


# -- the purge DAG's tasks ----------------------------------------------------------------


def _context(params: Mapping[str, Any]):
    from voipstudio_provider.archive import ArchiveTarget
    from voipstudio_provider.settings import resolve_bucket_and_prefix

    bucket, prefix = resolve_bucket_and_prefix(params)
    return bucket, prefix, ArchiveTarget(bucket=bucket, prefix=prefix)


def run_plan(params: Mapping[str, Any], dag_id: str, run_id: str) -> dict[str, Any]:
    """Task: check the form, list what matches, write the plan. Deletes nothing.

    :return: the plan's key and counts, and whether the run may delete.
    """
    request = parse_purge_request(params)
    hold = load_legal_hold()
    bucket, prefix, _ = _context(params)
    hook, s3_client = clients("voipstudio_default", "aws_default")
    plan = build_plan(hook, request, hold)
    plan.update(dag_id=dag_id, run_id=run_id, planned_at=dt.datetime.now(dt.UTC).isoformat())
    key = plan_key(prefix, dag_id, run_id)
    write_plan(s3_client, bucket, key, plan)
    counts = plan_counts(plan)
    log.info("purge plan s3://%s/%s: %s", bucket, key, json.dumps(counts, sort_keys=True))
    return {"plan_key": key, "counts": counts, "dry_run": request.dry_run}


def planned_deletions(counts: Mapping[str, Any], resources: Iterable[str]) -> int:
    """Items the plan would delete (held items and CDRs to mask apart)."""
    return sum(counts.get(resource, {}).get("count", 0) for resource in resources)


def check_confirmation(params: Mapping[str, Any], plan_summary: Mapping[str, Any]) -> list[str]:
    """Task: let a dry run or a confirmed purge go on; stop anything else.

    A plan with more items to delete than ``max_deletions`` stops the run here, dry or
    not, so a purge wider than meant is noticed before anything is deleted.

    :return: the resources to go through (for the mapped purge task).
    """
    request = parse_purge_request(params)
    if not (request.dry_run or request.confirmed):
        raise PermissionError(
            f"dry_run is off but confirm is {request.confirm!r}, not exactly "
            f"{CONFIRM_PHRASE!r}: nothing was deleted. The plan is {plan_summary['plan_key']}."
        )
    planned = planned_deletions(plan_summary["counts"], request.resources)
    if planned > request.max_deletions:
        raise ValueError(
            f"the plan holds {planned} items to delete, more than max_deletions "
            f"{request.max_deletions}: nothing was deleted. Read the plan "
            f"{plan_summary['plan_key']}; to purge it, trigger again with max_deletions "
            f"raised to at least {planned}."
        )
    mode = "dry run" if request.dry_run else "confirmed"
    log.info("purge %s: %s", mode, json.dumps(plan_summary["counts"], sort_keys=True))
    return list(request.resources)


def run_purge(
    resource: str, params: Mapping[str, Any], dag_id: str, run_id: str, try_number: int
) -> dict[str, Any]:
    """Task of one resource: delete its planned ids, audited in this attempt's part."""
    request = parse_purge_request(params)
    hold = load_legal_hold()
    bucket, prefix, target = _context(params)
    hook, s3_client = clients("voipstudio_default", "aws_default")
    plan = read_plan(s3_client, bucket, plan_key(prefix, dag_id, run_id))
    with audit_part(
        s3_client, bucket, prefix, dag_id, run_id, f"{resource}.try{try_number}"
    ) as audit:
        try:
            purge_planned(
                hook, s3_client, target, audit, request, resource, plan, hold,
                checkpoint=lambda: audit.upload(s3_client, bucket, audit.key),
            )  # fmt: skip
        finally:
            summary = audit.summary()
            log.info("%s purge: %s", resource, json.dumps(summary, sort_keys=True))
    return {"resource": resource, "dry_run": request.dry_run, **summary}


def run_masking(
    params: Mapping[str, Any], dag_id: str, run_id: str, try_number: int
) -> dict[str, Any]:
    """Task: mask the number in the planned CDRs, when ``mask_cdrs`` is on."""
    request = parse_purge_request(params)
    if not request.mask_cdrs:
        log.info("mask_cdrs is off: CDRs are left as they are")
        return {"masked": 0}
    hold = load_legal_hold()
    bucket, prefix, _ = _context(params)
    hook, s3_client = clients("voipstudio_default", "aws_default")
    plan = read_plan(s3_client, bucket, plan_key(prefix, dag_id, run_id))
    with audit_part(s3_client, bucket, prefix, dag_id, run_id, f"cdrs.try{try_number}") as audit:
        masked = mask_planned_cdrs(hook, audit, request, plan, hold)
        summary = audit.summary()
    log.info("cdr masking: %s", json.dumps(summary, sort_keys=True))
    return {"masked": masked, **summary}
