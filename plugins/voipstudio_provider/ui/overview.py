"""Everything the Archive page shows, gathered in the API server: read-only.

The bucket and prefix are the Variables' (``voipstudio_s3_bucket``, ``voipstudio_s3_prefix``),
as for the deleting DAGs; the bucket is read with the ``aws_default`` connection. The
Airflow side (DAG runs, approvals waiting in Airflow's human-in-the-loop tables) comes from
the metadata database through Airflow's models. A section that cannot be read says why in
its ``problem`` and the others are still shown; a problem never carries a credential (only
an S3 error code or an exception's type).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlparse

from botocore.exceptions import BotoCoreError, ClientError

from voipstudio_provider.engine.evidence.coverage import gap_days, manifest_chain, read_coverage
from voipstudio_provider.engine.evidence.deletion_runs import latest_deletion_runs
from voipstudio_provider.engine.subjects.hold_reach import hold_reach
from voipstudio_provider.tasks.settings import (
    AWS_CONN_ID,
    load_legal_hold,
    resolve_bucket_and_prefix,
)

log = logging.getLogger(__name__)

RETENTION_DAG_ID = "voipstudio_retention"
PURGE_DAG_ID = "voipstudio_compliance_purge"
RECONCILE_DAG_ID = "voipstudio_reconcile"
APPROVAL_TASK_ID = "approve_purge"
#: The DAGs whose runs the page shows; reading the page requires reading their runs.
DAG_IDS = (RECONCILE_DAG_ID, RETENTION_DAG_ID, PURGE_DAG_ID)
#: Runs shown per deleting DAG, and reports read.
RUNS_SHOWN = 5
REPORT_DAYS = 31


def archive_location() -> tuple[str, str]:
    """The bucket and prefix of the Variables (no run params: the page shows the archive
    the deleting DAGs use). The API server reads Variables as its own routes do: secrets
    backends, then the metadata database."""
    return resolve_bucket_and_prefix(None)


def ui_path(path: str) -> str:
    """A path of the Airflow UI, below the path of ``[api] base_url`` when it has one."""
    from airflow.configuration import conf

    base = urlparse(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")
    return f"{base}{path}"


def run_link(dag_id: str, run_id: str) -> str:
    return ui_path(f"/dags/{quote(dag_id)}/runs/{quote(run_id, safe='')}")


def _problem(error: BaseException) -> str:
    """Why a section could not be read, without anything a credential could be in."""
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "error")
        return f"the bucket answered {code}"
    if isinstance(error, ValueError):
        return f"unreadable: {error}"
    return f"cannot be read now ({type(error).__name__})"


def _section(name: str, read: Callable[[], Any]) -> dict[str, Any]:
    try:
        return {"problem": None, **read()}
    except (ClientError, BotoCoreError, ValueError, OSError) as error:
        log.warning("archive page: %s cannot be read: %s", name, type(error).__name__)
        return {"problem": _problem(error)}


def _runs_in_airflow(session, dag_id: str, run_ids: list[str]) -> dict[str, dict[str, Any]]:
    from airflow.models.dagrun import DagRun
    from sqlalchemy import select

    if not run_ids:
        return {}
    rows = session.scalars(
        select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id.in_(run_ids))
    ).all()
    return {
        row.run_id: {
            "state": str(row.state) if row.state else None,
            "run_after": row.run_after.isoformat() if row.run_after else None,
            "note": row.note,
        }
        for row in rows
    }


def deletion_runs(s3_client, bucket: str, prefix: str, session) -> dict[str, Any]:
    """The newest runs of retention and of the purge, from their audit objects, each with
    its state in Airflow and the links to the run."""
    shown = {}
    for dag_id in (RETENTION_DAG_ID, PURGE_DAG_ID):
        runs = [r.as_dict() for r in latest_deletion_runs(s3_client, bucket, prefix, dag_id,
                                                            limit=RUNS_SHOWN)]  # fmt: skip
        known = _runs_in_airflow(session, dag_id, [r["run_id"] for r in runs])
        for run in runs:
            run["airflow"] = known.get(run["run_id"])
            run["link"] = run_link(dag_id, run["run_id"])
        shown[dag_id] = runs
    return {"dags": shown}


def _waiting_states() -> tuple[str, ...]:
    from airflow.utils.state import TaskInstanceState

    # Airflow 3.3 parks a human-in-the-loop task in awaiting_input; 3.2 defers it.
    awaiting = getattr(TaskInstanceState, "AWAITING_INPUT", None)
    return tuple(s for s in (TaskInstanceState.DEFERRED, awaiting) if s is not None)


def pending_approvals(session) -> dict[str, Any]:
    """Purges waiting for their second person: ``approve_purge`` waiting for input (or
    deferred, before Airflow 3.3) with a human-in-the-loop request nobody has answered yet,
    linked to its Required Action."""
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from sqlalchemy import select

    rows = session.execute(
        select(TaskInstance, HITLDetail)
        .join(HITLDetail, HITLDetail.ti_id == TaskInstance.id)
        .where(
            TaskInstance.dag_id == PURGE_DAG_ID,
            TaskInstance.task_id == APPROVAL_TASK_ID,
            TaskInstance.state.in_(_waiting_states()),
            HITLDetail.responded_at.is_(None),
        )
        .order_by(HITLDetail.created_at)
    ).all()
    waiting = []
    for ti, detail in rows:
        run = run_link(PURGE_DAG_ID, ti.run_id)
        waiting.append(
            {
                "run_id": ti.run_id,
                "subject": detail.subject,
                "requested_at": detail.created_at.isoformat() if detail.created_at else None,
                "options": list(detail.options or []),
                "assignees": [u.get("name") or u.get("id") for u in detail.assignees or []],
                "link": f"{run}/tasks/{APPROVAL_TASK_ID}/required_actions",
                "run_link": run,
            }
        )
    return {"waiting": waiting}


def archive_overview(session, s3_client=None) -> dict[str, Any]:
    """Every section of the page.

    :param session: a metadata database session (the API server's).
    :param s3_client: a boto3 S3 client (default: the ``aws_default`` connection's).
    """
    bucket, prefix = archive_location()
    if s3_client is None:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        s3_client = S3Hook(aws_conn_id=AWS_CONN_ID).get_conn()

    def coverage() -> dict[str, Any]:
        rows = read_coverage(s3_client, bucket, prefix, days=REPORT_DAYS)
        chain = manifest_chain(s3_client, bucket, prefix, gap_days=gap_days(rows))
        return {"reports": [row.as_dict() for row in rows], "manifests": chain}

    def holds() -> dict[str, Any]:
        return hold_reach(s3_client, bucket, prefix, load_legal_hold())

    return {
        "bucket": bucket,
        "prefix": prefix,
        "coverage": _section("coverage", coverage),
        "runs": _section("runs", lambda: deletion_runs(s3_client, bucket, prefix, session)),
        "holds": _section("holds", holds),
        "approvals": _section("approvals", lambda: pending_approvals(session)),
    }
