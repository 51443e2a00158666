"""A fresh deployment: retention triggered before anyone wrote a policy deletes nothing."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

from voipstudio_provider.engine.evidence.audit import read_audit

from tests.dags.conftest import DAGS_FOLDER, REPO
from tests.dags.test_retention import archive_old, today, truth

RESOURCES = ("monitors", "voicemessages", "chatmsgs")


def test_retention_on_a_fresh_airflow_home_without_a_policy_deletes_nothing(airflow_env, tmp_path):
    env = airflow_env
    # Archived voicemail past the built-in 90 days: a policy-less run would have deleted it.
    archived = archive_old(env, "voicemessages", today() - dt.timedelta(days=91))
    assert archived
    before = {res: truth(env.sandbox, res) for res in RESOURCES}
    home = tmp_path / "airflow-home"
    home.mkdir()
    process_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_VAR_", "AIRFLOW__"))
    }
    process_env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS_FOLDER),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW_VAR_VOIPSTUDIO_S3_BUCKET=env.bucket,
        AIRFLOW_VAR_VOIPSTUDIO_S3_PREFIX=env.prefix,
        PYTHONPATH=os.pathsep.join(str(REPO / p) for p in ("plugins", "include", ".")),
    )
    airflow = str(Path(sys.executable).parent / "airflow")

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(argv, env=process_env, capture_output=True, text=True, timeout=900)

    assert run(airflow, "db", "migrate").returncode == 0
    assert run(airflow, "pools", "set", "voipstudio_api", "4", "VoIPstudio API").returncode == 0
    # The first trigger from the UI: no conf, so dry_run is its default, false.
    done = run(sys.executable, "-m", "voipstudio_demo.run_dag", "voipstudio_retention",
               today().isoformat(), "{}")  # fmt: skip

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert {res: truth(env.sandbox, res) for res in RESOURCES} == before
    output = done.stdout + done.stderr
    assert "voipstudio_retention_policy is not set: this run is a dry run" in output
    audits = [k for k in env.keys("audit/voipstudio_retention/") if k.endswith(".jsonl")]
    assert len(audits) == 1
    lines = read_audit(env.s3(), env.bucket, audits[0])
    would = {x["id"] for x in lines if x["action"] == "would_delete"}
    assert {x["action"] for x in lines} <= {"would_delete", "skipped"}
    assert {v["id"] for v in archived} <= would
