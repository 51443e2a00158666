"""Masking the purge's number in CDRs, which this API cannot delete one by one.

The planned CDRs (``cdrs_to_mask`` of a purge plan) are patched in bulk: every field where
the number appears, in any format, is replaced by :data:`~.purge.MASKED_NUMBER`, and each
batch is read back to check that the number is gone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from voipstudio_provider.engine.deletion.deleter import batched
from voipstudio_provider.engine.deletion.purge import (
    MASK_BATCH,
    MASKED_NUMBER,
    PurgeRequest,
    planned_records,
)
from voipstudio_provider.engine.evidence.audit import MASKED, SKIPPED, WOULD_MASK, AuditLog
from voipstudio_provider.engine.subjects.legal_hold import LegalHold
from voipstudio_provider.engine.subjects.phone_numbers import numbers_by_field


def _masked(cdr: Mapping[str, Any], request: PurgeRequest) -> dict[str, Any]:
    """The PATCH row replacing every field where the number appears, in any format: the
    number fields and the names repeating it. A field goes as a whole: a caller id such as
    ``"Ann" <+44 20 7946 0000>`` also names the person."""
    row: dict[str, Any] = {"id": cdr["id"]}
    for name, numbers in numbers_by_field("cdrs", cdr, request.regions):
        if request.matched_text(numbers):
            row[name] = MASKED_NUMBER
    return row


def mask_planned_cdrs(
    hook, audit: AuditLog, request: PurgeRequest, plan: Mapping[str, Any], hold: LegalHold,
    audit_fields: Mapping[str, Any] | None = None,
) -> int:  # fmt: skip
    """Mask the purge's number in the planned CDRs by bulk PATCH; return how many.

    Each batch is read back: a CDR still showing the number is audited as ``failed``.

    :param audit_fields: fields every line carries (who asked, who approved).
    """
    fields = dict(audit_fields or {})
    ids = plan.get("cdrs_to_mask", {}).get("ids", [])
    masked = 0
    for batch in batched(planned_records(hook, "cdrs", ids), MASK_BATCH):
        rows = []
        for cdr in batch:
            if hold.reason("cdrs", cdr):
                audit.add("cdrs", cdr["id"], SKIPPED, "legal_hold_number", **fields)
            elif request.dry_run:
                audit.add("cdrs", cdr["id"], WOULD_MASK, "number_matched", **fields)
            else:
                rows.append(_masked(cdr, request))
        if not rows:
            continue
        hook.update_records("cdrs", rows)
        for cdr in planned_records(hook, "cdrs", [row["id"] for row in rows]):
            if request.matches("cdrs", cdr):
                audit.add(
                    "cdrs", cdr["id"], "failed", "number_matched", detail="still unmasked", **fields
                )
            else:
                masked += 1
                audit.add("cdrs", cdr["id"], MASKED, "number_matched", **fields)
    return masked
