"""``voipstudio_reconcile`` run by Airflow after the recordings archive."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from voipstudio_provider.endpoints import parse_api_datetime
from voipstudio_provider.engine.layout import ARCHIVE_KINDS, archive_key

from tests.dags.conftest import load_dag
from tests.dags.test_archive_recordings import run_archive, xcom

pytestmark = pytest.mark.slow

TODAY = dt.datetime.now(dt.UTC).date()
FIRST, LAST = TODAY - dt.timedelta(days=20), TODAY - dt.timedelta(days=2)
CONF = {"from_date": str(FIRST), "to_date": str(LAST), "resources": ["monitors", "voicemessages"]}


def run_reconcile(conf: dict | None = None):
    dag = load_dag("voipstudio_reconcile")
    for task in dag.tasks:
        task.retries = 0
    return dag.test(logical_date=dt.datetime.now(dt.UTC), run_conf={**CONF, **(conf or {})})


def states(dag_run) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in dag_run.get_task_instances()}


def test_reconcile_reports_fails_on_an_old_gap_and_rearchives_it(airflow_env):
    env = airflow_env
    assert run_archive().state == "success"
    monitors = [
        r
        for r in env.sandbox.control("GET", "records/monitors")["data"]
        if FIRST <= parse_api_datetime(r["timestamp"]).date() <= LAST
    ]
    assert monitors

    clean = run_reconcile()
    assert clean.state == "success", states(clean)
    summary = xcom(clean, "reconcile_archive", "summary")
    assert summary["counts"]["monitors"]["verified"] == len(monitors)
    assert summary["gaps"] == {} and summary["overdue"] == {}
    assert summary["manifests_written"] == (LAST - FIRST).days + 1
    report = json.loads(env.s3().get_object(Bucket=env.bucket, Key=summary["key"])["Body"].read())
    assert summary["key"].startswith(f"{env.prefix}/reconciliation/date=")
    assert report["counts"]["monitors"]["missing"] == 0

    lost = monitors[0]
    env.s3().delete_object(
        Bucket=env.bucket, Key=archive_key(env.prefix, ARCHIVE_KINDS["monitors"], lost)
    )
    alerted = run_reconcile()
    assert alerted.state == "failed"
    assert states(alerted) == {
        "reconcile_archive": "success",
        "verify_manifests": "success",  # the day with the gap gets no new manifest
        "check_gaps": "failed",
        "sync_legal_holds": "success",
        "check_holds": "success",
        "erase_due_copies": "success",
    }
    assert xcom(alerted, "reconcile_archive", "summary")["gaps"]["monitors"] == {
        "missing": [lost["id"]]
    }

    repaired = run_reconcile({"rearchive": True})
    assert repaired.state == "success", states(repaired)
    summary = xcom(repaired, "reconcile_archive", "summary")
    assert summary["rearchived"]["monitors"]["archived"] == 1
    assert summary["gaps"] == {}
    assert archive_key(env.prefix, ARCHIVE_KINDS["monitors"], lost) in env.keys("recordings/")
