"""The compliance purge's tasks: plan, ask a second person, delete exactly what they approved.

A purge is asked for by a person, with ``older_than`` (a date), a ``phone_number``, or
both. ``plan_purge`` lists what matches per resource, held items apart
(:func:`~voipstudio_provider.engine.deletion.purge.build_plan`), and writes the plan to
:func:`~.layout.plan_key` (JSON, and CSV beside it). ``approve_purge`` (Airflow's
human-in-the-loop ``ApprovalOperator``, see
:class:`~voipstudio_provider.operators.purge_approval.PurgeApprovalOperator`) shows the
plan to a second person, with its SHA-256: the digest is fixed then. Only an Approve by
someone other than the person who asked lets the deletion go on; it reads the plan from
S3 again, refuses bytes that do not hash to that digest, and deletes the planned ids that
still match, are not held and are verified, with the archive check, legal hold, batching
and audit of retention (:func:`~voipstudio_provider.engine.deletion.purge.purge_planned`). CDRs
cannot be deleted one by one in this API; with ``mask_cdrs`` the number is masked in
matching CDRs through the bulk PATCH instead (:mod:`~voipstudio_provider.engine.deletion.masking`).

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

from voipstudio_provider.engine.deletion.approval import (
    APPROVED,
    EXPIRED,
    REJECTED,
    SELF_APPROVAL,
    Approval,
    ApprovalRefused,
    approval_body,
    approval_subject,
    assigned_users,
    check_approval,
    decide,
)
from voipstudio_provider.engine.deletion.masking import mask_planned_cdrs
from voipstudio_provider.engine.deletion.purge import (
    PurgeRequest,
    build_plan,
    parse_purge_request,
    plan_counts,
    purge_planned,
)
from voipstudio_provider.engine.evidence.audit import DELETED, FAILED, SKIPPED, audit_part
from voipstudio_provider.engine.evidence.intents import (
    deletion_attempt,
    evidence_args,
    probe_bucket,
)
from voipstudio_provider.engine.evidence.plans import (
    approved_plan_key,
    check_plan_criteria,
    plan_csv_key,
    read_approved_plan,
    write_plan,
    write_plan_csv,
)
from voipstudio_provider.engine.layout import plan_key
from voipstudio_provider.engine.s3objects import put_json
from voipstudio_provider.tasks.deletion_run import settle_earlier_runs
from voipstudio_provider.tasks.settings import (
    clients,
    deletion_target,
    load_default_region,
    load_legal_hold,
    load_purge_approvers,
)

log = logging.getLogger(__name__)

#: The XCom key of ``plan_purge``'s summary, pushed also when the plan is refused.
PLAN_SUMMARY_KEY = "plan_summary"
#: The XCom key of what ``approve_purge`` made of the answer, pushed however it ends.
ANSWER_KEY = "answer"


def purge_request(params: Mapping[str, Any]) -> PurgeRequest:
    """The run's :class:`~voipstudio_provider.engine.deletion.purge.PurgeRequest`; the Variable
    ``voipstudio_default_region`` is read only when the form gives a number.

    :raises ValueError: the form is wrong (see
        :func:`~voipstudio_provider.engine.deletion.purge.parse_purge_request`).
    """
    region = load_default_region() if params.get("phone_number") else None
    return parse_purge_request(params, region)


def run_plan(params: Mapping[str, Any], dag_id: str, run_id: str, ti=None) -> dict[str, Any]:
    """Task: check the form, then write this run's plan (JSON and CSV). Deletes nothing.

    A plan with more items to delete than ``max_deletions`` fails the task once written,
    dry run or not, so a purge wider than meant is noticed before anyone is asked.

    :param ti: the task instance, to push the summary also when the plan is refused.
    :return: the plan's key, digest and counts, and whether the run is a dry run.
    """
    try:
        request = purge_request(params)
    except ValueError as error:  # the form is wrong: a retry would be refused again
        raise AirflowFailException(f"refused: {error}") from None
    target = deletion_target()
    key = plan_key(target.prefix, dag_id, run_id)
    hook, s3_client = clients("voipstudio_default", "aws_default")
    plan = build_plan(hook, request, load_legal_hold())
    plan.update(dag_id=dag_id, run_id=run_id, planned_at=dt.datetime.now(dt.UTC).isoformat())
    write_args = evidence_args(target, lock=True)
    digest = write_plan(s3_client, target.bucket, key, plan, write_args)
    csv_key = plan_csv_key(key)
    write_plan_csv(s3_client, target.bucket, csv_key, plan, write_args)
    counts = plan_counts(plan)
    log.info("purge plan s3://%s/%s (sha256 %s), to read: s3://%s/%s: %s", target.bucket, key,
             digest, target.bucket, csv_key, json.dumps(counts, sort_keys=True))  # fmt: skip
    summary = {
        "plan_key": key,
        "plan_csv_key": csv_key,
        "plan_sha256": digest,
        "counts": counts,
        "dry_run": request.dry_run,
    }
    if ti is not None:
        ti.xcom_push(key=PLAN_SUMMARY_KEY, value=summary)
    refused = refusal(request, summary)
    if refused:
        raise AirflowFailException(refused)
    return summary


def planned_deletions(counts: Mapping[str, Any], resources: Iterable[str]) -> int:
    """Items the plan would delete (held items and CDRs to mask apart)."""
    return sum(counts.get(resource, {}).get("count", 0) for resource in resources)


def refusal(request: PurgeRequest, plan_summary: Mapping[str, Any]) -> str | None:
    """Why a planned purge may not go on (a plan larger than ``max_deletions``), or ``None``."""
    planned = planned_deletions(plan_summary["counts"], request.resources)
    if planned > request.max_deletions:
        return (
            f"the plan holds {planned} items to delete, more than max_deletions "
            f"{request.max_deletions}: nothing was deleted. Read the plan "
            f"{plan_summary['plan_key']}; to purge it, trigger again with max_deletions "
            f"raised to at least {planned}."
        )
    return None


# -- the approval -------------------------------------------------------------------------


def approval_request(
    params: Mapping[str, Any], plan_summary: Mapping[str, Any] | None, dag_run
) -> dict[str, Any]:
    """What ``approve_purge`` asks: subject and body rendered from the plan read back from
    S3 (its bytes must hash to the digest ``plan_purge`` reported), who may answer, and
    for how long. A dry run asks nothing.

    :param dag_run: the run (its ``run_after`` and ``triggering_user_name``).
    :return: ``{"subject", "body", "assigned_users", "response_timeout"}``.
    :raises AirflowSkipException: a dry run.
    :raises AirflowFailException: no plan, a plan that changed, or nobody who may approve.
    """
    request = purge_request(params)
    if request.dry_run:
        raise AirflowSkipException("dry run: the plan is written, nothing is asked or deleted")
    if not plan_summary:
        raise AirflowFailException("plan_purge reported no plan: nothing to approve")
    target = deletion_target()
    _, s3_client = clients("voipstudio_default", "aws_default")
    digest = plan_summary["plan_sha256"]
    try:
        plan = read_approved_plan(s3_client, target.bucket, plan_summary["plan_key"], digest)
        users = assigned_users(load_purge_approvers(), dag_run.triggering_user_name)
    except PermissionError as error:
        raise AirflowFailException(str(error)) from None
    timeout = dt.timedelta(hours=request.approval_hours)
    body = approval_body(
        plan, bucket=target.bucket, plan_key=plan_summary["plan_key"],
        plan_csv_key=plan_summary["plan_csv_key"], plan_sha256=digest,
        requested_by=dag_run.triggering_user_name, requested_at=dag_run.run_after,
        expires_at=dt.datetime.now(dt.UTC) + timeout,
    )  # fmt: skip
    return {
        "subject": approval_subject(plan),
        "body": body,
        "assigned_users": users,
        "response_timeout": timeout,
    }


def record_answer(
    params: Mapping[str, Any], plan_summary: Mapping[str, Any], dag_run, answer: Mapping[str, Any]
) -> dict[str, Any]:
    """What the answer means (:func:`~voipstudio_provider.engine.deletion.approval.decide`); an
    approval also gets the run's copy of the plan with who asked and who approved
    (:func:`~.plans.approved_plan_key`).

    :param answer: the operator's answer (``chosen_options``, ``responded_by_user``,
        ``responded_at``).
    """
    outcome = decide(
        answer["chosen_options"], answer.get("responded_by_user"), answer.get("responded_at"),
        requested_by=dag_run.triggering_user_name, requested_at=dag_run.run_after,
        plan_key=plan_summary["plan_key"], plan_sha256=plan_summary["plan_sha256"],
        approvers=load_purge_approvers(),
    )  # fmt: skip
    if outcome["outcome"] == APPROVED:
        target = deletion_target()
        _, s3_client = clients("voipstudio_default", "aws_default")
        approval = Approval.from_dict(outcome)
        try:
            plan = read_approved_plan(
                s3_client, target.bucket, approval.plan_key, approval.plan_sha256
            )
        except PermissionError as error:
            raise AirflowFailException(f"the approval cannot be recorded: {error}") from None
        plan.pop("sha256")
        copy_key = approved_plan_key(approval.plan_key)
        put_json(
            s3_client, target.bucket, copy_key, {**plan, "approval": outcome},
            write_args=evidence_args(target, lock=True), indent=1,
        )  # fmt: skip
        outcome["approved_plan_key"] = copy_key
    log.info("approval answer: %s", json.dumps(outcome, sort_keys=True))
    return outcome


def expired_answer(params: Mapping[str, Any]) -> dict[str, Any]:
    """The answer when nobody answered in time."""
    return {"outcome": EXPIRED, "approval_hours": purge_request(params).approval_hours}


def refused_line(outcome: Mapping[str, Any]) -> str | None:
    """The line a refused or expired answer fails ``approve_purge`` with, or ``None``."""
    if outcome["outcome"] == EXPIRED:
        return (
            f"EXPIRED: nobody answered the approval request within "
            f"{outcome['approval_hours']:g} h: nothing was deleted"
        )
    if outcome["outcome"] == SELF_APPROVAL:
        return (
            f"self-approval refused: {outcome['requested_by']} asked for this purge and "
            "cannot approve it too; nothing was deleted. Another person must approve (set "
            "allow_self_approval in the Variable voipstudio_purge_approvers to allow it)."
        )
    return None


def checked_approval(approval_answer: Mapping[str, Any] | None, dag_run) -> Approval:
    """The approval a deleting task acts on, checked again where it deletes."""
    try:
        return check_approval(approval_answer, dag_run.triggering_user_name, load_purge_approvers())
    except ApprovalRefused as error:
        raise AirflowFailException(str(error)) from None


# -- deleting -----------------------------------------------------------------------------


def _before_deleting(hook, s3_client, target, dag_id: str, run_id: str, part: str) -> None:
    """What must hold before this task's first delete request, once the approval and the
    plan's digest are checked: the bucket proves what it stores, and what any earlier run
    of either deleting DAG left behind (pending intents, unjoined audit parts) is settled,
    so that a finished audit object holds every line before anything new is deleted."""
    probe_bucket(s3_client, target, dag_id, run_id, part)
    settled = settle_earlier_runs(hook, s3_client, target, dag_id, run_id)
    log.info("earlier deleting runs settled: %s", json.dumps(settled, sort_keys=True))


def run_purge(
    resource: str, params: Mapping[str, Any], dag_run, try_number: int,
    approval_answer: Mapping[str, Any] | None,
) -> dict[str, Any]:  # fmt: skip
    """Task of one resource: delete its approved planned ids, audited in this attempt's part.

    The plan is read from S3 and must hash to the approved digest; the bucket is probed and
    earlier attempts' delete intents are reconciled first.

    :param approval_answer: what ``approve_purge`` returned.
    """
    request = purge_request(params)
    if resource not in request.resources:
        raise AirflowSkipException(f"{resource} is not among this purge's resources")
    approval = checked_approval(approval_answer, dag_run)
    dag_id, run_id = dag_run.dag_id, dag_run.run_id
    target = deletion_target()
    bucket = target.bucket
    hook, s3_client = clients("voipstudio_default", "aws_default")
    key = plan_key(target.prefix, dag_id, run_id)
    try:
        plan = read_approved_plan(s3_client, bucket, key, approval.plan_sha256)
        check_plan_criteria(plan, request.criteria())
    except PermissionError as error:
        raise AirflowFailException(str(error)) from None
    _before_deleting(hook, s3_client, target, dag_id, run_id, f"{resource}.try{try_number}")
    with deletion_attempt(hook, s3_client, target, dag_id, run_id, resource, try_number) as (
        audit,
        intents,
    ):
        try:
            purge_planned(
                hook, s3_client, target, audit, request, resource, plan, load_legal_hold(),
                checkpoint=lambda: audit.upload(s3_client, bucket, audit.key),
                approval=approval, hold_loader=load_legal_hold, intents=intents,
            )  # fmt: skip
        finally:
            summary = audit.summary()
            log.info("%s purge: %s", resource, json.dumps(summary, sort_keys=True))
    return {"resource": resource, "dry_run": request.dry_run, **summary}


def run_masking(
    params: Mapping[str, Any], dag_run, try_number: int, approval_answer: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Task: mask the number in the approved plan's CDRs, when ``mask_cdrs`` is on."""
    request = purge_request(params)
    if not request.mask_cdrs:
        raise AirflowSkipException("mask_cdrs is off: CDRs are left as they are")
    approval = checked_approval(approval_answer, dag_run)
    dag_id, run_id = dag_run.dag_id, dag_run.run_id
    hold = load_legal_hold()
    target = deletion_target()
    hook, s3_client = clients("voipstudio_default", "aws_default")
    key = plan_key(target.prefix, dag_id, run_id)
    try:
        plan = read_approved_plan(s3_client, target.bucket, key, approval.plan_sha256)
        check_plan_criteria(plan, request.criteria())
    except PermissionError as error:
        raise AirflowFailException(str(error)) from None
    write_args = evidence_args(target, lock=False)
    part = f"cdrs.try{try_number}"
    with audit_part(
        s3_client, target.bucket, target.prefix, dag_id, run_id, part, write_args
    ) as audit:
        masked = mask_planned_cdrs(hook, audit, request, plan, hold, approval.audit_fields())
        summary = audit.summary()
    log.info("cdr masking: %s", json.dumps(summary, sort_keys=True))
    return {"masked": masked, **summary}


def _as_list(pulled: Any) -> list[dict]:
    """XComs of a mapped task as a list (one mapped instance comes back alone)."""
    if pulled is None:
        return []
    items = [pulled] if isinstance(pulled, Mapping) else list(pulled)
    return [item for item in items if item]


def _who(user: Mapping[str, Any] | None) -> str:
    return str((user or {}).get("name") or (user or {}).get("id") or "unknown")


def purge_note(
    params: Mapping[str, Any],
    plan_summary: Mapping[str, Any] | None,
    answer: Mapping[str, Any] | None,
    purged: Any,
    erased: Mapping[str, Any] | None = None,
) -> str:
    """The run's note: ``DRY RUN: N planned``, ``REJECTED by <user>``, ``EXPIRED: ...``,
    ``REFUSED: <why>`` or ``PURGED: N deleted, M kept; approved by <user>`` (``FAILED:
    ...`` when a task failed otherwise), and ``; N archived copies erased, K kept`` when
    the archived copies were erased (``; archived copies not erased ...`` when
    ``erase_archive`` asked for it and the erasure did not end well).

    :param plan_summary: what ``plan_purge`` reported, ``None`` when it wrote no plan.
    :param answer: what ``approve_purge`` made of the answer, ``None`` without one.
    :param purged: the XComs of ``purge_planned_records`` (one dict or a list of them).
    :param erased: what ``erase_archived_copies`` returned, ``None`` when it did not run.
    """
    try:
        request = purge_request(params)
    except ValueError as error:
        return f"REFUSED: {error}"
    if plan_summary is None:
        return "FAILED: no plan was written; the log of plan_purge says why"
    refused = refusal(request, plan_summary)
    if refused:
        return f"REFUSED: {refused}"
    where = plan_summary.get("plan_csv_key") or plan_summary["plan_key"]
    if request.dry_run:
        counts = plan_summary["counts"]
        planned = planned_deletions(counts, request.resources)
        held = sum(counts.get(r, {}).get("held", 0) for r in request.resources)
        return f"DRY RUN: {planned} planned, {held} held; plan {where}"
    outcome = (answer or {}).get("outcome")
    if outcome is None:
        return "FAILED: the approval was not asked or not recorded (see approve_purge's log)"
    if outcome == REJECTED:
        return f"REJECTED by {_who(answer.get('responded_by'))}: nothing was deleted; plan {where}"
    if outcome in (EXPIRED, SELF_APPROVAL):
        line = refused_line(answer)
        return line if outcome == EXPIRED else f"REFUSED: {line}"
    totals = {DELETED: 0, SKIPPED: 0, FAILED: 0, "gone": 0}
    results = _as_list(purged)
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
    note += f"; approved by {_who(answer.get('approved_by'))}"
    if answer.get("self_approved"):
        note += " (self-approved, as voipstudio_purge_approvers allows)"
    if missing:
        note = f"FAILED: {', '.join(missing)} not purged (see their logs); " + note[8:]
    if erased:
        note += f"; {erased.get('erased', 0)} archived copies erased, {erased.get('kept', 0)} kept"
    elif request.erase_archive:
        note += "; archived copies not erased (see erase_archived_copies's log)"
    return note
