"""The retention DAG settles what a dead run of either deleting DAG left, before deleting."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

from voipstudio_provider.engine.archive.writer import ArchiveTarget
from voipstudio_provider.engine.evidence.audit import audit_part, read_audit
from voipstudio_provider.engine.evidence.intents import DeleteIntents
from voipstudio_provider.engine.evidence.leases import leases_prefix
from voipstudio_provider.engine.layout import audit_key

from tests.dags.test_purge import DAG_ID, approved_purge
from tests.dags.test_purge import desk as desk  # noqa: F401 (fixture)

DEAD_DAG, DEAD_RUN = "voipstudio_compliance_purge", "manual__2026-11-19T09:00:00+00:00"


def a_pid_that_is_gone() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_the_first_thing_a_retention_run_does_is_settle_a_dead_purge(airflow_env, run_dag):
    env = airflow_env
    env.set_variable(
        "voipstudio_retention_policy", {"monitors": 120, "voicemessages": None, "chatmsgs": None}
    )
    s3 = env.s3()
    target = ArchiveTarget(bucket=env.bucket, prefix=env.prefix)
    monitors = env.sandbox.control("GET", "records/monitors")["data"]
    audited, gone, stays = (m["id"] for m in monitors[:3])
    # What a purge attempt left when it was killed: a part with one line, an intent whose
    # first id it had deleted, and its lease naming a process that is gone.
    with audit_part(s3, env.bucket, env.prefix, DEAD_DAG, DEAD_RUN, "monitors.try1") as part:
        part.add("monitors", audited, "deleted", "archive_verified", archive_key=f"k/{audited}")
    items = {i: {"reason": "archive_verified", "archive_key": f"k/{i}"} for i in (gone, stays)}
    DeleteIntents(s3, target, DEAD_DAG, DEAD_RUN, "monitors.try1").record("monitors", items)
    lease = {"host": socket.gethostname(), "pid": a_pid_that_is_gone(),
             "refreshed": "2026-12-07T00:00:00+00:00"}  # fmt: skip
    lease_key = f"{leases_prefix(env.prefix, DEAD_DAG, DEAD_RUN)}monitors.try1.json"
    s3.put_object(Bucket=env.bucket, Key=lease_key, Body=json.dumps(lease).encode())
    from voipstudio_provider.hooks.voipstudio import VoIPstudioHook

    VoIPstudioHook().delete_records("monitors", [audited, gone])

    dag_run = run_dag("voipstudio_retention")

    assert dag_run.state == "success"
    tis = {ti.task_id: ti for ti in dag_run.get_task_instances()}
    settle = tis["settle_earlier_runs"]
    deleting = [ti for ti in dag_run.get_task_instances() if ti.task_id == "delete_expired_records"]
    assert settle.state == "success"
    assert all(settle.end_date <= ti.start_date for ti in deleting if ti.start_date)
    dead_audit = audit_key(env.prefix, DEAD_DAG, DEAD_RUN)
    lines = {x["id"]: x for x in read_audit(s3, env.bucket, dead_audit)}
    assert set(lines) == {audited, gone, stays}
    assert "recovered_by" not in lines[audited]
    assert (lines[gone]["action"], lines[gone]["run_id"]) == ("deleted", DEAD_RUN)
    assert lines[gone]["recovered_by"] == f"voipstudio_retention/{dag_run.run_id}"
    assert (lines[stays]["action"], lines[stays]["reason"]) == ("failed", "delete_interrupted")
    assert stays in {m["id"] for m in env.sandbox.control("GET", "records/monitors")["data"]}
    assert env.keys(f"audit/{DEAD_DAG}/") == [dead_audit]  # no intent, part or lease left


DEAD_RETENTION_RUN = "scheduled__2026-11-19T04:00:00+00:00"


def test_an_approved_purge_settles_a_dead_retention_run_before_it_deletes(
    airflow_env, run_dag, desk
):
    env = airflow_env
    s3 = env.s3()
    target = ArchiveTarget(bucket=env.bucket, prefix=env.prefix)
    monitors = env.sandbox.control("GET", "records/monitors")["data"]
    gone, stays = (m["id"] for m in monitors[:2])
    # What a killed retention attempt left: an intent whose first id it had deleted, and
    # its lease naming a process that is gone.
    items = {i: {"reason": "archive_verified", "archive_key": f"k/{i}"} for i in (gone, stays)}
    dead_dag = "voipstudio_retention"
    DeleteIntents(s3, target, dead_dag, DEAD_RETENTION_RUN, "monitors.try1").record(
        "monitors", items
    )
    lease = {"host": socket.gethostname(), "pid": a_pid_that_is_gone(),
             "refreshed": "2026-12-07T00:00:00+00:00"}  # fmt: skip
    lease_key = f"{leases_prefix(env.prefix, dead_dag, DEAD_RETENTION_RUN)}monitors.try1.json"
    s3.put_object(Bucket=env.bucket, Key=lease_key, Body=json.dumps(lease).encode())
    from voipstudio_provider.hooks.voipstudio import VoIPstudioHook

    VoIPstudioHook().delete_records("monitors", [gone])

    # A purge whose plan is empty still settles before its (empty) deleting step.
    dag_run = approved_purge(run_dag, desk, {"older_than": "2001-01-01", "resources": ["monitors"]})

    assert dag_run.state == "success"

    dead_audit = audit_key(env.prefix, dead_dag, DEAD_RETENTION_RUN)
    lines = {x["id"]: x for x in read_audit(s3, env.bucket, dead_audit)}
    assert set(lines) == {gone, stays}
    assert lines[gone]["action"] == "deleted"
    assert lines[gone]["recovered_by"] == f"{DAG_ID}/{dag_run.run_id}"
    assert (lines[stays]["action"], lines[stays]["reason"]) == ("failed", "delete_interrupted")
    assert env.keys(f"audit/{dead_dag}/") == [dead_audit]  # no intent or lease left
