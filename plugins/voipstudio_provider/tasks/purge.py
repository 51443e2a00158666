"""The compliance purge: plan, then (only when confirmed) delete exactly the plan.

A purge is asked for by a person, with ``older_than`` (a date), a ``phone_number``, or
both. A dry run's :func:`build_plan` lists what matches per resource, held items apart,
and writes the plan to :func:`~.layout.plan_key`. Deleting then takes ``dry_run`` false,
``confirm`` exactly ``PURGE`` **and** ``plan_run_id``, the run id of that dry run: the
reviewed plan is loaded and its digest checked (:func:`load_reviewed_plan`), and only its
planned ids that still match, are not held and are verified are deleted, with the
archive check, legal hold, batching and audit of retention
(:class:`~.deletion.SourceDeleter`). CDRs cannot be deleted one by one in this API; with
``mask_cdrs`` the number is masked in matching CDRs through the bulk PATCH instead.

A recording or voicemessage involves a number through its caller, called or caller id
fields; a chat through its visitor's name or e-mail or any of its messages, and then
every message of that chat is purged.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from voipstudio_provider.endpoints import RESOURCES, parse_api_datetime
from voipstudio_provider.engine.audit import (
    DELETED,
    FAILED,
    MASKED,
    SKIPPED,
    WOULD_MASK,
    AuditLog,
    audit_part,
)
from voipstudio_provider.engine.evidence import (
    deletion_attempt,
    evidence_args,
    fetch_by_ids,
    probe_bucket,
)
from voipstudio_provider.engine.layout import plan_key
from voipstudio_provider.engine.phone_numbers import (
    CDR_NAME_FIELDS,
    numbers_in_value,
    parse_number,
    to_e164,
)
from voipstudio_provider.engine.plans import (
    load_reviewed_plan,
    plan_csv_key,
    read_plan,
    reviewed_digest,
    write_plan,
    write_plan_csv,
)
from voipstudio_provider.engine.policy import LegalHold
from voipstudio_provider.engine.purge import (
    CONFIRM_PHRASE,
    MASK_BATCH,
    MASKED_NUMBER,
    PURGE_RESOURCES,
    PurgeRequest,
)
from voipstudio_provider.tasks.retention import (
    DEFAULT_MAX_DELETIONS,
    SourceDeleter,
    batched,
    clients,
    deletion_target,
    load_default_region,
    load_legal_hold,
)

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


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
    return PurgeRequest(
        resources=resources,
        older_than=older_than,
        phone_number=phone,
        dry_run=bool(params.get("dry_run", True)),
        confirm=str(params.get("confirm") or ""),
        require_archive=bool(params.get("require_archive", True)),
        mask_cdrs=mask,
        max_deletions=max_deletions,
        plan_run_id=str(params.get("plan_run_id") or "").strip() or None,
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
    (:func:`~voipstudio_provider.engine.evidence.fetch_by_ids`)."""
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
    hook, audit: AuditLog, resource: str, plan: Mapping[str, Any], hold: LegalHold
) -> int:
    """One ``skipped`` line per item the plan lists as held; return how many."""
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
        )  # fmt: skip
    return len(held)


def purge_planned(
    hook, s3_client, target, audit: AuditLog, request: PurgeRequest, resource: str,
    plan: Mapping[str, Any], hold: LegalHold, checkpoint=None, *, hold_loader=None,
    intents=None,
) -> SourceDeleter:  # fmt: skip
    """Delete the planned ids of ``resource`` (or, dry, say what would go).

    Only planned ids are touched, each checked again: it still matches the criteria (and
    its own date is before ``older_than``), it is not held (the hold is read again before
    every batch with ``hold_loader``) and its archive verifies. Records gone since planning
    get a ``gone`` line; every held item of the plan gets a ``skipped`` line.
    """
    if not (request.dry_run or request.confirmed):
        raise PermissionError(f"confirm must be exactly {CONFIRM_PHRASE!r}; nothing was deleted")
    ids = list(plan["resources"].get(resource, {}).get("ids", []))
    audit_held(hook, audit, resource, plan, hold)
    deleter = SourceDeleter(
        hook, s3_client, target, audit, resource, hold=hold, dry_run=request.dry_run,
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


def _context(params: Mapping[str, Any] | None = None):
    """Bucket, prefix and archive target, from the Variables only (never the run's params)."""
    target = deletion_target()
    return target.bucket, target.prefix, target


def run_plan(params: Mapping[str, Any], dag_id: str, run_id: str, ti=None) -> dict[str, Any]:
    """Task: check the form, then write this run's plan. Deletes nothing.

    A dry run (or an unconfirmed one) lists what matches; a confirmed run loads the
    reviewed plan of ``plan_run_id`` instead, checks it before any request to the API
    (:func:`load_reviewed_plan`) and keeps a copy under its own run id.

    :param ti: the task instance, to read the dry run's reported plan digest.
    :return: the plan's key, digest and counts, and whether the run may delete.
    """
    try:
        request = parse_purge_request(params)
    except ValueError as error:  # the form is wrong: a retry would be refused again
        raise AirflowFailException(f"refused: {error}") from None
    bucket, prefix, target = _context(params)
    key = plan_key(prefix, dag_id, run_id)
    if request.confirmed:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        s3_client = S3Hook("aws_default").get_conn()
        reviewed = reviewed_digest(dag_id, request.plan_run_id, ti)
        plan = load_reviewed_plan(s3_client, target, dag_id, request, reviewed_sha256=reviewed)
        source = plan.pop("sha256")
        plan["reviewed"] = {
            "run_id": request.plan_run_id,
            "key": plan_key(prefix, dag_id, request.plan_run_id),
            "sha256": source,
            "planned_at": plan["planned_at"],
        }
        plan.update(run_id=run_id, criteria={**plan["criteria"], **request.criteria()})
    else:
        hold = load_legal_hold()
        hook, s3_client = clients("voipstudio_default", "aws_default")
        plan = build_plan(hook, request, hold)
        plan.update(dag_id=dag_id, run_id=run_id, planned_at=dt.datetime.now(dt.UTC).isoformat())
    write_args = evidence_args(target, lock=True)
    digest = write_plan(s3_client, bucket, key, plan, write_args)
    csv_key = plan_csv_key(key)
    write_plan_csv(s3_client, bucket, csv_key, plan, write_args)
    counts = plan_counts(plan)
    log.info("purge plan s3://%s/%s (sha256 %s), to read: s3://%s/%s: %s", bucket, key, digest,
             bucket, csv_key, json.dumps(counts, sort_keys=True))  # fmt: skip
    return {
        "plan_key": key,
        "plan_csv_key": csv_key,
        "plan_sha256": digest,
        "counts": counts,
        "dry_run": request.dry_run,
    }


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
    refused = refusal(request, plan_summary)
    if refused:
        raise AirflowFailException(refused)
    mode = "dry run" if request.dry_run else "confirmed"
    log.info("purge %s: %s", mode, json.dumps(plan_summary["counts"], sort_keys=True))
    return list(PURGE_RESOURCES)


def refusal(request: PurgeRequest, plan_summary: Mapping[str, Any]) -> str | None:
    """Why a planned purge may not go on (a wrong ``confirm``, a plan larger than
    ``max_deletions``), or ``None``."""
    if not (request.dry_run or request.confirmed):
        return (
            f"dry_run is off but confirm is {request.confirm!r}, not exactly "
            f"{CONFIRM_PHRASE!r}: nothing was deleted. The plan is {plan_summary['plan_key']}."
        )
    planned = planned_deletions(plan_summary["counts"], request.resources)
    if planned > request.max_deletions:
        return (
            f"the plan holds {planned} items to delete, more than max_deletions "
            f"{request.max_deletions}: nothing was deleted. Read the plan "
            f"{plan_summary['plan_key']}; to purge it, trigger again with max_deletions "
            f"raised to at least {planned}."
        )
    return None


def run_purge(
    resource: str, params: Mapping[str, Any], dag_id: str, run_id: str, try_number: int
) -> dict[str, Any]:
    """Task of one resource: delete its planned ids, audited in this attempt's part.

    Probes the bucket and reconciles earlier attempts' delete intents first.
    """
    request = parse_purge_request(params)
    if resource not in request.resources:
        raise AirflowSkipException(f"{resource} is not among this purge's resources")
    bucket, prefix, target = _context(params)
    hook, s3_client = clients("voipstudio_default", "aws_default")
    plan = read_plan(s3_client, bucket, plan_key(prefix, dag_id, run_id))
    probe_bucket(s3_client, target, dag_id, run_id, f"{resource}.try{try_number}")
    with deletion_attempt(hook, s3_client, target, dag_id, run_id, resource, try_number) as (
        audit,
        intents,
    ):
        try:
            purge_planned(
                hook, s3_client, target, audit, request, resource, plan, load_legal_hold(),
                checkpoint=lambda: audit.upload(s3_client, bucket, audit.key),
                hold_loader=load_legal_hold, intents=intents,
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
        raise AirflowSkipException("mask_cdrs is off: CDRs are left as they are")
    hold = load_legal_hold()
    bucket, prefix, target = _context(params)
    hook, s3_client = clients("voipstudio_default", "aws_default")
    plan = read_plan(s3_client, bucket, plan_key(prefix, dag_id, run_id))
    write_args = evidence_args(target, lock=False)
    part = f"cdrs.try{try_number}"
    with audit_part(s3_client, bucket, prefix, dag_id, run_id, part, write_args) as audit:
        masked = mask_planned_cdrs(hook, audit, request, plan, hold)
        summary = audit.summary()
    log.info("cdr masking: %s", json.dumps(summary, sort_keys=True))
    return {"masked": masked, **summary}


def _as_list(pulled: Any) -> list[dict]:
    """XComs of a mapped task as a list (one mapped instance comes back alone)."""
    if pulled is None:
        return []
    items = [pulled] if isinstance(pulled, Mapping) else list(pulled)
    return [item for item in items if item]


def purge_note(
    params: Mapping[str, Any], plan_summary: Mapping[str, Any] | None, purged: Any
) -> str:
    """The run's note: ``DRY RUN: N planned``, ``REFUSED: <why>`` or
    ``PURGED: N deleted, M kept`` (``FAILED: ...`` when a task failed otherwise).

    :param plan_summary: what ``plan_purge`` returned, ``None`` when it failed.
    :param purged: the XComs of ``purge_planned_records`` (one dict or a list of them).
    """
    try:
        request = parse_purge_request(params)
    except ValueError as error:
        return f"REFUSED: {error}"
    if plan_summary is None:
        return "FAILED: no plan was written; the log of plan_purge says why"
    refused = refusal(request, plan_summary)
    if refused:
        return f"REFUSED: {refused}"
    results = _as_list(purged)
    where = plan_summary.get("plan_csv_key") or plan_summary["plan_key"]
    if request.dry_run:
        counts = plan_summary["counts"]
        planned = planned_deletions(counts, request.resources)
        held = sum(counts.get(r, {}).get("held", 0) for r in request.resources)
        return f"DRY RUN: {planned} planned, {held} held; plan {where}"
    totals = {DELETED: 0, SKIPPED: 0, FAILED: 0, "gone": 0}
    for result in results:
        for entry in result.get("resources", {}).values():
            gone = entry.get("reasons", {}).get("gone", 0)
            totals["gone"] += gone
            totals[DELETED] += entry.get(DELETED, 0)
            totals[SKIPPED] += entry.get(SKIPPED, 0) - gone
            totals[FAILED] += entry.get(FAILED, 0)
    done = {result["resource"] for result in results if "resource" in result}
    missing = sorted(set(request.resources) - done)
    note = f"PURGED: {totals[DELETED]} deleted, {totals[SKIPPED] + totals[FAILED]} kept"
    if totals["gone"]:
        note += f", {totals['gone']} already gone"
    if missing:
        note = f"FAILED: {', '.join(missing)} not purged (see their logs); " + note[8:]
    return note
