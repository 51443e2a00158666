"""The compliance purge DAG, run by Airflow against the sandbox and SeaweedFS."""

from __future__ import annotations

import collections
import datetime as dt
import json

import pytest
from voipstudio_provider.engine.deletion.purge import PURGE_RESOURCES, plan_counts
from voipstudio_provider.engine.evidence.audit import read_audit
from voipstudio_provider.engine.layout import ARCHIVE_KINDS, archive_key, audit_key, plan_key
from voipstudio_provider.engine.subjects.phone_numbers import normalize_number
from voipstudio_provider.tasks.purge import refusal

from tests.dags.approvals import DAG_TEST_USER, ApprovalDesk
from tests.dags.conftest import load_dag
from tests.dags.test_retention import archive_old, assert_token_nowhere, older_than, today, truth
from tests.dags.test_retention import run_dag as run_dag  # noqa: F401 (fixture, no retries)

DAG_ID = "voipstudio_compliance_purge"
PURGED = ("monitors", "voicemessages", "chatmsgs")
APPROVAL_FIELDS = ("requested_by", "approved_by", "approved_at", "plan_sha256")


def state(sandbox) -> dict[str, list[dict]]:
    return {res: truth(sandbox, res) for res in (*PURGED, "cdrs")}


def read_plan(env, dag_run) -> dict:
    key = plan_key(env.prefix, DAG_ID, dag_run.run_id)
    return json.loads(env.s3().get_object(Bucket=env.bucket, Key=key)["Body"].read())


def audit_lines(env, dag_run) -> list[dict]:
    return read_audit(env.s3(), env.bucket, audit_key(env.prefix, DAG_ID, dag_run.run_id))


@pytest.fixture
def desk(airflow_env, tmp_path) -> ApprovalDesk:
    """Airflow's API app on the test's metadata database, to answer as a person would."""
    return ApprovalDesk(airflow_env.monkeypatch, tmp_path)


def approved_purge(run_dag, desk, conf: dict, steps=(("bob", ["Approve"]),), between=None):
    """One run of ``conf`` (``dry_run`` off), its approval request answered from outside,
    step by step ``(user, options)``; ``between()`` runs after the plan, before the answer."""

    def answer_steps():
        if between is not None:
            between()
        return list(steps)

    desk.answer_when_asked(DAG_ID, answer_steps)
    dag_run = run_dag(DAG_ID, logical_date=today(), conf={**conf, "dry_run": False})
    desk.join()
    return dag_run


def test_form_is_a_json_schema(airflow_env):
    dag = load_dag(DAG_ID)
    schema = {name: dag.params.get_param(name).schema for name in dag.params}
    assert type(dag.timetable).__name__ == "NullTimetable"  # never scheduled
    assert schema["resources"]["type"] == "array"
    assert schema["resources"]["items"]["enum"] == list(PURGE_RESOURCES)
    assert schema["older_than"]["format"] == "date"
    assert "string" in schema["older_than"]["type"] and "string" in schema["phone_number"]["type"]
    assert schema["dry_run"]["type"] == "boolean" and dag.params["dry_run"] is True
    assert schema["require_archive"]["type"] == "boolean" and dag.params["require_archive"] is True
    assert schema["mask_cdrs"]["type"] == "boolean" and dag.params["mask_cdrs"] is False
    assert schema["resources"]["examples"] == list(PURGE_RESOURCES)  # a multi-select
    assert dag.max_active_runs == 1
    assert schema["max_deletions"]["type"] == "integer" and dag.params["max_deletions"] == 10000
    assert schema["max_deletions"]["minimum"] == 1 and schema["max_deletions"]["title"]
    assert schema["approval_hours"]["type"] == "number" and dag.params["approval_hours"] == 72
    assert schema["approval_hours"]["exclusiveMinimum"] == 0
    # One way to purge, the approved one: no typed confirmation, no second run.
    assert "confirm" not in schema and "plan_run_id" not in schema
    # The archive location comes from the Variables only.
    assert "bucket" not in schema and "prefix" not in schema
    approval = dag.get_task("approve_purge")
    assert approval.options == ["Approve", "Reject"] and approval.defaults is None
    assert approval.retries == 0


def test_a_dry_run_writes_the_plan_and_asks_nothing(airflow_env, run_dag):
    env = airflow_env
    older = (today() - dt.timedelta(days=150)).date().isoformat()
    before = state(env.sandbox)
    env.sandbox.control("DELETE", "requests")

    dag_run = run_dag(DAG_ID, logical_date=today(), conf={"older_than": older})

    assert dag_run.state == "success"
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert states["approve_purge"] == "skipped"
    assert states["purge_planned_records"] == "skipped"
    assert state(env.sandbox) == before
    requests = env.sandbox.control("GET", "requests")["data"]
    assert requests and all(r["method"] == "GET" for r in requests)
    plan = read_plan(env, dag_run)
    cutoff = dt.datetime.fromisoformat(older).replace(tzinfo=dt.UTC)
    for resource in PURGED:
        assert sorted(plan["resources"][resource]["ids"]) == sorted(
            r["id"] for r in older_than(before[resource], resource, cutoff)
        )
    assert plan["resources"]["monitors"]["count"] > 0
    assert audit_lines(env, dag_run) == []


def test_an_approved_purge_deletes_exactly_its_plan_and_names_both_people(
    airflow_env, run_dag, desk, capfd
):
    env = airflow_env
    older = today() - dt.timedelta(days=150)
    archive_old(env, "monitors", older)
    archive_old(env, "voicemessages", older)
    before = state(env.sandbox)
    env.sandbox.control("DELETE", "requests")

    dag_run = approved_purge(run_dag, desk, {"older_than": older.date().isoformat()})

    assert dag_run.state == "success"
    assert [(a.user, a.status) for a in desk.answers] == [("bob", 200)]
    after = state(env.sandbox)
    plan = read_plan(env, dag_run)
    lines = audit_lines(env, dag_run)
    deletes = [r for r in env.sandbox.control("GET", "requests")["data"] if r["method"] == "DELETE"]
    asked = set()
    for request in deletes:
        resource, ids = request["path"].rsplit("/", 2)[-2:]
        asked |= {(resource, int(i)) for i in ids.split(",")}
    planned = {(r, i) for r in PURGED for i in plan["resources"][r]["ids"]}
    assert asked == planned and planned
    for resource in PURGED:
        deleted = {r["id"] for r in before[resource]} - {r["id"] for r in after[resource]}
        assert deleted == set(plan["resources"][resource]["ids"]), resource
        assert deleted == {
            x["id"] for x in lines if x["resource"] == resource and x["action"] == "deleted"
        }
    assert after["cdrs"] == before["cdrs"]
    assert plan["resources"]["chatmsgs"]["count"] > 0
    assert all(x["archive_key"] for x in lines)
    # Every line names who asked and who approved which plan.
    digest = xcom(dag_run, "plan_purge")["plan_sha256"]
    answered_at = desk.answers[0].body["responded_at"]
    for line in lines:
        assert line["requested_by"] == DAG_TEST_USER
        assert line["approved_by"] == {"id": "bob", "name": "bob"}
        assert line["approved_at"][:19] == answered_at[:19]
        assert line["plan_sha256"] == digest
        assert "self_approved" not in line
    copy_key = plan_key(env.prefix, DAG_ID, dag_run.run_id).replace(".json", ".approved.json")
    copy = json.loads(env.s3().get_object(Bucket=env.bucket, Key=copy_key)["Body"].read())
    assert copy["resources"] == plan["resources"]
    assert copy["approval"]["approved_by"] == {"id": "bob", "name": "bob"}
    assert copy["approval"]["requested_by"] == DAG_TEST_USER
    assert copy["approval"]["plan_sha256"] == digest
    assert_token_nowhere(env, capfd)


def xcom(dag_run, task_id: str, key: str = "return_value"):
    ti = next(ti for ti in dag_run.get_task_instances() if ti.task_id == task_id)
    return ti.xcom_pull(task_ids=task_id, key=key)


def _number_with_voicemail(sandbox) -> str:
    voicemessage = truth(sandbox, "voicemessages")[0]
    return voicemessage["caller"]


def _spaced(number: str) -> str:
    return f"+{number[:2]} {number[2:5]} {number[5:]}"


@pytest.mark.parametrize("mask_cdrs", [True, False])
def test_phone_number_purge_finds_every_kind(airflow_env, run_dag, desk, mask_cdrs, capfd):
    env = airflow_env
    sandbox = env.sandbox
    number = _number_with_voicemail(sandbox)
    # A recording of a new call from that number, and a chat where the visitor left it.
    monitor_ids = sandbox.control(
        "POST", "records/monitors", {"count": 1, "fields": {"caller": number}}
    )["ids"]
    chat = truth(sandbox, "chats")[2]
    sandbox.control(
        "POST",
        "records/chatmsgs",
        {"count": 1, "fields": {"chat_id": chat["id"], "message": f"call me on {_spaced(number)}"}},
    )
    before = state(sandbox)

    dag_run = approved_purge(
        run_dag,
        desk,
        {"phone_number": _spaced(number), "require_archive": False, "mask_cdrs": mask_cdrs},
    )

    assert dag_run.state == "success"
    after = state(sandbox)

    def involves(record: dict, fields) -> bool:
        return any(normalize_number(record.get(f)) == normalize_number(number) for f in fields)

    wanted_monitors = {m["id"] for m in before["monitors"] if involves(m, ("caller", "called"))}
    wanted_vm = {
        v["id"] for v in before["voicemessages"] if involves(v, ("caller", "callerid", "dialled"))
    }
    wanted_msgs = {m["id"] for m in before["chatmsgs"] if m["chat_id"] == chat["id"]}
    assert set(monitor_ids) <= wanted_monitors and wanted_vm and len(wanted_msgs) > 1
    for resource, wanted in (
        ("monitors", wanted_monitors),
        ("voicemessages", wanted_vm),
        ("chatmsgs", wanted_msgs),
    ):
        deleted = {r["id"] for r in before[resource]} - {r["id"] for r in after[resource]}
        assert deleted == wanted, resource
    matching_cdrs = [c for c in before["cdrs"] if involves(c, ("src", "dst", "clid"))]
    assert matching_cdrs
    cdrs_after = {c["id"]: c for c in after["cdrs"]}
    if mask_cdrs:
        for cdr in matching_cdrs:
            assert not involves(cdrs_after[cdr["id"]], ("src", "dst", "clid"))
            assert number not in json.dumps(cdrs_after[cdr["id"]])
        others = [c for c in before["cdrs"] if c not in matching_cdrs]
        assert all(cdrs_after[c["id"]] == c for c in others)
    else:
        assert after["cdrs"] == before["cdrs"]
    assert_token_nowhere(env, capfd)


def test_held_number_is_not_purged(airflow_env, run_dag, desk):
    env = airflow_env
    number = _number_with_voicemail(env.sandbox)
    env.set_variable("voipstudio_legal_hold", {"numbers": [_spaced(number)]})
    before = state(env.sandbox)

    dag_run = approved_purge(
        run_dag, desk, {"phone_number": number, "require_archive": False, "mask_cdrs": True}
    )

    assert dag_run.state == "success"
    assert state(env.sandbox) == before
    plan = read_plan(env, dag_run)
    assert plan["resources"]["voicemessages"]["ids"] == []
    held = plan["resources"]["voicemessages"]["held"]
    assert held
    assert plan["cdrs_to_mask"]["held"] and plan["cdrs_to_mask"]["ids"] == []
    # Every held item of the plan has its audit line.
    lines = {(x["resource"], x["id"]): x for x in audit_lines(env, dag_run)}
    for record_id in held:
        line = lines[("voicemessages", record_id)]
        assert (line["action"], line["reason"]) == ("skipped", "legal_hold_number")
    assert all(x["approved_by"]["name"] == "bob" for x in lines.values())


def test_plan_larger_than_max_deletions_fails_before_anyone_is_asked(airflow_env, run_dag, capfd):
    env = airflow_env
    older = (today() - dt.timedelta(days=150)).date().isoformat()
    before = state(env.sandbox)
    conf = {"older_than": older, "require_archive": False, "dry_run": False, "max_deletions": 2}

    dag_run = run_dag(DAG_ID, logical_date=today(), conf=conf)

    assert dag_run.state == "failed"
    assert state(env.sandbox) == before
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert states["approve_purge"] == "upstream_failed"
    plan = read_plan(env, dag_run)  # written all the same, for a person to read
    planned = sum(plan["resources"][r]["count"] for r in PURGED)
    assert planned > 2 and plan["criteria"]["max_deletions"] == 2
    assert audit_lines(env, dag_run) == []
    out, err = capfd.readouterr()
    assert f"trigger again with max_deletions raised to at least {planned}" in out + err

    from voipstudio_provider.engine.deletion.purge import parse_purge_request

    summary = {"plan_key": "k", "counts": plan_counts(plan)}
    assert refusal(parse_purge_request({**conf, "max_deletions": planned - 1}), summary)
    assert refusal(parse_purge_request({**conf, "max_deletions": planned}), summary) is None


def test_unverified_archive_is_kept_when_the_archive_is_required(airflow_env, run_dag, desk):
    env = airflow_env
    older = today() - dt.timedelta(days=150)
    monitors = archive_old(env, "monitors", older)
    assert len(monitors) >= 4
    s3 = env.s3()
    kind = ARCHIVE_KINDS["monitors"]
    missing, altered = monitors[0], monitors[1]
    s3.delete_object(Bucket=env.bucket, Key=archive_key(env.prefix, kind, missing))
    key = archive_key(env.prefix, kind, altered)
    body = s3.get_object(Bucket=env.bucket, Key=key)["Body"].read()
    s3.put_object(Bucket=env.bucket, Key=key, Body=body[:-1], Metadata={"sha256": "0" * 64})
    before = state(env.sandbox)

    dag_run = approved_purge(
        run_dag, desk, {"resources": ["monitors"], "older_than": older.date().isoformat()}
    )

    assert dag_run.state == "success"
    plan = read_plan(env, dag_run)
    planned = set(plan["resources"]["monitors"]["ids"])
    assert {missing["id"], altered["id"]} <= planned
    after = {m["id"] for m in truth(env.sandbox, "monitors")}
    assert {missing["id"], altered["id"]} <= after
    deleted = {m["id"] for m in before["monitors"]} - after
    assert deleted == planned - {missing["id"], altered["id"]} and deleted
    lines = {x["id"]: x for x in audit_lines(env, dag_run)}
    for kept in (missing, altered):
        assert (lines[kept["id"]]["action"], lines[kept["id"]]["reason"]) == (
            "skipped",
            "archive_unverified",
        )
    assert lines[missing["id"]]["detail"] == "missing"
    for record_id in deleted:
        assert (lines[record_id]["action"], lines[record_id]["reason"]) == (
            "deleted",
            "archive_verified",
        )
    assert state(env.sandbox)["voicemessages"] == before["voicemessages"]


@pytest.mark.parametrize("dag_id", [DAG_ID, "voipstudio_retention"])
def test_a_failed_audit_log_or_task_fails_the_run(airflow_env, dag_id):
    dag = load_dag(dag_id)
    audit = dag.get_task("write_audit_log")
    assert audit.is_teardown and audit.on_failure_fail_dagrun
    # That teardown is then the only leaf; the watcher keeps any failed task failing the run.
    watcher = dag.get_task("fail_if_a_task_failed")
    assert watcher.trigger_rule == "one_failed" and not watcher.downstream_task_ids
    reports = {"write_audit_log", "fail_if_a_task_failed", "set_run_note"}
    work = {t.task_id for t in dag.tasks} - reports
    assert work == watcher.upstream_task_ids
    if dag_id == DAG_ID:  # the note is set whatever happened, and never hides a failure
        note = dag.get_task("set_run_note")
        assert note.trigger_rule == "all_done" and not note.downstream_task_ids
        # Not directly after the approval, whose Reject skips its direct downstream.
        assert note.upstream_task_ids == work - {"approve_purge"}
        assert "approve_purge" in dag.get_task("plan_purge").downstream_task_ids


def test_an_approved_purge_executes_its_plan_after_the_source_changed(airflow_env, run_dag, desk):
    env = airflow_env
    sandbox = env.sandbox
    callers = collections.Counter(m["caller"] for m in truth(sandbox, "monitors"))
    number = callers.most_common(1)[0][0]
    assert callers[number] >= 3
    conf = {"resources": ["monitors", "voicemessages"], "phone_number": number,
            "require_archive": False}  # fmt: skip
    arrived: list[int] = []
    deleted_elsewhere: list[int] = []
    held: list[int] = []
    plans: list[dict] = []

    def source_changes() -> None:
        """While the request waits: new calls, a planned recording deleted, one held."""
        key = plan_key(env.prefix, DAG_ID, desk.requests[0]["task_instance"]["dag_run_id"])
        plans.append(json.loads(env.s3().get_object(Bucket=env.bucket, Key=key)["Body"].read()))
        planned = plans[0]["resources"]["monitors"]["ids"]
        assert len(planned) >= 3
        calls = {"count": 2, "fields": {"caller": number}}
        new = sandbox.control("POST", "records/monitors", calls)
        arrived.extend(new["ids"])
        deleted_elsewhere.append(planned[0])
        from voipstudio_provider.hooks.voipstudio import VoIPstudioHook

        VoIPstudioHook().delete_records("monitors", [planned[0]])
        held.append(planned[1])
        env.set_variable("voipstudio_legal_hold", {"ids": {"monitors": [planned[1]]}})

    dag_run = approved_purge(run_dag, desk, conf, between=source_changes)

    assert dag_run.state == "success"
    plan = plans[0]
    planned = {r: set(plan["resources"][r]["ids"]) for r in ("monitors", "voicemessages")}
    after = {r: {x["id"] for x in truth(sandbox, r)} for r in planned}
    assert set(arrived) <= after["monitors"]  # not planned: not purged
    assert set(held) <= after["monitors"]
    assert not (planned["monitors"] - set(held)) & after["monitors"]
    assert not planned["voicemessages"] & after["voicemessages"]
    lines = {(x["resource"], x["id"]): x for x in audit_lines(env, dag_run)}
    assert {i for r, i in lines if r == "monitors"} == planned["monitors"]
    assert lines[("monitors", deleted_elsewhere[0])]["reason"] == "gone"
    assert lines[("monitors", held[0])]["reason"] == "legal_hold_id"
    deleted = {i for (r, i), x in lines.items() if r == "monitors" and x["action"] == "deleted"}
    assert deleted == planned["monitors"] - set(held) - set(deleted_elsewhere)


def test_a_plan_changed_after_the_request_was_asked_deletes_nothing(airflow_env, run_dag, desk):
    env = airflow_env
    older = (today() - dt.timedelta(days=150)).date().isoformat()
    before = state(env.sandbox)

    def widen_the_plan() -> None:
        """Rewrite the plan, and its sha256 metadata with it, while the request waits."""
        run_id = desk.requests[0]["task_instance"]["dag_run_id"]
        key = plan_key(env.prefix, DAG_ID, run_id)
        s3 = env.s3()
        plan = json.loads(s3.get_object(Bucket=env.bucket, Key=key)["Body"].read())
        plan["resources"]["monitors"]["ids"].append(before["monitors"][-1]["id"])
        body = json.dumps(plan).encode()
        import hashlib

        s3.put_object(Bucket=env.bucket, Key=key, Body=body,
                      Metadata={"sha256": hashlib.sha256(body).hexdigest()})  # fmt: skip
        env.sandbox.control("DELETE", "requests")

    dag_run = approved_purge(
        run_dag, desk, {"older_than": older, "require_archive": False}, between=widen_the_plan
    )

    assert dag_run.state == "failed"
    assert state(env.sandbox) == before
    log = env.sandbox.control("GET", "requests")["data"]
    assert [r for r in log if r["method"] != "GET"] == []
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert states["approve_purge"] == "failed"  # the approval could not record the plan
