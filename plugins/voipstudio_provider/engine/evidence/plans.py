"""Purge plans: written by the purge's first task, approved by a person, then executed.

A plan is JSON at :func:`~.layout.plan_key` with ``sha256`` metadata and S3's own
``ChecksumSHA256``; :func:`read_approved_plan` is what the deletion checks before any
request to the API: the bytes must hash to the digest the approver was shown.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from typing import Any

from botocore.exceptions import ClientError

from voipstudio_provider.engine.s3objects import (
    ChangedObjectError,
    is_not_found,
    put_checked,
    put_json,
    read_checked_json,
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


def read_approved_plan(s3_client, bucket: str, key: str, approved_sha256: str) -> dict[str, Any]:
    """The plan a person approved: its bytes, read from S3 now, must hash to the digest the
    approval request showed (passed through XCom), whatever metadata is stored beside it.

    :raises PermissionError: the plan is gone, or is not the approved bytes.
    """
    try:
        plan = read_plan(s3_client, bucket, key)
    except ClientError as error:
        if not is_not_found(error):
            raise
        raise PermissionError(f"the approved plan {key} is gone; nothing was deleted") from None
    except ValueError as error:
        raise PermissionError(f"{error}; nothing was deleted") from None
    if plan["sha256"] != approved_sha256:
        raise PermissionError(
            f"the plan s3://{bucket}/{key} hashes to {plan['sha256']}, not to the approved "
            f"{approved_sha256}: nothing was deleted"
        )
    return plan


def approved_plan_key(plan_json_key: str) -> str:
    """The run's copy of its plan with the approval: ``….plan.json`` -> ``….plan.approved.json``."""
    return plan_json_key.removesuffix(".json") + ".approved.json"


def check_plan_criteria(plan: Mapping[str, Any], criteria: Mapping[str, Any]) -> None:
    """Refuse to execute ``plan`` for a request whose criteria differ from the plan's.

    A deleting task reads its form and the Variables again, hours after the plan was
    approved; ``region`` (``voipstudio_default_region``) decides which records a number
    matches, so a plan made under another region, or other criteria, is not the one to
    execute.

    :param criteria: :meth:`~.purge.PurgeRequest.criteria` of the executing request.
    :raises PermissionError: a criterion differs; nothing may be deleted then.
    """
    planned = plan.get("criteria") or {}
    differing = sorted(name for name in criteria if planned.get(name) != criteria[name])
    if differing:
        shown = ", ".join(f"{n} {planned.get(n)!r} -> {criteria[n]!r}" for n in differing)
        raise PermissionError(
            f"this run asks for other {', '.join(differing)} than the plan ({shown}): nothing "
            "was deleted; trigger a new purge to plan and approve again"
        )
