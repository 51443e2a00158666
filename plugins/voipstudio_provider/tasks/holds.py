"""Legal holds on the archived copies and the subject index, as the reconciliation's daily
task: index the chat archives (and, when asked, everything archived before the index)
not indexed yet, then make every archived copy's S3 legal
hold match ``voipstudio_legal_hold`` (:mod:`~voipstudio_provider.engine.subjects.object_holds`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from airflow.sdk import Param

log = logging.getLogger(__name__)


def hold_params() -> dict[str, Param]:
    """The reconciliation's params for holds and the subject index."""
    return {
        "sync_holds": Param(
            True,
            type="boolean",
            title="Lock held copies",
            description="set S3 legal holds on every archived copy of a held record, "
            "lift them from released ones, and report drift",
        ),
        "backfill_index": Param(
            False,
            type="boolean",
            title="Index old objects",
            description="add objects archived before the subject index to it, reading "
            "sidecars and chat archives (never the recordings)",
        ),
    }


def sync_legal_holds_task(params: Mapping[str, Any], run_id: str) -> dict[str, Any]:
    """The ``sync_legal_holds`` task's body.

    Flags are set and lifted, and their audit written, through the connection
    ``aws_legal_hold`` only, which must exist once a hold names anything.

    :return: what :func:`~voipstudio_provider.engine.subjects.object_holds.sync_holds` reports,
        with ``backfill`` counts when it ran; a finding (a bucket without Object Lock) is
        logged as an error and returned, and fails the task through ``check_holds``.
    """
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from voipstudio_provider.engine.subjects.object_holds import needs_changes, sync_holds
    from voipstudio_provider.engine.subjects.subject_index import SubjectIndex, backfill
    from voipstudio_provider.tasks.settings import (
        AWS_CONN_ID,
        archive_target,
        fail_on_configuration_error,
        legal_hold_client,
        load_default_region,
        load_legal_hold,
    )

    with fail_on_configuration_error("legal hold, region or bucket Variables"):
        target = archive_target(params)
        hold = load_legal_hold()
        region = load_default_region()
    s3_client = S3Hook(aws_conn_id=AWS_CONN_ID).get_conn()
    regions = (region,) if region else ()
    # Chats are archived by the deleting DAGs, not by an archive batch: index them here,
    # daily (one LIST of the chats folder, a GET per chat archived since).
    index = SubjectIndex.read(s3_client, target.bucket, target.prefix)
    sidecars = bool(params.get("backfill_index"))
    done: dict[str, Any] = {
        "backfill": backfill(s3_client, target, regions, sidecars=sidecars, index=index)
    }
    if not params.get("sync_holds", True):
        return done
    if not needs_changes(s3_client, target, hold):
        log.info("no legal hold is set and none is left to lift")
        return {**done, "held_records": 0, "findings": []}
    with fail_on_configuration_error("legal-hold connection"):
        writer = legal_hold_client()
    report = sync_holds(s3_client, target, hold, index, run_id, hold_client=writer)
    log.info(
        "legal holds: %d held records, %d archived objects; %d set ON, %d set OFF, "
        "%d drifted, %d unknown",
        report["held_records"], report["held_objects"], report["set_on"],
        report["set_off"], len(report["drift"]), len(report["unknown"]),
    )  # fmt: skip
    short = {name: report[name][:20] for name in ("drift", "unknown", "not_indexed")}
    return {**done, **report, **short}


def raise_on_findings(report: Mapping[str, Any]) -> None:
    """Fail the run when holds cannot be enforced: a finding is never silence."""
    from airflow.sdk.exceptions import AirflowException

    if report.get("findings"):
        raise AirflowException("; ".join(report["findings"]))
