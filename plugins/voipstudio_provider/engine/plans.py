"""Purge plans: written by a dry run, reviewed by a person, executed by a confirmed run.

A plan is JSON at :func:`~.layout.plan_key` with ``sha256`` metadata and S3's own
``ChecksumSHA256``; :func:`load_reviewed_plan` is what a confirmed purge checks before any
request to the API.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from voipstudio_provider.engine.layout import plan_key
from voipstudio_provider.engine.s3objects import (
    ChangedObjectError,
    is_not_found,
    put_checked,
    put_json,
    read_checked_json,
)

if TYPE_CHECKING:
    from voipstudio_provider.engine.purge import PurgeRequest

#: The oldest reviewed plan a confirmed purge executes; an older one must be planned again.
PLAN_MAX_AGE = dt.timedelta(hours=72)
#: Criteria a confirmed run must share with the plan it executes. ``region`` (the Variable
#: ``voipstudio_default_region`` the plan was made under) is one: it decides which records
#: a number matches, so a plan made under another region is not this run's plan.
PLAN_CRITERIA = (
    "resources",
    "older_than",
    "phone_number",
    "require_archive",
    "mask_cdrs",
    "region",
)
#: The columns of the plan as CSV, one row per planned or held item.
PLAN_CSV_COLUMNS = ("resource", "id", "date", "matched_number", "held", "hold_reason")
#: A spreadsheet reads a cell starting with one of these as a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def plan_csv_key(plan_json_key: str) -> str:
    """Where the CSV of a plan goes: beside its JSON, ``….plan.json`` -> ``….plan.csv``."""
    return plan_json_key.removesuffix(".json") + ".csv"


def _as_text(value: Any) -> str:
    """A cell a spreadsheet shows as the text it is (``'`` before a formula start)."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def plan_rows(plan: Mapping[str, Any]) -> list[dict[str, str]]:
    """One row per item of the plan: what would be deleted (``held`` no), what the legal
    hold keeps (``held`` yes, with why), and the CDRs to mask (resource ``cdrs``)."""
    entries = list(plan.get("resources", {}).items())
    if "cdrs_to_mask" in plan:
        entries.append(("cdrs", plan["cdrs_to_mask"]))
    rows = []
    for resource, entry in entries:
        dates, matched = entry.get("dates", {}), entry.get("matched", {})
        reasons = entry.get("hold_reasons", {})
        items = [(i, False) for i in entry.get("ids", [])] + [
            (i, True) for i in entry.get("held", [])
        ]
        for record_id, held in sorted(items, key=lambda item: item[0]):
            rows.append({
                "resource": resource,
                "id": str(record_id),
                "date": _as_text(dates.get(str(record_id))),
                "matched_number": _as_text(matched.get(str(record_id))),
                "held": "yes" if held else "no",
                "hold_reason": (reasons.get(str(record_id)) or "legal_hold") if held else "",
            })  # fmt: skip
    return rows


def write_plan_csv(
    s3_client, bucket: str, key: str, plan: Mapping[str, Any], write_args: dict | None = None
) -> str:
    """Write the plan as CSV (:data:`PLAN_CSV_COLUMNS`) with S3's SHA-256 check.

    :return: the CSV's digest (hex).
    """
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=PLAN_CSV_COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(plan_rows(plan))
    return put_checked(
        s3_client, bucket, key, text.getvalue().encode(), content_type="text/csv",
        write_args=dict(write_args or {}),
    )  # fmt: skip


def write_plan(
    s3_client, bucket: str, key: str, plan: Mapping[str, Any], write_args: dict | None = None
) -> str:
    """Write the plan with S3's SHA-256 check; return its digest (hex).

    :param write_args: the run's encryption and Object Lock arguments.
    """
    return put_json(s3_client, bucket, key, plan, write_args=dict(write_args or {}), indent=1)


def read_plan(s3_client, bucket: str, key: str) -> dict[str, Any]:
    """The plan written by :func:`write_plan`; refuse one that does not match its digests.

    Both the ``sha256`` metadata and, when the bucket keeps it, S3's own
    ``ChecksumSHA256`` must be the SHA-256 of the body read.
    """
    try:
        plan, digest = read_checked_json(s3_client, bucket, key, s3_checksum=True)
    except ChangedObjectError:
        raise ValueError(
            f"the purge plan s3://{bucket}/{key} was changed after it was written"
        ) from None
    plan["sha256"] = digest
    return plan


def load_reviewed_plan(
    s3_client,
    target,
    dag_id: str,
    request: PurgeRequest,
    *,
    reviewed_sha256: str | None = None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """The dry run's plan a confirmed purge executes, checked before any request to the API.

    :param reviewed_sha256: the plan's digest as the dry run reported it (its XCom), when
        it can be read: the plan object must still have it.
    :raises PermissionError: no ``plan_run_id``, no such plan, a plan that changed, was not
        a dry run's, is older than :data:`PLAN_MAX_AGE`, or asked for other criteria.
    """
    run_id = request.plan_run_id
    if not run_id:
        raise PermissionError(
            "a confirmed purge executes a reviewed plan: set plan_run_id to the run id of "
            "a dry run of this DAG; nothing was deleted"
        )
    key = plan_key(target.prefix, dag_id, run_id)
    try:
        plan = read_plan(s3_client, target.bucket, key)
    except ClientError as error:
        if not is_not_found(error):
            raise
        raise PermissionError(f"no plan of run {run_id!r} at {key}; nothing was deleted") from None
    except ValueError as error:
        raise PermissionError(f"{error}; nothing was deleted") from None
    problems = []
    if reviewed_sha256 is not None and plan["sha256"] != reviewed_sha256:
        problems.append("its digest is not the one its dry run reported")
    if plan.get("dag_id") != dag_id or plan.get("run_id") != run_id:
        problems.append("it belongs to another run")
    if not plan.get("criteria", {}).get("dry_run", False):
        problems.append("it was not written by a dry run")
    planned_at = dt.datetime.fromisoformat(plan.get("planned_at", "1970-01-01T00:00:00+00:00"))
    age = (now or dt.datetime.now(dt.UTC)) - planned_at
    if age > PLAN_MAX_AGE:
        problems.append(f"it is {age.total_seconds() / 3600:.0f} h old, more than "
                        f"{PLAN_MAX_AGE.total_seconds() / 3600:.0f} h")  # fmt: skip
    asked = request.criteria()
    differing = [n for n in PLAN_CRITERIA if plan.get("criteria", {}).get(n) != asked[n]]
    if differing:
        problems.append(f"this run asks for other {', '.join(differing)} than the plan")
    if problems:
        raise PermissionError(
            f"the plan {key} cannot be executed: {'; '.join(problems)}. Nothing was "
            "deleted: run a dry run again and review its plan."
        )
    return plan


def reviewed_digest(dag_id: str, plan_run_id: str | None, ti) -> str | None:
    """The plan digest the dry run ``plan_run_id`` reported in its XCom, if readable."""
    if ti is None or not plan_run_id:
        return None
    summary = ti.xcom_pull(task_ids="plan_purge", dag_id=dag_id, run_id=plan_run_id)
    return (summary or {}).get("plan_sha256")
