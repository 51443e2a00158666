"""``voipstudio_archive_recordings`` run by Airflow against the sandbox and SeaweedFS."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import pytest
from voipstudio_provider.engine.layout import (
    ARCHIVE_KINDS,
    archive_key,
    parse_api_datetime,
    sidecar_key,
)

from tests.dags.conftest import load_dag

pytestmark = pytest.mark.slow

DAG_ID = "voipstudio_archive_recordings"
# The full hour after next: its window ends after every record a test adds (dated now) until
# an hour after this module was imported, however long the suite runs before that test, so
# nothing lies above the high-water mark it starts; the look-back widens the window to
# three weeks of the sandbox's history (a few dozen small MP3s).
LOGICAL_DATE = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0) + dt.timedelta(
    hours=2
)
LOOKBACK_HOURS = 21 * 24
SINCE = LOGICAL_DATE - dt.timedelta(hours=1 + LOOKBACK_HOURS)
CONF = {"lookback_hours": LOOKBACK_HOURS, "batch_size": 4, "max_streams": 3}
DATE_FIELDS = {"monitors": "timestamp", "voicemessages": "origtime"}


def records_in_window(sandbox, resource: str) -> list[dict]:
    """The sandbox's own rows of ``resource`` dated inside the run's window."""
    rows = sandbox.control("GET", f"records/{resource}")["data"]
    field = DATE_FIELDS[resource]
    return [r for r in rows if SINCE <= parse_api_datetime(r[field]) < LOGICAL_DATE]


def expected_keys(sandbox, prefix: str) -> set[str]:
    keys = set()
    for kind in (ARCHIVE_KINDS["monitors"], ARCHIVE_KINDS["voicemessages"]):
        for record in records_in_window(sandbox, kind.resource):
            keys.add(archive_key(prefix, kind, record))
            keys.add(sidecar_key(prefix, kind, record))
    return keys


def mp3_gets(sandbox) -> list[str]:
    log = sandbox.control("GET", "requests")["data"]
    return [r["path"] for r in log if r["method"] == "GET" and r["path"].endswith(".mp3")]


def xcom(dag_run, task_id: str, key: str = "return_value"):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        row = session.scalars(
            select(XComModel).where(
                XComModel.dag_id == dag_run.dag_id,
                XComModel.run_id == dag_run.run_id,
                XComModel.task_id == task_id,
                XComModel.key == key,
            )
        ).first()
        return None if row is None else XComModel.deserialize_value(row)


def run_archive(conf: dict | None = None, batch_retries: int = 0):
    """Run the DAG once for ``LOGICAL_DATE``, its batches retried ``batch_retries`` times.

    The other tasks are not retried, so that a broken run fails at once.
    """
    dag = load_dag(DAG_ID)
    for task in dag.tasks:
        if task.task_id == "archive_recording_batch":
            task.partial_kwargs["retries"] = batch_retries
            task.partial_kwargs["retry_delay"] = dt.timedelta(seconds=0)
        else:
            task.retries = 0
    return dag.test(logical_date=LOGICAL_DATE, run_conf={**CONF, **(conf or {})})


def asset_events(dag_run) -> list[dict]:
    """The extras of the ``voipstudio_recordings`` asset events ``dag_run`` emitted."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        events = session.scalars(
            select(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(
                AssetModel.name == "voipstudio_recordings",
                AssetEvent.source_dag_id == dag_run.dag_id,
                AssetEvent.source_run_id == dag_run.run_id,
            )
        ).all()
        return [dict(event.extra or {}) for event in events]


def assert_window_archived(env) -> int:
    """Every MP3 of the window is in the bucket, whole, with matching metadata and sidecar."""
    s3 = env.s3()
    expected = expected_keys(env.sandbox, env.prefix)
    assert expected, "the window holds no recordings: choose a wider look-back"
    stored = set(env.keys("recordings/")) | set(env.keys("voicemail/"))
    assert stored == expected
    monitors = {r["id"]: r for r in records_in_window(env.sandbox, "monitors")}
    for key in sorted(k for k in expected if k.endswith(".mp3")):
        obj = s3.get_object(Bucket=env.bucket, Key=key)
        body = obj["Body"].read()
        digest = hashlib.sha256(body).hexdigest()
        assert obj["Metadata"]["sha256"] == digest
        assert obj["ContentType"] == "audio/mpeg"
        record_id = int(key.rsplit("/", 1)[1].split(".")[0])
        if key.split("/")[1] == "recordings":
            assert len(body) == monitors[record_id]["size"]
        sidecar_body = s3.get_object(Bucket=env.bucket, Key=key[:-3] + "json")["Body"].read()
        sidecar = json.loads(sidecar_body)
        assert (sidecar["id"], sidecar["sha256"], sidecar["size"]) == (record_id, digest, len(body))
        assert sidecar["archived_at"]
    assert not s3.list_multipart_uploads(Bucket=env.bucket).get("Uploads")
    return len(expected) // 2


def test_archives_the_window_then_a_rerun_downloads_nothing(airflow_env, capfd, caplog):
    dag_run = run_archive()
    assert dag_run.state == "success"
    count = assert_window_archived(airflow_env)
    assert len(mp3_gets(airflow_env.sandbox)) == count

    summary = xcom(dag_run, "summarize_archive", "summary")
    assert (summary["records"], summary["archived"], summary["failed"]) == (count, count, 0)
    assert summary["bucket"] == airflow_env.bucket and summary["batches"] > 2
    labels = sorted(
        ti.rendered_map_index
        for ti in dag_run.get_task_instances()
        if ti.task_id == "archive_recording_batch"
    )
    assert len(labels) == summary["batches"]
    assert all(label.split()[0] in ("monitors", "voicemessages") for label in labels)
    assert all("–" in label for label in labels)
    (event,) = asset_events(dag_run)
    assert (event["archived"], event["bucket"]) == (count, airflow_env.bucket)

    airflow_env.sandbox.control("DELETE", "requests")
    again = run_archive()
    assert again.state == "success"
    assert mp3_gets(airflow_env.sandbox) == []
    summary = xcom(again, "summarize_archive", "summary")
    assert (summary["archived"], summary["skipped"]) == (0, count)
    assert_window_archived(airflow_env)

    out, err = capfd.readouterr()
    out += caplog.text  # task logs reach stdout or the logging capture
    assert f"{count} skipped (already verified)" in out + err
    assert airflow_env.sandbox.token not in out + err


def test_faults_on_a_fifth_of_requests_still_archive_everything(airflow_env, capfd, caplog):
    kinds = ["429", "500", "502", "503", "drop", "truncate"]
    rules = [
        {"path": path, "methods": ["GET"], "kind": kind, "rate": 0.2 / len(kinds), "retry_after": 1}
        for path in ("/v1.1/voipstudio/monitors*", "/v1.1/voipstudio/voicemessages*")
        for kind in kinds
    ]
    airflow_env.sandbox.control("PUT", "faults", {"seed": 11, "rules": rules})
    dag_run = run_archive()
    faults = airflow_env.sandbox.control("GET", "faults")
    airflow_env.sandbox.control("DELETE", "faults")

    assert sum(rule.get("hits", 0) for rule in faults["rules"]) > 0
    assert dag_run.state == "success"
    assert_window_archived(airflow_env)
    out, err = capfd.readouterr()
    out += caplog.text  # task logs reach stdout or the logging capture
    assert airflow_env.sandbox.token not in out + err


def test_one_failing_recording_fails_the_run_and_a_rerun_fetches_only_it(
    airflow_env, capfd, caplog
):
    monitor = records_in_window(airflow_env.sandbox, "monitors")[0]
    bad_path = f"/v1.1/voipstudio/monitors/{monitor['id']}.mp3"
    airflow_env.sandbox.control(
        "PUT", "faults", {"seed": 1, "rules": [{"path": bad_path, "kind": "500", "rate": 1}]}
    )
    failed = run_archive()
    assert failed.state == "failed"
    summary = xcom(failed, "summarize_archive", "summary")
    assert summary["failed"] == 1
    assert summary["kinds"]["monitors"]["failed_ids"] == [monitor["id"]]
    assert asset_events(failed) == []  # an incomplete window emits no asset event
    # The failed batch is named in the grid from its mapped argument, like the others.
    failed_names = [
        ti.rendered_map_index
        for ti in failed.get_task_instances()
        if ti.task_id == "archive_recording_batch" and ti.state == "failed"
    ]
    assert len(failed_names) == 1
    kind_name, id_range = failed_names[0].split(" ")
    first_id, last_id = (int(i) for i in id_range.split("–"))
    assert kind_name == "monitors" and first_id <= monitor["id"] <= last_id
    kind = ARCHIVE_KINDS["monitors"]
    bad_key = archive_key(airflow_env.prefix, kind, monitor)
    assert bad_key not in airflow_env.keys("recordings/")
    assert (
        len(airflow_env.keys("recordings/")) + len(airflow_env.keys("voicemail/"))
        == len(expected_keys(airflow_env.sandbox, airflow_env.prefix)) - 2
    )
    out, err = capfd.readouterr()
    out += caplog.text  # task logs reach stdout or the logging capture
    assert f"monitors failed (ids [{monitor['id']}])" in out + err
    assert airflow_env.sandbox.token not in out + err

    airflow_env.sandbox.control("DELETE", "faults")
    airflow_env.sandbox.control("DELETE", "requests")
    repaired = run_archive()
    assert repaired.state == "success"
    assert len(asset_events(repaired)) == 1
    assert mp3_gets(airflow_env.sandbox) == [bad_path]
    assert_window_archived(airflow_env)


def test_a_batch_retry_fetches_only_what_failed(airflow_env):
    monitor = records_in_window(airflow_env.sandbox, "monitors")[0]
    bad_path = f"/v1.1/voipstudio/monitors/{monitor['id']}.mp3"
    # More broken answers than the hook tries per request: the batch's first try fails.
    rule = {"path": bad_path, "kind": "503", "rate": 1, "times": 5}
    airflow_env.sandbox.control("PUT", "faults", {"seed": 1, "rules": [rule]})
    dag_run = run_archive(batch_retries=1)
    airflow_env.sandbox.control("DELETE", "faults")

    assert dag_run.state == "success"
    gets = mp3_gets(airflow_env.sandbox)
    assert gets.count(bad_path) == 6  # five broken answers, then the retry's good one
    assert len(gets) == len(set(gets)) + 5  # every other MP3 was fetched exactly once
    assert_window_archived(airflow_env)


def test_a_large_window_gets_larger_batches_not_more_than_the_limit(airflow_env):
    from voipstudio_provider.engine.archive.batches import plan_batches
    from voipstudio_provider.hooks.voipstudio import VoIPstudioHook

    monitors = [r["id"] for r in records_in_window(airflow_env.sandbox, "monitors")]
    batches = plan_batches(VoIPstudioHook(), ["monitors"], SINCE, LOGICAL_DATE, 1, max_batches=4)
    assert 1 < len(batches) <= 4
    assert sum(b["count"] for b in batches) == len(monitors)
    assert batches[0]["first_id"] == min(monitors) and batches[-1]["last_id"] == max(monitors)
    for before, after in zip(batches, batches[1:], strict=False):
        assert before["last_id"] < after["first_id"]


def test_an_empty_window_succeeds_with_nothing_to_do(airflow_env):
    before_history = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)  # the sandbox holds 180 days
    dag = load_dag(DAG_ID)
    dag_run = dag.test(logical_date=before_history, run_conf={"lookback_hours": 0})
    assert dag_run.state == "success"
    summary = xcom(dag_run, "summarize_archive", "summary")
    assert (summary["batches"], summary["records"], summary["failed"]) == (0, 0, 0)
    assert airflow_env.keys() == []
