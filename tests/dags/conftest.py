"""Run the project's DAGs in Airflow itself (``dag.test()``) against the sandbox and S3."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAGS_FOLDER = REPO / "dags"


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated SQLite metadata database in the test session's ``AIRFLOW_HOME``."""
    home = Path(os.environ["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, AIRFLOW__CORE__DAGS_FOLDER=str(DAGS_FOLDER))
    airflow = Path(sys.executable).parent / "airflow"
    subprocess.run([str(airflow), "db", "migrate"], env=env, check=True, capture_output=True)
    subprocess.run(
        [str(airflow), "pools", "set", "voipstudio_api", "4", "VoIPstudio API calls"],
        env=env,
        check=True,
        capture_output=True,
    )
    return home


@dataclass
class AirflowEnv:
    """What a DAG test arranged: the servers, the bucket and the prefix the DAGs use."""

    sandbox: object
    seaweed: object
    bucket: str
    prefix: str
    monkeypatch: pytest.MonkeyPatch

    def set_variable(self, name: str, value: object) -> None:
        """Set an Airflow Variable for this test (``AIRFLOW_VAR_*``)."""
        text = value if isinstance(value, str) else json.dumps(value)
        self.monkeypatch.setenv(f"AIRFLOW_VAR_{name.upper()}", text)

    def s3(self):
        return self.seaweed.client()

    def keys(self, below: str = "") -> list[str]:
        """Every key in the bucket below ``{prefix}/{below}``."""
        paginator = self.s3().get_paginator("list_objects_v2")
        keys: list[str] = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{self.prefix}/{below}"):
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
        return sorted(keys)


@pytest.fixture
def airflow_env(airflow_db, sandbox, seaweed, s3_bucket, monkeypatch) -> AirflowEnv:
    """Connections and Variables pointing the DAGs at the sandbox and a fresh bucket."""
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(DAGS_FOLDER))
    monkeypatch.setenv("AIRFLOW_CONN_VOIPSTUDIO_DEFAULT", sandbox.airflow_conn_json())
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", seaweed.airflow_conn_uri())
    monkeypatch.setenv("AIRFLOW_VAR_VOIPSTUDIO_S3_BUCKET", s3_bucket)
    monkeypatch.setenv("AIRFLOW_VAR_VOIPSTUDIO_S3_PREFIX", "voipstudio")
    return AirflowEnv(sandbox, seaweed, s3_bucket, "voipstudio", monkeypatch)


def load_dag(dag_id: str):
    """The DAG ``dag_id`` as Airflow parses it from ``dags/``, with no import errors."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag(dag_id)


@pytest.fixture
def run_dag(airflow_env):
    """Run a DAG once with ``dag.test()``; return the finished DagRun."""

    def run(dag_id: str, logical_date: dt.datetime | None = None, conf: dict | None = None):
        dag = load_dag(dag_id)
        return dag.test(logical_date=logical_date, run_conf=conf)

    return run
