"""The archive DAGs' high-water mark: records that reach the API late, and outages."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from voipstudio_provider.engine.layout import (
    ARCHIVE_KINDS,
    archive_key,
    highwater_key,
    parse_api_datetime,
)

from tests.dags.conftest import load_dag
from tests.dags.test_archive_recordings import asset_events, xcom

pytestmark = pytest.mark.slow

DAG_ID = "voipstudio_archive_recordings"
THIS_HOUR = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
DATE_FIELDS = {"monitors": "timestamp", "voicemessages": "origtime"}


def api_time(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def run_hourly(logical_date: dt.datetime, conf: dict | None = None):
    """One hourly run for ``logical_date`` (it covers the hour before), no retries."""
    dag = load_dag(DAG_ID)
    for task in dag.tasks:
        if task.task_id == "archive_recording_batch":
            task.partial_kwargs["retries"] = 0
        else:
            task.retries = 0
    return dag.test(logical_date=logical_date, run_conf=conf or {})


def add(sandbox, resource: str, when: dt.datetime) -> int:
    fields = {DATE_FIELDS[resource]: api_time(when)}
    (record_id,) = sandbox.control("POST", f"records/{resource}", {"fields": fields})["ids"]
    return record_id


def mark(env, kind: str) -> int | None:
    try:
        body = env.s3().get_object(Bucket=env.bucket, Key=highwater_key(env.prefix, kind))["Body"]
    except env.s3().exceptions.NoSuchKey:
        return None
    return json.loads(body.read())["id"]


def stored_key(env, resource: str, record_id: int) -> str:
    (record,) = [
        r for r in env.sandbox.control("GET", f"records/{resource}")["data"] if r["id"] == record_id
    ]
    return archive_key(env.prefix, ARCHIVE_KINDS[resource], record)


def test_a_recording_three_days_late_is_archived_by_the_next_default_run(airflow_env):
    env = airflow_env
    # The newest hour holds a recording and a voicemail: the first run starts both marks.
    first_ids = {r: add(env.sandbox, r, THIS_HOUR + dt.timedelta(minutes=1)) for r in DATE_FIELDS}
    first = run_hourly(THIS_HOUR + dt.timedelta(hours=1))
    assert first.state == "success"
    assert {r: mark(env, r) for r in DATE_FIELDS} == first_ids

    three_days_ago = THIS_HOUR - dt.timedelta(days=3, hours=2)
    late = {r: add(env.sandbox, r, three_days_ago) for r in DATE_FIELDS}
    late_keys = {stored_key(env, r, i) for r, i in late.items()}
    assert all(f"date={three_days_ago.date().isoformat()}" in k for k in late_keys)
    assert not late_keys & set(env.keys())

    second = run_hourly(THIS_HOUR + dt.timedelta(hours=2))  # default params: 6 h look-back
    assert second.state == "success"
    assert late_keys <= set(env.keys())
    assert {r: mark(env, r) for r in DATE_FIELDS} == late
    summary = xcom(second, "summarize_archive", "summary")
    assert summary["archived"] == 2
    (event,) = asset_events(second)
    since = THIS_HOUR + dt.timedelta(hours=1) - dt.timedelta(hours=6)
    assert event["window"] == {
        "since": since.isoformat(),
        "until": (THIS_HOUR + dt.timedelta(hours=2)).isoformat(),
    }
    for resource, record_id in late.items():
        covered = event["id_ranges"][resource]
        assert covered["above_id"] == first_ids[resource]
        assert covered["first_id"] <= record_id <= covered["last_id"]
        assert covered["mark"] == record_id


def test_a_30_hour_outage_leaves_no_gap_after_the_next_run(airflow_env):
    env = airflow_env
    before = THIS_HOUR - dt.timedelta(hours=30)
    first = run_hourly(before, {"lookback_hours": 21 * 24})  # the archive before the outage
    assert first.state == "success"
    marks = {r: mark(env, r) for r in DATE_FIELDS}
    assert all(marks.values())

    # During the outage calls go on; the hourly runs that do start find the API failing.
    during = {
        r: [add(env.sandbox, r, before + dt.timedelta(hours=h)) for h in (1, 12, 24)]
        for r in DATE_FIELDS
    }
    outage = {"path": "/v1.1/voipstudio/*", "methods": ["GET"], "kind": "503", "rate": 1}
    env.sandbox.control("PUT", "faults", {"seed": 3, "rules": [outage]})
    failed = run_hourly(THIS_HOUR - dt.timedelta(hours=12))
    env.sandbox.control("DELETE", "faults")
    assert failed.state == "failed"
    assert {r: mark(env, r) for r in DATE_FIELDS} == marks

    after = run_hourly(THIS_HOUR + dt.timedelta(hours=1))  # default params again
    assert after.state == "success"
    since = before - dt.timedelta(hours=1 + 21 * 24)
    expected = set()
    for resource, field in DATE_FIELDS.items():
        for record in env.sandbox.control("GET", f"records/{resource}")["data"]:
            if parse_api_datetime(record[field]) >= since:
                expected.add(archive_key(env.prefix, ARCHIVE_KINDS[resource], record))
    stored = {k for k in env.keys() if k.endswith(".mp3")}
    assert stored == expected
    for resource, ids in during.items():
        assert {stored_key(env, resource, i) for i in ids} <= stored
        assert mark(env, resource) >= max(ids)


def test_an_empty_run_still_names_its_window(airflow_env):
    before_history = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)  # the sandbox holds 180 days
    dag_run = run_hourly(before_history, {"lookback_hours": 0})
    assert dag_run.state == "success"
    (event,) = asset_events(dag_run)
    assert event["records"] == 0
    assert event["window"] == {
        "since": (before_history - dt.timedelta(hours=1)).isoformat(),
        "until": before_history.isoformat(),
    }
    assert event["id_ranges"]["monitors"] == {
        "first_id": None,
        "last_id": None,
        "above_id": None,
        "mark": None,
    }


def test_a_run_that_could_not_list_still_names_its_window(airflow_env):
    env = airflow_env
    outage = {"path": "/v1.1/voipstudio/*", "methods": ["GET"], "kind": "503", "rate": 1}
    env.sandbox.control("PUT", "faults", {"seed": 3, "rules": [outage]})
    try:
        dag_run = run_hourly(THIS_HOUR, {"lookback_hours": 2})
    finally:
        env.sandbox.control("DELETE", "faults")
    assert dag_run.state == "failed"
    summary = xcom(dag_run, "summarize_archive", "summary")
    assert summary["planned"] is False
    # From the run's own interval (the hour before), widened by the look-back.
    assert summary["window"] == {
        "since": (THIS_HOUR - dt.timedelta(hours=3)).isoformat(),
        "until": THIS_HOUR.isoformat(),
    }
    assert asset_events(dag_run) == []  # an incomplete archive announces nothing
