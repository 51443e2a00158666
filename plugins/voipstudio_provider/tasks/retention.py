"""Retention: delete at the source what is past its days to keep and safely archived.

:func:`retain_resource` walks one resource's records dated before its cutoff by keyset
(``id gt last id``), so its own deletes and calls arriving meanwhile never make it skip a
row, and hands them to :class:`~voipstudio_provider.engine.deletion.deleter.SourceDeleter`.
The rest of this module is the bodies of the retention DAG's tasks: read the policy, probe the
bucket, delete one resource; :mod:`~voipstudio_provider.tasks.deletion_run` writes the run's
audit.

Fail-safe defaults: until the Variable ``voipstudio_retention_policy`` is set a run is a
dry run; bucket and prefix come from the Variables only, never from a run's params; the
cutoff counts back from ``min(data_interval_end, now)``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from voipstudio_provider.engine.deletion.chats import ChatArchive
from voipstudio_provider.engine.deletion.deleter import (
    CONFIRM_TIMEOUT,
    DEFAULT_MAX_DELETIONS,
    DELETE_BATCH,
    GO_REASONS,
    DeletionUnconfirmedError,
    SourceDeleter,
    batched,
)
from voipstudio_provider.engine.deletion.retention import (
    parse_retention_budgets,
    parse_retention_policy,
    retention_cutoff,
    retention_policy_is_set,
    retention_reference,
)
from voipstudio_provider.engine.evidence.audit import AuditLog, deletions_so_far
from voipstudio_provider.engine.evidence.intents import (
    DeleteIntents,
    deletion_attempt,
    present_ids,
    probe_bucket,
)
from voipstudio_provider.engine.subjects.legal_hold import LegalHold
from voipstudio_provider.tasks.settings import (
    POLICY_VARIABLE,
    clients,
    deletion_target,
    load_legal_hold,
    load_retention_policy,
)

log = logging.getLogger(__name__)

__all__ = [
    "BudgetSpentError",
    "DeletionUnconfirmedError",
    "CONFIRM_TIMEOUT",
    "DELETE_BATCH",
    "GO_REASONS",
    "ChatArchive",
    "SourceDeleter",
    "batched",
    "present_ids",
    "retain_resource",
]


def retain_resource(
    hook,
    s3_client,
    target,
    audit: AuditLog,
    resource: str,
    cutoff: dt.datetime,
    *,
    hold: LegalHold,
    dry_run: bool,
    budget: int,
    checkpoint: Callable[[], None] | None = None,
    confirm_timeout: float = CONFIRM_TIMEOUT,
    hold_loader: Callable[[], LegalHold] | None = None,
    intents: DeleteIntents | None = None,
) -> SourceDeleter:
    """Delete the records of ``resource`` dated before ``cutoff`` that are safely archived.

    :param cutoff: records whose date field is earlier are past retention; the API filters
        on it and every record is checked against it again.
    :return: the deleter, whose ``deleted``, ``failed`` and ``left_for_next_run`` say what
        happened.
    """
    deleter = SourceDeleter(
        hook, s3_client, target, audit, resource, hold=hold, dry_run=dry_run, budget=budget,
        checkpoint=checkpoint, confirm_timeout=confirm_timeout,
        audit_fields={"cutoff": cutoff.isoformat()}, cutoff=cutoff, hold_loader=hold_loader,
        intents=intents,
    )  # fmt: skip
    deleter.run(hook.iter_records(resource, until=cutoff))
    return deleter


# -- the retention DAG's tasks ------------------------------------------------------------

NO_POLICY = (
    f"the Variable {POLICY_VARIABLE} is not set: this run is a dry run and deletes "
    "nothing; set the policy to let retention delete"
)


def retention_windows(data_interval_end: dt.datetime) -> list[dict[str, Any]]:
    """One ``{"resource", "days", "cutoff", ...}`` per resource; one the policy keeps
    forever has ``days`` and ``cutoff`` ``None`` (its task ends skipped).

    Reads and checks the policy and the legal hold Variables, so a typo in either fails
    the run before anything is deleted. Without a policy the windows of the built-in days
    are returned with ``policy_set`` false: the run reports and deletes nothing.

    :param data_interval_end: the run's end; cutoffs count back from the earlier of it and
        now, so a re-run deletes up to the same moment and a run dated in the future
        deletes nothing newer than today's run would.
    """
    raw = load_retention_policy()
    policy = parse_retention_policy(raw)
    budgets = parse_retention_budgets(raw)
    policy_set = retention_policy_is_set(raw)
    hold = load_legal_hold()
    reference = retention_reference(data_interval_end)
    if not policy_set:
        log.warning("%s", NO_POLICY)
    log.info("retention policy %s, max_deletions %s, counted back from %s; legal hold %s",
             policy, budgets, reference.isoformat(), hold.describe())  # fmt: skip
    return [
        {
            "resource": r,
            "days": d,
            "cutoff": None if d is None else retention_cutoff(d, reference).isoformat(),
            "policy_set": policy_set,
            "max_deletions": budgets.get(r),
        }
        for r, d in policy.items()
    ]


def resource_budget(params: Mapping[str, Any], window: Mapping[str, Any]) -> int:
    """``max_deletions`` of one resource: the lower of the run's param and the policy's."""
    from_param = int(params.get("max_deletions", DEFAULT_MAX_DELETIONS))
    from_policy = window.get("max_deletions")
    return from_param if from_policy is None else min(from_param, int(from_policy))


class BudgetSpentError(AirflowFailException):
    """A resource's ``max_deletions`` was spent: records past retention are left.

    Fails the task without retries (a retry would find the budget spent again).
    """


def run_retention(
    window: Mapping[str, Any],
    *,
    params: Mapping[str, Any],
    dag_id: str,
    run_id: str,
    try_number: int,
    voipstudio_conn_id: str = "voipstudio_default",
    aws_conn_id: str = "aws_default",
) -> dict[str, Any]:
    """The task of one resource: delete what is past retention and safely archived.

    Probes the bucket first, reconciles earlier attempts' delete intents, then walks. Its
    audit lines go to this attempt's part of the run's audit log, uploaded after each
    deleting batch and when the task ends, however it ends.

    :param window: one item of :func:`retention_windows`.
    :param params: the run's params (``dry_run``, ``max_deletions``); ``bucket`` and
        ``prefix`` are not read (see :func:`deletion_target`).
    :return: a small summary: counts per action and reason, for XCom.
    :raises BudgetSpentError: after the audit, when the budget stopped a real run.
    """
    resource = window["resource"]
    if window.get("cutoff") is None:
        raise AirflowSkipException(
            f"{resource}: the retention policy keeps it forever (null): nothing to delete"
        )
    cutoff = dt.datetime.fromisoformat(window["cutoff"])
    target = deletion_target()
    why_dry = None if window.get("policy_set", True) else NO_POLICY
    if why_dry:
        log.warning("%s", why_dry)
    dry_run = bool(params.get("dry_run", False)) or why_dry is not None
    max_deletions = resource_budget(params, window)
    hook, s3_client = clients(voipstudio_conn_id, aws_conn_id)
    probe_bucket(s3_client, target, dag_id, run_id, f"{resource}.try{try_number}")
    with deletion_attempt(hook, s3_client, target, dag_id, run_id, resource, try_number) as (
        audit,
        intents,
    ):
        earlier = deletions_so_far(
            s3_client, target.bucket, target.prefix, dag_id, run_id, resource
        )
        budget = max_deletions - earlier
        log.info(
            "%s: deleting records before %s (%s days), dry_run=%s, %d of max_deletions %d left",
            resource, cutoff.isoformat(), window.get("days"), dry_run, max(budget, 0),
            max_deletions,
        )  # fmt: skip
        deleter = None
        try:
            deleter = retain_resource(
                hook, s3_client, target, audit, resource, cutoff, hold=load_legal_hold(),
                dry_run=dry_run, budget=budget, hold_loader=load_legal_hold, intents=intents,
                checkpoint=lambda: audit.upload(s3_client, target.bucket, audit.key),
            )  # fmt: skip
        finally:
            summary = audit.summary()
            log.info("%s retention: %s", resource, json.dumps(summary, sort_keys=True))
    reasons = summary["resources"].get(resource, {}).get("reasons", {})
    if reasons.get("archive_unverifiable"):
        log.warning(
            "%s: %d kept as archive_unverifiable: the bucket or the object gives no "
            "checksum or cannot be read now; the audit names each",
            resource, reasons["archive_unverifiable"],
        )  # fmt: skip
    result = {
        "resource": resource,
        "cutoff": cutoff.isoformat(),
        "dry_run": dry_run,
        "dry_run_reason": why_dry,
        "max_deletions": max_deletions,
        "unverifiable": reasons.get("archive_unverifiable", 0),
        "left_for_next_run": deleter.left_for_next_run,
        **summary,
    }
    if deleter.left_for_next_run is not None or reasons.get("max_deletions"):
        message = (
            f"{resource}: max_deletions {max_deletions} spent; "
            f"{deleter.left_for_next_run} records past the cutoff were left for the next run"
        )
        if not dry_run:
            raise BudgetSpentError(message + " (the audit is written; this task fails so "
                                   "that the run asks for attention)")  # fmt: skip
        log.warning("%s", message)
    return result
