"""Erasure of the archived copies, as task bodies: after a purge (:func:`erase_archived_copies`,
run by the purge's task through :func:`erase_after_purge`) and daily, for what had to wait
(:func:`erase_due_copies`).

Both read the archive's place from the Variables only (as every deleting DAG does), the
legal hold and ``voipstudio_minimum_keep_days`` afresh, and delete only through the
erasure role's connection ``aws_erasure``.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)


def _archive_client():
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from voipstudio_provider.tasks.settings import AWS_CONN_ID

    return S3Hook(aws_conn_id=AWS_CONN_ID).get_conn()


def _rules(now: dt.datetime | None):
    from voipstudio_provider.engine.deletion.erasure import ErasureRules
    from voipstudio_provider.tasks.settings import load_legal_hold, load_minimum_keep_days

    return ErasureRules(
        hold=load_legal_hold(),
        keep_days=load_minimum_keep_days(),
        now=now or dt.datetime.now(dt.UTC),
    )


def erase_archived_copies(
    plan_or_number: Mapping[str, Any] | str,
    run_id: str,
    *,
    purge_run: str | None = None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Erase the archived copies of what a purge erased at the source.

    :param plan_or_number: the purge's approved plan (``{"criteria", "resources": {res:
        {"ids", "dates", ...}}}``): its records, and with a ``phone_number`` criterion
        every archived-only record of that number too; or one phone number (any form the
        purge reads), whose archived records are all erased.
    :param run_id: the run erasing, named in the audit ``{p}/audit/erasure/{run_id}.jsonl``.
    :param purge_run: the purge run named in the tombstones (default ``run_id``).
    :param now: the moment decisions are made at (default: now).
    :return: counts (``erased``, ``kept``, ``pending``, ``records_erased``), ``audit_key``,
        ``pending_key``, ``manifests`` written and ``index_objects_rewritten``.
    :raises ConfigurationError: ``aws_erasure`` is not defined, or a Variable does not
        parse; nothing is erased then.
    """
    from voipstudio_provider.engine.deletion.erasure import (
        erase_subjects,
        subjects_of_number,
        subjects_of_plan,
    )
    from voipstudio_provider.engine.subjects.phone_numbers import parse_number, to_e164
    from voipstudio_provider.engine.subjects.subject_index import SubjectIndex
    from voipstudio_provider.tasks.settings import (
        deletion_target,
        erasure_client,
        load_default_region,
    )

    target = deletion_target()
    rules = _rules(now)
    eraser = erasure_client()
    s3_client = _archive_client()
    index = SubjectIndex.read(s3_client, target.bucket, target.prefix)
    if isinstance(plan_or_number, str):
        number, subjects = plan_or_number, []
    else:
        number = (plan_or_number.get("criteria") or {}).get("phone_number")
        subjects = subjects_of_plan(plan_or_number, index, target.prefix)
    if number:
        e164 = to_e164(parse_number(number, load_default_region(), source="phone_number"))
        subjects += subjects_of_number(index, e164)
    log.info("erasing the archived copies of %d records", len(subjects))
    return erase_subjects(
        s3_client, eraser, target, index, subjects, rules, run_id, purge_run=purge_run or run_id
    )


def erase_due_copies(run_id: str, *, now: dt.datetime | None = None) -> dict[str, Any]:
    """Erase the kept copies whose ``erase_after`` has passed; a no-op, without the erasure
    connection, when nothing waits."""
    from voipstudio_provider.engine.deletion.erasure import erase_due, pending_items
    from voipstudio_provider.engine.subjects.subject_index import SubjectIndex
    from voipstudio_provider.tasks.settings import deletion_target, erasure_client

    target = deletion_target()
    s3_client = _archive_client()
    if not pending_items(s3_client, target.bucket, target.prefix):
        log.info("no archived copies wait for erasure")
        return {"erased": 0, "kept": 0, "pending": 0, "records_erased": 0, "waiting": 0}
    rules = _rules(now)
    index = SubjectIndex.read(s3_client, target.bucket, target.prefix)
    result = erase_due(s3_client, erasure_client(), target, index, rules, run_id)
    log.info("due erasures: %s", result)
    return result


def erase_after_purge(
    params: Mapping[str, Any], dag_run, approval_answer: Mapping[str, Any] | None,
    try_number: int = 1,
) -> dict[str, Any]:  # fmt: skip
    """Task of the purge: erase the archived copies of what the approved purge deleted.

    Only records gone from the source are erased (:func:`~voipstudio_provider.engine.
    erasure_scope.erasure_plan`): a record the purge kept keeps its archived copies too.
    The approval and the plan's digest and criteria are checked again, as where the purge
    deletes; a missing ``aws_erasure`` connection or a Variable that does not parse fails
    the task, without retries, before anything is erased.

    :param approval_answer: what ``approve_purge`` returned.
    :param try_number: this attempt; a retry audits in ``{run_id}.try{n}`` of its own.
    :return: the counts of :func:`erase_archived_copies` and ``left`` (per resource and
        reason, records whose copies stay because the source still has them).
    :raises AirflowSkipException: ``erase_archive`` is off.
    """
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    from voipstudio_provider.engine.deletion.erasure_scope import erasure_plan
    from voipstudio_provider.engine.evidence.plans import check_plan_criteria, read_approved_plan
    from voipstudio_provider.engine.layout import plan_key
    from voipstudio_provider.engine.subjects.subject_index import SubjectIndex
    from voipstudio_provider.tasks.purge import checked_approval, purge_request
    from voipstudio_provider.tasks.settings import (
        clients,
        deletion_target,
        erasure_client,
        fail_on_configuration_error,
        load_legal_hold,
        load_minimum_keep_days,
    )

    request = purge_request(params)
    if not request.erase_archive:
        raise AirflowSkipException("erase_archive is off: the archived copies stay")
    approval = checked_approval(approval_answer, dag_run)
    with fail_on_configuration_error("erasure's connection and Variables"):
        erasure_client()
        load_legal_hold()
        load_minimum_keep_days()
    target = deletion_target()
    hook, s3_client = clients("voipstudio_default", "aws_default")
    key = plan_key(target.prefix, dag_run.dag_id, dag_run.run_id)
    try:
        plan = read_approved_plan(s3_client, target.bucket, key, approval.plan_sha256)
        check_plan_criteria(plan, request.criteria())
    except PermissionError as error:
        raise AirflowFailException(str(error)) from None
    index = SubjectIndex.read(s3_client, target.bucket, target.prefix)
    scope = erasure_plan(hook, plan, index)
    for resource, reasons in sorted(scope.left.items()):
        log.info("%s: archived copies kept of records the source still has: %s",
                 resource, reasons)  # fmt: skip
    run_id = dag_run.run_id if try_number <= 1 else f"{dag_run.run_id}.try{try_number}"
    result = erase_archived_copies(scope.plan, run_id, purge_run=dag_run.run_id)
    return {**result, "left": scope.left}
