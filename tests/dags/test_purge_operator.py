"""What an operator sees of a compliance purge: task states, the run's note, the plan CSV."""

from __future__ import annotations

import csv
import datetime as dt
import io

from voipstudio_provider.engine.deletion.purge import PURGE_RESOURCES
from voipstudio_provider.engine.evidence.plans import PLAN_CSV_COLUMNS

from tests.dags.conftest import load_dag
from tests.dags.test_purge import DAG_ID, approved_purge, read_plan, state
from tests.dags.test_purge import desk as desk  # noqa: F401 (fixture)
from tests.dags.test_retention import archive_old, today
from tests.dags.test_retention import run_dag as run_dag  # noqa: F401 (fixture, no retries)


def task_states(dag_run) -> dict[tuple[str, int], str]:
    return {(ti.task_id, ti.map_index): ti.state for ti in dag_run.get_task_instances()}


def run_note(dag_run) -> str | None:
    """The note as Airflow keeps it, read back from the metadata database."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        stored = session.scalar(
            select(DagRun).where(DagRun.dag_id == DAG_ID, DagRun.run_id == dag_run.run_id)
        )
        return stored.note


def xcom(dag_run, task_id: str):
    return next(ti for ti in dag_run.get_task_instances() if ti.task_id == task_id).xcom_pull(
        task_ids=task_id
    )


def plan_csv(env, key: str) -> list[dict]:
    body = env.s3().get_object(Bucket=env.bucket, Key=key)["Body"].read().decode()
    reader = csv.DictReader(io.StringIO(body))
    assert tuple(reader.fieldnames) == PLAN_CSV_COLUMNS
    return list(reader)


def test_dry_run_skips_what_it_has_no_work_for_and_says_what_it_planned(airflow_env, run_dag):
    env = airflow_env
    older = today() - dt.timedelta(days=150)
    before = state(env.sandbox)
    conf = {"older_than": older.date().isoformat(), "resources": ["monitors"], "dry_run": True}

    dag_run = run_dag(DAG_ID, logical_date=today(), conf=conf)

    assert dag_run.state == "success"
    states = task_states(dag_run)
    assert states[("approve_purge", -1)] == "skipped"
    assert {s for (t, _), s in states.items() if t == "purge_planned_records"} == {"skipped"}
    assert states[("mask_matching_cdrs", -1)] == "skipped"
    assert states[("write_audit_log", -1)] == "success"
    assert states[("set_run_note", -1)] == "success"
    assert states[("fail_if_a_task_failed", -1)] == "skipped"
    assert state(env.sandbox) == before

    plan = read_plan(env, dag_run)
    planned = plan["resources"]["monitors"]["count"]
    assert planned > 0 and set(plan["resources"]) == {"monitors"}
    assert run_note(dag_run).startswith(f"DRY RUN: {planned} planned, 0 held; plan ")

    summary = xcom(dag_run, "plan_purge")
    assert summary["plan_csv_key"].endswith(f"{dag_run.run_id}.plan.csv")
    rows = plan_csv(env, summary["plan_csv_key"])
    assert [int(r["id"]) for r in rows] == sorted(plan["resources"]["monitors"]["ids"])
    assert {(r["resource"], r["held"], r["hold_reason"]) for r in rows} == {("monitors", "no", "")}
    assert all(dt.date.fromisoformat(r["date"][:10]) < older.date() for r in rows)


def test_held_items_are_rows_of_the_plan_csv_with_their_reason(airflow_env, run_dag):
    env = airflow_env
    older = today() - dt.timedelta(days=150)
    conf = {"older_than": older.date().isoformat(), "resources": ["voicemessages"]}
    first = run_dag(DAG_ID, logical_date=today(), conf=conf)
    held_id = read_plan(env, first)["resources"]["voicemessages"]["ids"][0]
    env.set_variable("voipstudio_legal_hold", {"ids": {"voicemessages": [held_id]}})

    dag_run = run_dag(DAG_ID, logical_date=today() + dt.timedelta(seconds=1), conf=conf)

    assert dag_run.state == "success"
    rows = {int(r["id"]): r for r in plan_csv(env, xcom(dag_run, "plan_purge")["plan_csv_key"])}
    assert (rows[held_id]["held"], rows[held_id]["hold_reason"]) == ("yes", "legal_hold_id")
    assert run_note(dag_run).startswith(f"DRY RUN: {len(rows) - 1} planned, 1 held")


def test_a_run_without_criteria_is_refused_by_its_first_task_at_once(airflow_env, run_dag):
    assert load_dag(DAG_ID).get_task("plan_purge").retries == 0

    dag_run = run_dag(DAG_ID, logical_date=today(), conf={"dry_run": True})

    assert dag_run.state == "failed"
    states = task_states(dag_run)
    assert states[("plan_purge", -1)] == "failed"
    assert states[("approve_purge", -1)] == "upstream_failed"
    plan_ti = next(ti for ti in dag_run.get_task_instances() if ti.task_id == "plan_purge")
    assert plan_ti.try_number == 1
    assert run_note(dag_run) == (
        "REFUSED: nothing to purge by: set older_than (a date), phone_number, or both; "
        "nothing was planned or deleted"
    )
    assert airflow_env.keys("audit/") == []


def test_an_approved_purge_notes_what_it_deleted_and_kept_and_who_approved(
    airflow_env, run_dag, desk
):
    env = airflow_env
    older = today() - dt.timedelta(days=150)
    archive_old(env, "monitors", older)
    before = state(env.sandbox)["monitors"]
    conf = {"older_than": older.date().isoformat(), "resources": ["monitors", "voicemessages"]}

    # Voicemail is not archived: with require_archive on every planned one is kept.
    dag_run = approved_purge(run_dag, desk, conf)

    assert dag_run.state == "success"
    states = task_states(dag_run)
    by_resource = dict(zip(PURGE_RESOURCES, range(len(PURGE_RESOURCES)), strict=True))
    assert states[("purge_planned_records", by_resource["monitors"])] == "success"
    assert states[("purge_planned_records", by_resource["voicemessages"])] == "success"
    assert states[("purge_planned_records", by_resource["chatmsgs"])] == "skipped"
    assert states[("mask_matching_cdrs", -1)] == "skipped"
    deleted = len(before) - len(state(env.sandbox)["monitors"])
    kept = read_plan(env, dag_run)["resources"]["voicemessages"]["count"]
    assert deleted > 0 and kept > 0
    assert run_note(dag_run) == f"PURGED: {deleted} deleted, {kept} kept; approved by bob"
    assert xcom(dag_run, "set_run_note")["via"] == "metadata_db"


def test_without_the_api_connection_the_note_is_reported_not_set(airflow_env, caplog):
    from voipstudio_provider.tasks.run_notes import set_run_note

    # Outside a task there is neither the connection nor the in-process metadata path.
    result = set_run_note(DAG_ID, "manual__nothing", "DRY RUN: 0 planned")

    assert result == {
        "note": "DRY RUN: 0 planned",
        "set": False,
        "via": None,
        "why_not": "no Airflow connection 'airflow_api' to the API server",
    }
    assert "run note not set (no Airflow connection 'airflow_api'" in caplog.text


def test_an_unreachable_api_server_never_fails_the_note(airflow_env, caplog):
    from voipstudio_devstack import free_port
    from voipstudio_provider.tasks.run_notes import set_run_note

    url = f"http://127.0.0.1:{free_port()}"
    airflow_env.monkeypatch.setenv(
        "AIRFLOW_CONN_AIRFLOW_API", f'{{"conn_type": "http", "host": "{url}", "password": "t0k"}}'
    )

    result = set_run_note(DAG_ID, "manual__nothing", "REFUSED: why")

    assert (result["set"], result["via"]) == (False, "rest_api")
    assert result["why_not"].startswith("ConnectionError")
    assert "t0k" not in caplog.text and "t0k" not in result["why_not"]
