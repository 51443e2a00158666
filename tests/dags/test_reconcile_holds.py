"""``voipstudio_reconcile`` locks the archived copies of held records in an Object-Lock
bucket, lifts them when the hold goes, and fails loudly where holds cannot be enforced."""

from __future__ import annotations

import uuid

import pytest
from voipstudio_provider.engine.subjects.subject_index import SubjectIndex

from tests.dags.test_archive_recordings import run_archive, xcom
from tests.dags.test_reconcile import run_reconcile, states
from tests.dags.test_runs_without_logical_date import task_logs

pytestmark = pytest.mark.slow


def flags(env, keys: list[str]) -> set[str]:
    s3 = env.s3()
    found = set()
    for key in keys:
        for version in s3.list_object_versions(Bucket=env.bucket, Prefix=key).get("Versions", []):
            if version["Key"] == key:
                head = s3.head_object(Bucket=env.bucket, Key=key, VersionId=version["VersionId"])
                found.add(head.get("ObjectLockLegalHoldStatus", "OFF"))
    return found


def test_reconcile_locks_held_copies_and_lifts_them(airflow_env):
    env = airflow_env
    env.bucket = f"locked-{uuid.uuid4().hex[:12]}"
    env.s3().create_bucket(Bucket=env.bucket, ObjectLockEnabledForBucket=True)
    env.set_variable("voipstudio_s3_bucket", env.bucket)
    assert run_archive().state == "success"
    index = SubjectIndex.read(env.s3(), env.bucket, env.prefix)
    held_line = next(line for line in index.lines.values() if line["numbers"])
    number = held_line["numbers"][0]["number"]
    held = [
        line for line in index.lines.values() if any(n["number"] == number for n in line["numbers"])
    ]
    free = [line for line in index.lines.values() if line not in held]
    held_keys = [k for line in held for k in line["keys"]]
    env.set_variable("voipstudio_legal_hold", {"numbers": [number]})
    env.monkeypatch.setenv("AIRFLOW_CONN_AWS_LEGAL_HOLD", env.seaweed.airflow_conn_uri())

    locked = run_reconcile({"resources": ["monitors", "voicemessages"]})

    assert states(locked)["sync_legal_holds"] == "success"
    assert states(locked)["check_holds"] == "success"
    assert states(locked)["erase_due_copies"] == "success"
    report = xcom(locked, "sync_legal_holds")
    assert report["set_on"] == len(held_keys) and report["drift"] == []
    assert flags(env, held_keys) == {"ON"}
    assert flags(env, [k for line in free for k in line["keys"]]) <= {"OFF"}

    env.set_variable("voipstudio_legal_hold", {})
    lifted = run_reconcile({"resources": ["monitors", "voicemessages"]})
    assert xcom(lifted, "sync_legal_holds")["set_off"] == len(held_keys)
    assert flags(env, held_keys) == {"OFF"}


def test_holds_in_a_bucket_without_object_lock_fail_the_run(airflow_env, capfd, caplog):
    env = airflow_env
    assert run_archive().state == "success"
    env.set_variable("voipstudio_legal_hold", {"ids": {"monitors": [1]}})

    unset = run_reconcile({"resources": ["monitors"]})
    assert states(unset)["sync_legal_holds"] == "failed"
    assert "connection 'aws_legal_hold' is not defined" in task_logs(capfd, caplog)

    env.monkeypatch.setenv("AIRFLOW_CONN_AWS_LEGAL_HOLD", env.seaweed.airflow_conn_uri())
    run = run_reconcile({"resources": ["monitors"]})

    assert states(run)["sync_legal_holds"] == "success"
    assert states(run)["check_holds"] == "failed"
    assert xcom(run, "sync_legal_holds")["findings"][0].startswith(
        "holds cannot be enforced in this bucket"
    )
