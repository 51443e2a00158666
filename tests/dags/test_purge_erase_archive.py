"""A purge with ``erase_archive``: one approved run deletes at the source, then erases the
archived copies of exactly the records gone from it, judged from the bucket."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from voipstudio_provider.engine.archive.ledger import read_day
from voipstudio_provider.engine.archive.targets import ArchiveTarget
from voipstudio_provider.engine.deletion.erasure import ERASED
from voipstudio_provider.engine.evidence.manifests import manifest_index, read_lines, write_day
from voipstudio_provider.engine.layout import (
    ARCHIVE_KINDS,
    archive_key,
    erasure_audit_key,
    sidecar_key,
)

from tests.dags.test_archive_recordings import run_archive
from tests.dags.test_erase_archived_copies import stored
from tests.dags.test_purge import approved_purge, read_plan
from tests.dags.test_purge import desk as desk  # noqa: F401 (fixture)
from tests.dags.test_purge_approval import writes
from tests.dags.test_purge_numbers import add, by_id
from tests.dags.test_purge_operator import run_note, task_states
from tests.dags.test_retention import run_dag as run_dag  # noqa: F401 (fixture, no retries)

pytestmark = pytest.mark.slow

NUMBER = "+44 20 7946 0321"
SAME = "442079460321"
LOOK_ALIKE = "12079460321"  # the same last ten digits, another subscriber
CONF = {"phone_number": NUMBER, "resources": ["monitors"], "erase_archive": True}


def keys_of(env, record_id: int) -> list[str]:
    record = by_id(env.sandbox, "monitors").get(record_id)
    assert record is not None, record_id
    kind = ARCHIVE_KINDS["monitors"]
    return [archive_key(env.prefix, kind, record), sidecar_key(env.prefix, kind, record)]


def every_archived_version(env) -> dict[str, int]:
    """Versions per key of the archived recordings and sidecars."""
    s3 = env.s3()
    found: dict[str, int] = {}
    paginator = s3.get_paginator("list_object_versions")
    for page in paginator.paginate(Bucket=env.bucket, Prefix=f"{env.prefix}/recordings/"):
        for version in page.get("Versions", []):
            found[version["Key"]] = found.get(version["Key"], 0) + 1
    return found


@pytest.fixture
def archived(airflow_env):
    """An Object-Lock bucket holding this subscriber's recordings, a look-alike's, a held
    one, one whose archived bytes no longer match, and one the source deleted earlier;
    today's manifest written; the erasure role's connection defined."""
    env = airflow_env
    env.bucket = f"locked-{uuid.uuid4().hex[:12]}"
    env.s3().create_bucket(Bucket=env.bucket, ObjectLockEnabledForBucket=True)
    env.set_variable("voipstudio_s3_bucket", env.bucket)
    env.set_variable("voipstudio_default_region", "GB")
    sandbox = env.sandbox
    ids = {
        name: add(sandbox, "monitors", caller=caller, called="101")
        for name, caller in (
            ("gone", SAME), ("gone_too", SAME), ("held", SAME), ("tampered", SAME),
            ("earlier", SAME), ("look_alike", LOOK_ALIKE),
        )
    }  # fmt: skip
    assert run_archive().state == "success"
    env.keys_of = {name: keys_of(env, record_id) for name, record_id in ids.items()}
    # Bytes that no longer match their sidecar: the purge keeps that record at the source.
    env.s3().put_object(Bucket=env.bucket, Key=env.keys_of["tampered"][0], Body=b"not it")
    # Deleted at the source before the purge: only its archived copies are left.
    from voipstudio_provider.hooks.voipstudio import VoIPstudioHook

    VoIPstudioHook().delete_records("monitors", [ids["earlier"]])
    target = ArchiveTarget(bucket=env.bucket, prefix=env.prefix)
    day = dt.datetime.now(dt.UTC).date()
    lines, _, _ = read_day(env.s3(), env.bucket, env.prefix, day)
    index = manifest_index(env.s3(), env.bucket, env.prefix)
    write_day(env.s3(), target, day, lines.values(), index)
    env.set_variable("voipstudio_legal_hold", {"ids": {"monitors": [ids["held"]]}})
    env.monkeypatch.setenv("AIRFLOW_CONN_AWS_ERASURE", env.seaweed.airflow_conn_uri())
    env.day = day
    return env, ids


def test_an_approved_purge_erases_the_archived_copies_of_what_left_the_source(
    archived, run_dag, desk
):
    env, ids = archived
    before = every_archived_version(env)

    dag_run = approved_purge(run_dag, desk, CONF)

    assert dag_run.state == "success"
    assert task_states(dag_run)[("erase_archived_copies", -1)] == "success"
    plan = read_plan(env, dag_run)
    assert plan["criteria"]["erase_archive"] is True
    assert "and erase their archived copies?" in desk.requests[0]["subject"]
    assert "- erase archived copies: yes" in desk.requests[0]["body"]
    at_source = set(by_id(env.sandbox, "monitors"))
    assert ids["gone"] not in at_source and ids["gone_too"] not in at_source
    assert {ids["held"], ids["tampered"], ids["look_alike"]} <= at_source

    erased_names = ("gone", "gone_too", "earlier")
    erased_keys = [k for name in erased_names for k in env.keys_of[name]]
    assert set(stored(env, erased_keys).values()) == {0}  # no version left behind
    after = every_archived_version(env)
    assert after == {k: n for k, n in before.items() if k not in erased_keys}
    assert after[env.keys_of["tampered"][0]] == 2  # both versions stay with the record
    for name in ("held", "look_alike", "tampered"):
        assert all(after.get(k) for k in env.keys_of[name]), name

    audit = env.s3().get_object(
        Bucket=env.bucket, Key=erasure_audit_key(env.prefix, dag_run.run_id)
    )["Body"].read().decode()  # fmt: skip
    lines = [json.loads(line) for line in audit.splitlines() if line]
    assert sorted(x["key"] for x in lines if x["action"] == ERASED) == sorted(erased_keys)
    assert {x["purge_run"] for x in lines} == {dag_run.run_id}
    kept = [x for x in lines if x["action"] != ERASED]
    assert kept == []

    versions = manifest_index(env.s3(), env.bucket, env.prefix)[env.day]
    assert len(versions) == 2  # the day's manifest got a new version
    latest = read_lines(env.s3(), env.bucket, versions[-1][1].replace(".json", ".jsonl"))
    tombs = {k for k, line in latest.items() if line.get("tombstone")}
    assert tombs == set(erased_keys) & set(latest) and tombs
    assert all(latest[k]["tombstone"]["purge_run"] == dag_run.run_id for k in tombs)

    assert run_note(dag_run).endswith(
        f"approved by bob; {len(erased_keys)} archived copies erased, 0 kept"
    )


def test_a_purge_without_erase_archive_leaves_every_archived_copy(archived, run_dag, desk):
    env, ids = archived
    before = every_archived_version(env)

    dag_run = approved_purge(run_dag, desk, {**CONF, "erase_archive": False})

    assert dag_run.state == "success"
    assert task_states(dag_run)[("erase_archived_copies", -1)] == "skipped"
    assert ids["gone"] not in by_id(env.sandbox, "monitors")  # the purge itself ran
    assert every_archived_version(env) == before
    assert env.keys("audit/erasure/") == []
    assert "archived copies" not in run_note(dag_run)
    assert "- erase archived copies: no" in desk.requests[0]["body"]


def test_a_rejected_purge_erases_nothing(archived, run_dag, desk):
    env, _ = archived
    before = every_archived_version(env)
    env.sandbox.control("DELETE", "requests")

    dag_run = approved_purge(run_dag, desk, CONF, steps=[("bob", ["Reject"])])

    assert dag_run.state == "success"
    assert task_states(dag_run)[("erase_archived_copies", -1)] == "skipped"
    assert writes(env.sandbox) == []
    assert every_archived_version(env) == before
    assert env.keys("audit/erasure/") == []
    assert run_note(dag_run).startswith("REJECTED by bob")


def test_without_the_erasure_connection_the_run_fails_and_nothing_is_erased(
    archived, run_dag, desk, capfd
):
    env, ids = archived
    env.monkeypatch.delenv("AIRFLOW_CONN_AWS_ERASURE")
    before = every_archived_version(env)

    dag_run = approved_purge(run_dag, desk, CONF)

    assert dag_run.state == "failed"
    states = task_states(dag_run)
    assert states[("erase_archived_copies", -1)] == "failed"
    assert states[("fail_if_a_task_failed", -1)] == "failed"
    assert ids["gone"] not in by_id(env.sandbox, "monitors")  # the source purge ran
    assert every_archived_version(env) == before
    assert env.keys("audit/erasure/") == []
    out, err = capfd.readouterr()
    assert "connection 'aws_erasure' is not defined" in out + err
    assert run_note(dag_run).endswith(
        "; archived copies not erased (see erase_archived_copies's log)"
    )


def test_the_form_offers_erase_archive_off_by_default(airflow_env):
    from tests.dags.conftest import load_dag

    dag = load_dag("voipstudio_compliance_purge")
    param = dag.params.get_param("erase_archive")
    assert param.schema["type"] == "boolean" and dag.params["erase_archive"] is False
    assert param.schema["title"] == "Erase archive" and "aws_erasure" in param.description
    task = dag.get_task("erase_archived_copies")
    assert task.trigger_rule == "none_failed_min_one_success"
    assert {"purge_planned_records", "mask_matching_cdrs"} <= task.upstream_task_ids
