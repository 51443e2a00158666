"""How a run of a DAG that deletes at the source ends: its audit is written, a failure shows.

The retention DAG and the compliance purge begin and end alike. Before either deletes,
:func:`settle_earlier_runs` settles what any earlier run of either DAG left when its
process died. At the end :func:`write_audit_log` reconciles what an interrupted attempt
left and joins the run's audit parts into one object; :func:`fail_run` fails the run when
another task failed. :func:`end_deletion_run` adds the two tasks to a DAG and wires them,
so that both DAGs declare them the same way.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from voipstudio_provider.engine.deletion.deleter import CONFIRM_TIMEOUT
from voipstudio_provider.engine.evidence.audit import merge_audit_parts
from voipstudio_provider.engine.evidence.intents import evidence_args, reconcile_run
from voipstudio_provider.engine.evidence.recovery import (
    SETTLE_GRACE,
    drop_leases,
    settle_left_behind,
)
from voipstudio_provider.tasks.settings import clients, deletion_target

log = logging.getLogger(__name__)


def fail_run() -> None:
    """Task run only when another task of the run failed: fail the run as well.

    ``write_audit_log`` is a teardown whose own failure fails the run, which makes it the
    run's only leaf in Airflow's eyes; this task, downstream of the work, keeps a failed
    task failing the run.
    """
    raise RuntimeError("another task of this run failed; its log says why")


def finish_audit(
    hook, s3_client, target, dag_id: str, run_id: str, *, wait: float = CONFIRM_TIMEOUT
) -> dict[str, Any]:
    """Reconcile the run's pending delete intents, then join its audit parts.

    :param wait: seconds to keep asking about deletes that may still land before an id
        still at the source is audited ``failed`` and released.
    :return: the summary of the audit object (see :func:`~.audit.merge_audit_parts`).
    """
    reconciled = reconcile_run(hook, s3_client, target, dag_id, run_id, wait=wait)
    # Every attempt has ended by now: a lease left is a killed attempt's.
    drop_leases(s3_client, target, dag_id, run_id)
    summary = merge_audit_parts(
        s3_client, target.bucket, target.prefix, dag_id, run_id,
        write_args=evidence_args(target, lock=True),
    )  # fmt: skip
    summary["reconciled_intents"] = reconciled
    return summary


def write_audit_log(
    params: Mapping[str, Any] | None,
    dag_id: str,
    run_id: str,
    aws_conn_id: str = "aws_default",
    voipstudio_conn_id: str = "voipstudio_default",
) -> dict[str, Any]:
    """Reconcile and join the run's audit into ``{p}/audit/{dag_id}/{run_id}.jsonl``.

    :param params: the run's params (unused: the location comes from the Variables).
    :return: counts per resource, action and reason, and the audit object's key.
    """
    target = deletion_target()
    hook, s3_client = clients(voipstudio_conn_id, aws_conn_id)
    summary = finish_audit(hook, s3_client, target, dag_id, run_id)
    log.info("audit s3://%s/%s: %s", target.bucket, summary["key"],
             json.dumps(summary, sort_keys=True))  # fmt: skip
    return summary


def end_deletion_run(work, watched: Iterable) -> None:
    """Add a deleting DAG's last two tasks, inside its ``@dag`` function.

    ``write_audit_log`` is the teardown of ``work`` (it runs also after a failure, and its
    own failure fails the run); ``fail_if_a_task_failed`` runs after ``watched`` only when
    one of them failed, so that a failed task still fails the run whose only leaf is the
    teardown.

    :param work: the task (or tasks) whose audit the teardown writes.
    :param watched: the tasks a failure of which fails the run.
    """
    from airflow.sdk import task

    @task(task_id="write_audit_log")
    def write_run_audit(params=None, dag_run=None):
        return write_audit_log(params, dag_run.dag_id, dag_run.run_id)

    @task(task_id="fail_if_a_task_failed", trigger_rule="one_failed", retries=0)
    def fail_if_a_task_failed():
        fail_run()

    work >> write_run_audit().as_teardown(on_failure_fail_dagrun=True)
    list(watched) >> fail_if_a_task_failed()


def settle_earlier_runs(
    hook,
    s3_client,
    target,
    dag_id: str,
    run_id: str,
    *,
    grace: dt.timedelta = SETTLE_GRACE,
    wait: float = CONFIRM_TIMEOUT,
) -> dict[str, Any]:
    """Settle what any earlier run of either deleting DAG left, before deleting anything.

    Call it at the start of a deleting step, after the bucket probe and before the first
    delete: pending intents of runs that died are asked of the source and their lines,
    marked ``recovered_by``, written into those runs' audit objects, which are joined
    and finished. Raises when it cannot: a run that cannot settle must not delete.

    :param hook: a :class:`~voipstudio_provider.hooks.voipstudio.VoIPstudioHook`.
    :param s3_client: a boto3 S3 client of the archive bucket.
    :param target: the deletion target (:func:`~.settings.deletion_target`).
    :param dag_id: the settling run's DAG id.
    :param run_id: the settling run's id (never settled by itself).
    :param grace: runs that wrote an intent or a part more recently are left alone.
    :param wait: seconds to keep asking about ids a dead run may have deleted late
        before they are audited ``failed`` and released.
    :return: ``{"runs": [...], "intents": n, "recent": [...]}``.
    """
    settled = settle_left_behind(
        hook, s3_client, target, dag_id=dag_id, run_id=run_id, grace=grace, wait=wait
    )
    return settled.as_dict()


def settle_before_deleting(
    dag_id: str,
    run_id: str,
    aws_conn_id: str = "aws_default",
    voipstudio_conn_id: str = "voipstudio_default",
) -> dict[str, Any]:
    """The task that settles earlier runs (see :func:`settle_earlier_runs`)."""
    target = deletion_target()
    hook, s3_client = clients(voipstudio_conn_id, aws_conn_id)
    summary = settle_earlier_runs(hook, s3_client, target, dag_id, run_id)
    log.info("earlier deleting runs settled: %s", json.dumps(summary, sort_keys=True))
    return summary
