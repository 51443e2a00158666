"""The compliance purge's tasks: plan, then (only when confirmed) delete exactly the plan.

A purge is asked for by a person, with ``older_than`` (a date), a ``phone_number``, or
both. A dry run lists what matches per resource, held items apart
(:func:`~voipstudio_provider.engine.purge.build_plan`), and writes the plan to
:func:`~.layout.plan_key`. Deleting then takes ``dry_run`` false, ``confirm`` exactly
``PURGE`` **and** ``plan_run_id``, the run id of that dry run: the reviewed plan is loaded
and its digest checked (:func:`~.plans.load_reviewed_plan`), and only its planned ids that
still match, are not held and are verified are deleted, with the archive check, legal hold,
batching and audit of retention (:func:`~voipstudio_provider.engine.purge.purge_planned`).
CDRs cannot be deleted one by one in this API; with ``mask_cdrs`` the number is masked in
matching CDRs through the bulk PATCH instead (:mod:`~voipstudio_provider.engine.masking`).

The decisions are in the engine; this module reads the form, the Variables and the
connections, and reports to the log and XCom.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from voipstudio_provider.engine.audit import DELETED, FAILED, SKIPPED, audit_part
from voipstudio_provider.engine.evidence import deletion_attempt, evidence_args, probe_bucket
from voipstudio_provider.engine.layout import plan_key
from voipstudio_provider.engine.masking import mask_planned_cdrs
from voipstudio_provider.engine.plans import (
    load_reviewed_plan,
    plan_csv_key,
    read_plan,
    reviewed_digest,
    write_plan,
    write_plan_csv,
)
from voipstudio_provider.engine.purge import (
    CONFIRM_PHRASE,
    PURGE_RESOURCES,
    PurgeRequest,
    build_plan,
    parse_purge_request,
    plan_counts,
    purge_planned,
)
from voipstudio_provider.tasks.settings import (
    clients,
    deletion_target,
    load_default_region,
    load_legal_hold,
)

log = logging.getLogger(__name__)


def _request(params: Mapping[str, Any]) -> PurgeRequest:
    """The run's :class:`~voipstudio_provider.engine.purge.PurgeRequest`; the Variable
    ``voipstudio_default_region`` is read only when the form gives a number.

    :raises ValueError: the form is wrong (see
        :func:`~voipstudio_provider.engine.purge.parse_purge_request`).
    """
    region = load_default_region() if params.get("phone_number") else None
    return parse_purge_request(params, region)


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
        request = _request(params)
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
    request = _request(params)
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
    request = _request(params)
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
    request = _request(params)
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
        request = _request(params)
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
