"""Named archive batches and the Archive page under a real scheduler.

A distributed Airflow of its own (PostgreSQL, Redis, API server, scheduler, DAG processor,
triggerer, two Celery workers), with providers discovered eagerly so that the provider's
Archive page is on the API server, driven only through the REST API:

- an archive batch whose recording answers 500 fails and waits for its retry under the
  name its ``map_index_template`` renders, and its finished try keeps that name in
  ``GET .../taskInstances/archive_recording_batch/{i}/tries``;
- a purge waiting for its approval (Airflow's human-in-the-loop ``approve_purge``) is on
  the Archive page with a link to its Required Action. The DAG folder holds the archive DAG
  and a compliance purge that is its approval step only, with the same DAG and task ids.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import textwrap
import time
import uuid

import pytest
from airflow_cluster import REPO, running_cluster
from voipstudio_provider.engine.layout import parse_api_datetime

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

ARCHIVE_DAG = "voipstudio_archive_recordings"
PURGE_DAG = "voipstudio_compliance_purge"
BATCH_TASK = "archive_recording_batch"
PREFIX = "voipstudio-named"
APPROVAL_DAG = '''
"""The compliance purge's approval step, as the purge DAG declares it."""
import datetime as dt

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import dag


@dag(dag_id="voipstudio_compliance_purge", schedule=None,
     start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), catchup=False)
def voipstudio_compliance_purge():
    ApprovalOperator(
        task_id="approve_purge",
        subject="Purge 3 monitors older than 2026-01-01",
        response_timeout=dt.timedelta(hours=72),
    )


voipstudio_compliance_purge()
'''


@pytest.fixture(scope="module")
def dags_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dags")
    shutil.copy(REPO / "dags" / f"{ARCHIVE_DAG}.py", folder)
    (folder / f"{PURGE_DAG}.py").write_text(textwrap.dedent(APPROVAL_DAG))
    return folder


@pytest.fixture(scope="module")
def archive_bucket(seaweed) -> str:
    name = f"voipstudio-named-{uuid.uuid4().hex[:8]}"
    seaweed.client().create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="module")
def airflow_cluster(tmp_path_factory, sandbox_server, seaweed, archive_bucket, dags_folder):
    extra_env = {
        "AIRFLOW_VAR_VOIPSTUDIO_S3_PREFIX": PREFIX,
        # Airflow loads a provider's plugins only when it discovers providers eagerly.
        "AIRFLOW__CORE__LAZY_DISCOVER_PROVIDERS": "False",
    }
    with running_cluster(
        tmp_path_factory, sandbox_server, seaweed, archive_bucket, extra_env,
        dags_folder=dags_folder,
    ) as cluster:  # fmt: skip
        yield cluster


def wait_until(check, what: str, timeout: float = 600, every: float = 3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"{what}: not after {timeout}s")


def history_names(cluster, run_id: str, map_index: int) -> list[tuple[int, str | None]]:
    """``(try_number, rendered_map_index)`` of a batch's finished tries, from the metadata
    database itself."""
    dsn = cluster.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    sql = (
        "SELECT try_number, rendered_map_index FROM task_instance_history "
        f"WHERE dag_id = '{ARCHIVE_DAG}' AND task_id = '{BATCH_TASK}' "
        f"AND run_id = '{run_id}' AND map_index = {int(map_index)} ORDER BY try_number"
    )
    answer = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", dsn.rsplit("/", 1)[1], "-At",
         "-F", "\t", "-c", sql],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    rows = [line.split("\t") for line in answer.stdout.splitlines() if line]
    return [(int(number), name or None) for number, name in rows]


def batch_instances(cluster, run_id: str) -> list[dict]:
    path = f"/api/v2/dags/{ARCHIVE_DAG}/dagRuns/{run_id}/taskInstances?limit=1000"
    return [t for t in cluster.api("GET", path)["task_instances"] if t["task_id"] == BATCH_TASK]


def test_a_failed_batch_waits_for_its_retry_under_its_name(airflow_cluster, sandbox_server):
    sandbox_server.control("POST", "reset")
    until = dt.datetime.now(dt.UTC).replace(microsecond=0)
    since = until - dt.timedelta(days=30)
    monitors = sandbox_server.control("GET", "records/monitors")["data"]
    in_window = [m for m in monitors if since <= parse_api_datetime(m["timestamp"]) < until]
    assert in_window, "the seed has no recording in the window"
    monitor = in_window[0]
    path = f"/v1.1/voipstudio/monitors/{monitor['id']}.mp3"
    sandbox_server.control(
        "PUT", "faults", {"seed": 1, "rules": [{"path": path, "kind": "500", "rate": 1}]}
    )
    airflow_cluster.wait_for_dags({ARCHIVE_DAG})
    run_id = airflow_cluster.trigger(
        ARCHIVE_DAG,
        {
            "logical_date": until.isoformat(),
            "data_interval_start": since.isoformat(),
            "data_interval_end": until.isoformat(),
            "conf": {"lookback_hours": 0, "batch_size": 8, "max_streams": 2},
        },
    )

    def waiting_batch():
        return [t for t in batch_instances(airflow_cluster, run_id) if t["state"] == "up_for_retry"]

    (waiting,) = wait_until(waiting_batch, "a batch waiting for its retry")
    name = waiting["rendered_map_index"]
    kind, ids = name.split(" ")
    first_id, last_id = (int(i) for i in ids.split("–"))
    assert kind == "monitors" and first_id <= monitor["id"] <= last_id, name
    index = waiting["map_index"]
    tries = airflow_cluster.api(
        "GET",
        f"/api/v2/dags/{ARCHIVE_DAG}/dagRuns/{run_id}/taskInstances/{BATCH_TASK}/{index}/tries",
    )["task_instances"]
    assert any(t["try_number"] == 1 and t["end_date"] for t in tries), tries
    # Airflow 3.3's /tries answer has no field for the name; the try it lists is the row of
    # task_instance_history, whose name the grid shows for that try.
    assert history_names(airflow_cluster, run_id, index) == [(1, name)]
    finished = [t for t in batch_instances(airflow_cluster, run_id) if t["end_date"]]
    assert all(t["rendered_map_index"] not in (None, str(t["map_index"])) for t in finished)

    # The recording answers again: the retry archives it under the same name.
    sandbox_server.control("DELETE", "faults")
    run = airflow_cluster.wait_for_run(ARCHIVE_DAG, run_id, timeout=900)
    assert run["state"] == "success"
    (retried,) = [t for t in run["task_instances"] if t["map_index"] == index
                  and t["task_id"] == BATCH_TASK]  # fmt: skip
    assert (retried["try_number"], retried["rendered_map_index"]) == (2, name)
    assert history_names(airflow_cluster, run_id, index) == [(1, name)]


def test_a_purge_waiting_for_approval_is_on_the_archive_page(airflow_cluster):
    airflow_cluster.wait_for_dags({PURGE_DAG})
    run_id = airflow_cluster.trigger(PURGE_DAG, {"logical_date": None, "conf": {}})

    def waiting():
        answer = airflow_cluster.api("GET", "/voipstudio-archive/overview")
        return [w for w in answer["approvals"].get("waiting", []) if w["run_id"] == run_id]

    (request,) = wait_until(waiting, "the purge's approval on the Archive page")
    assert request["subject"] == "Purge 3 monitors older than 2026-01-01"
    run_path = f"/dags/{PURGE_DAG}/runs/{run_id.replace(':', '%3A').replace('+', '%2B')}"
    assert request["link"] == f"{run_path}/tasks/approve_purge/required_actions"
    # What the link leads to is the request Airflow itself shows as a Required Action.
    actions = airflow_cluster.api("GET", f"/api/v2/dags/{PURGE_DAG}/dagRuns/{run_id}/hitlDetails")[
        "hitl_details"
    ]
    assert [a["task_instance"]["task_id"] for a in actions] == ["approve_purge"]
    assert actions[0]["response_received"] is False
