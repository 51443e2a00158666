"""Runs created without a logical date, as the REST API and the UI allow in Airflow 3.

``dag.test(logical_date=None)`` creates the run the way ``POST .../dagRuns`` with
``"logical_date": null`` does: no data interval, only ``run_after``.
"""

from __future__ import annotations

import datetime as dt

import pytest

from tests.dags.conftest import load_dag
from tests.dags.test_archive_recordings import xcom

pytestmark = pytest.mark.slow


def no_retries(dag_id: str):
    dag = load_dag(dag_id)
    for task in dag.tasks:
        task.retries = 0
    return dag


FIRST_TASKS = {
    "voipstudio_archive_recordings": "list_recordings_to_archive",
    "voipstudio_archive_pcaps": "list_pcaps_to_archive",
    "voipstudio_export_user_cdrs": "list_users_to_export",
    "voipstudio_retention": "read_retention_policy",
    "voipstudio_reconcile": "reconcile_archive",
}


def task_logs(capfd, caplog) -> str:
    out, err = capfd.readouterr()
    return out + err + caplog.text  # task logs reach stdout or the logging capture


def states(dag_run) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in dag_run.get_task_instances()}


def test_archive_run_covers_the_last_complete_hour_before_run_after(airflow_env, capfd, caplog):
    conf = {"lookback_hours": 2, "batch_size": 50}
    dag_run = no_retries("voipstudio_archive_recordings").test(logical_date=None, run_conf=conf)
    assert dag_run.logical_date is None and dag_run.data_interval_start is None
    assert dag_run.state == "success", states(dag_run)
    run_after = dag_run.run_after.astimezone(dt.UTC)
    end = run_after.replace(minute=0, second=0, microsecond=0)
    plan = xcom(dag_run, "list_recordings_to_archive", "plan")
    assert (plan["since"], plan["until"]) == (
        (end - dt.timedelta(hours=3)).isoformat(),
        end.isoformat(),
    )
    summary = xcom(dag_run, "summarize_archive", "summary")
    assert summary["window"] == {"since": plan["since"], "until": plan["until"]}
    assert f"run window {plan['since']} .. {plan['until']}" in task_logs(capfd, caplog)


def test_export_run_exports_the_utc_day_before_run_after(airflow_env):
    dag_run = no_retries("voipstudio_export_user_cdrs").test(logical_date=None)
    assert dag_run.state == "success", states(dag_run)
    day = dag_run.run_after.astimezone(dt.UTC).date() - dt.timedelta(days=1)
    assert xcom(dag_run, "list_users_to_export", "day") == day.isoformat()


def test_retention_run_counts_back_from_its_interval(airflow_env):
    dag_run = no_retries("voipstudio_retention").test(logical_date=None, run_conf={"dry_run": True})
    assert dag_run.state == "success", states(dag_run)
    end = dag_run.run_after.astimezone(dt.UTC).replace(hour=4, minute=0, second=0, microsecond=0)
    if end > dag_run.run_after:
        end -= dt.timedelta(days=1)
    windows = xcom(dag_run, "read_retention_policy")
    assert windows
    for window in windows:
        cutoff = dt.datetime.fromisoformat(window["cutoff"])
        assert cutoff == end - dt.timedelta(days=window["days"])


def test_reconcile_run_reports_up_to_the_day_of_its_interval_end(airflow_env):
    dag_run = no_retries("voipstudio_reconcile").test(
        logical_date=None, run_conf={"resources": ["monitors"], "days": 2}
    )
    summary = xcom(dag_run, "reconcile_archive", "summary")
    assert states(dag_run)["reconcile_archive"] == "success", states(dag_run)
    end = dag_run.run_after.astimezone(dt.UTC).replace(hour=5, minute=0, second=0, microsecond=0)
    if end > dag_run.run_after:
        end -= dt.timedelta(days=1)
    assert summary["to"] == end.date().isoformat()


def test_purge_dry_run_without_a_logical_date(airflow_env):
    older = (dt.datetime.now(dt.UTC) - dt.timedelta(days=400)).date().isoformat()
    dag_run = no_retries("voipstudio_compliance_purge").test(
        logical_date=None, run_conf={"older_than": older, "dry_run": True}
    )
    assert dag_run.state == "success", states(dag_run)
    assert xcom(dag_run, "plan_purge")["dry_run"] is True


@pytest.mark.parametrize(
    ("dag_id", "conf", "variables", "message"),
    [
        (
            "voipstudio_archive_recordings",
            {"prefix": "/"},
            {},
            "fix the archive run's params, Variables or connections: the S3 prefix",
        ),
        (
            "voipstudio_archive_pcaps",
            {},
            {"voipstudio_s3_options": '{"colour": "blue"}'},
            "voipstudio_s3_options has unknown options",
        ),
        (
            "voipstudio_export_user_cdrs",
            {},
            {"voipstudio_export_user_ids": '{"not": "a list"}'},
            "voipstudio_export_user_ids must be a JSON list",
        ),
        (
            "voipstudio_retention",
            {},
            {"voipstudio_retention_policy": "not json"},
            "fix the retention policy or legal hold Variable",
        ),
        (
            "voipstudio_reconcile",
            {},
            {"voipstudio_export_user_ids": "[1001, "},
            "fix the reconciliation's params, Variables or connections",
        ),
    ],
)
def test_a_configuration_error_fails_the_first_task_at_once_saying_what_to_fix(
    airflow_env, capfd, caplog, dag_id, conf, variables, message
):
    for name, value in variables.items():
        airflow_env.set_variable(name, value)
    dag = load_dag(dag_id)  # the DAG's own retries: a configuration error must not use them
    dag_run = dag.test(logical_date=None, run_conf=conf)
    assert dag_run.state == "failed"
    first = next(ti for ti in dag_run.get_task_instances() if ti.task_id == FIRST_TASKS[dag_id])
    assert first.state == "failed" and first.try_number == 1
    assert message in task_logs(capfd, caplog)


def test_a_missing_connection_fails_at_once_naming_it(airflow_env, capfd, caplog):
    airflow_env.monkeypatch.delenv("AIRFLOW_CONN_VOIPSTUDIO_DEFAULT")
    dag_run = load_dag("voipstudio_archive_recordings").test(logical_date=None)
    assert dag_run.state == "failed"
    plan = next(
        ti for ti in dag_run.get_task_instances() if ti.task_id == "list_recordings_to_archive"
    )
    assert plan.state == "failed" and plan.try_number == 1
    assert "connection 'voipstudio_default' is not defined" in task_logs(capfd, caplog)
