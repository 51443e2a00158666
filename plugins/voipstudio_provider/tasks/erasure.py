"""Erasure of the archived copies, as task bodies: after a purge (:func:`erase_archived_copies`)
and daily, for what had to wait (:func:`erase_due_copies`).

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
    from voipstudio_provider.engine.erasure import ErasureRules
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
    from voipstudio_provider.engine.erasure import (
        erase_subjects,
        subjects_of_number,
        subjects_of_plan,
    )
    from voipstudio_provider.engine.phone_numbers import parse_number, to_e164
    from voipstudio_provider.engine.subject_index import SubjectIndex
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
    from voipstudio_provider.engine.erasure import erase_due, pending_items
    from voipstudio_provider.engine.subject_index import SubjectIndex
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
