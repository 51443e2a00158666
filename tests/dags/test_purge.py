"""The compliance purge DAG, run by Airflow against the sandbox and SeaweedFS."""

from __future__ import annotations

import collections
import datetime as dt
import json

import pytest
from airflow.sdk.exceptions import AirflowFailException
from voipstudio_provider.engine.audit import read_audit
from voipstudio_provider.engine.layout import ARCHIVE_KINDS, archive_key, audit_key, plan_key
from voipstudio_provider.engine.policy import normalize_number
from voipstudio_provider.engine.purge import PURGE_RESOURCES, plan_counts
from voipstudio_provider.tasks.purge import check_confirmation

from tests.dags.conftest import load_dag
from tests.dags.test_retention import archive_old, assert_token_nowhere, older_than, today, truth
from tests.dags.test_retention import run_dag as run_dag  # noqa: F401 (fixture, no retries)

DAG_ID = "voipstudio_compliance_purge"
PURGED = ("monitors", "voicemessages", "chatmsgs")


def state(sandbox) -> dict[str, list[dict]]:
    return {res: truth(sandbox, res) for res in (*PURGED, "cdrs")}


def read_plan(env, dag_run) -> dict:
    key = plan_key(env.prefix, DAG_ID, dag_run.run_id)
    return json.loads(env.s3().get_object(Bucket=env.bucket, Key=key)["Body"].read())


def audit_lines(env, dag_run) -> list[dict]:
    return read_audit(env.s3(), env.bucket, audit_key(env.prefix, DAG_ID, dag_run.run_id))


def reviewed_purge(run_dag, conf: dict, between=None):
    """A dry run of ``conf``, then (after ``between()``) the confirmed run of its plan."""
    dry = run_dag(DAG_ID, logical_date=today(), conf={**conf, "dry_run": True})
    assert dry.state == "success"
    if between is not None:
        between()
    confirmed = {**conf, "dry_run": False, "confirm": "PURGE", "plan_run_id": dry.run_id}
    return dry, run_dag(DAG_ID, logical_date=today() + dt.timedelta(seconds=1), conf=confirmed)


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
    # Nullable: the UI form refuses to trigger while a plain string field is empty.
    assert schema["confirm"]["type"] == ["null", "string"] and dag.params["confirm"] is None
    assert schema["resources"]["examples"] == list(PURGE_RESOURCES)  # a multi-select
    assert dag.max_active_runs == 1
    assert schema["max_deletions"]["type"] == "integer" and dag.params["max_deletions"] == 10000
    assert schema["max_deletions"]["minimum"] == 1 and schema["max_deletions"]["title"]
    assert schema["plan_run_id"]["type"] == ["null", "string"] and dag.params["plan_run_id"] is None
    # The archive location comes from the Variables only.
    assert "bucket" not in schema and "prefix" not in schema


@pytest.mark.parametrize(
    ("conf", "expected_state"),
    [
        ({"dry_run": True, "confirm": "PURGE"}, "success"),
        ({"dry_run": False, "confirm": "purge"}, "failed"),
        ({"dry_run": False, "confirm": "PURGE "}, "failed"),
        ({"dry_run": False}, "failed"),
    ],
)
def test_nothing_deleted_without_exact_confirmation(airflow_env, run_dag, conf, expected_state):
    env = airflow_env
    older = (today() - dt.timedelta(days=150)).date().isoformat()
    before = state(env.sandbox)

    dag_run = run_dag(DAG_ID, logical_date=today(), conf={"older_than": older, **conf})

    assert dag_run.state == expected_state
    assert state(env.sandbox) == before
    plan = read_plan(env, dag_run)
    cutoff = dt.datetime.fromisoformat(older).replace(tzinfo=dt.UTC)
    for resource in PURGED:
        assert sorted(plan["resources"][resource]["ids"]) == sorted(
            r["id"] for r in older_than(before[resource], resource, cutoff)
        )
    assert plan["resources"]["monitors"]["count"] > 0
    lines = audit_lines(env, dag_run)
    assert {x["action"] for x in lines} <= {"would_delete", "skipped"}
    if expected_state == "failed":
        assert lines == []


def test_confirmed_purge_deletes_exactly_its_plan(airflow_env, run_dag, capfd):
    env = airflow_env
    older = today() - dt.timedelta(days=150)
    archive_old(env, "monitors", older)
    archive_old(env, "voicemessages", older)
    before = state(env.sandbox)

    dry, dag_run = reviewed_purge(run_dag, {"older_than": older.date().isoformat()})

    assert dag_run.state == "success"
    after = state(env.sandbox)
    plan = read_plan(env, dag_run)
    reviewed = read_plan(env, dry)
    assert plan["reviewed"]["run_id"] == dry.run_id
    for resource in PURGED:
        assert plan["resources"][resource]["ids"] == reviewed["resources"][resource]["ids"]
    lines = audit_lines(env, dag_run)
    for resource in PURGED:
        deleted = {r["id"] for r in before[resource]} - {r["id"] for r in after[resource]}
        assert deleted == set(plan["resources"][resource]["ids"]), resource
        assert deleted == {
            x["id"] for x in lines if x["resource"] == resource and x["action"] == "deleted"
        }
    assert after["cdrs"] == before["cdrs"]
    assert plan["resources"]["chatmsgs"]["count"] > 0
    assert all(x["archive_key"] for x in lines)
    assert_token_nowhere(env, capfd)


def _number_with_voicemail(sandbox) -> str:
    voicemessage = truth(sandbox, "voicemessages")[0]
    return voicemessage["caller"]


def _spaced(number: str) -> str:
    return f"+{number[:2]} {number[2:5]} {number[5:]}"


@pytest.mark.parametrize("mask_cdrs", [True, False])
def test_phone_number_purge_finds_every_kind(airflow_env, run_dag, mask_cdrs, capfd):
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

    _, dag_run = reviewed_purge(
        run_dag,
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


def test_held_number_is_not_purged(airflow_env, run_dag):
    env = airflow_env
    number = _number_with_voicemail(env.sandbox)
    env.set_variable("voipstudio_legal_hold", {"numbers": [_spaced(number)]})
    before = state(env.sandbox)

    _, dag_run = reviewed_purge(
        run_dag, {"phone_number": number, "require_archive": False, "mask_cdrs": True}
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


def test_plan_larger_than_max_deletions_fails_before_deleting(airflow_env, run_dag, capfd):
    env = airflow_env
    older = (today() - dt.timedelta(days=150)).date().isoformat()
    before = state(env.sandbox)
    conf = {"older_than": older, "require_archive": False, "dry_run": True, "max_deletions": 2}

    dag_run = run_dag(DAG_ID, logical_date=today(), conf=conf)

    assert dag_run.state == "failed"
    assert state(env.sandbox) == before
    plan = read_plan(env, dag_run)  # written all the same, for a person to read
    planned = sum(plan["resources"][r]["count"] for r in PURGED)
    assert planned > 2 and plan["criteria"]["max_deletions"] == 2
    assert audit_lines(env, dag_run) == []
    out, err = capfd.readouterr()
    assert f"trigger again with max_deletions raised to at least {planned}" in out + err

    summary = {"plan_key": "k", "counts": plan_counts(plan)}
    conf = {**conf, "dry_run": False, "confirm": "PURGE", "plan_run_id": dag_run.run_id}
    with pytest.raises(AirflowFailException, match="max_deletions"):
        check_confirmation({**conf, "max_deletions": planned - 1}, summary)
    assert check_confirmation({**conf, "max_deletions": planned}, summary) == list(PURGED)


def test_unverified_archive_is_kept_when_the_archive_is_required(airflow_env, run_dag):
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

    _, dag_run = reviewed_purge(
        run_dag, {"resources": ["monitors"], "older_than": older.date().isoformat()}
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
        assert note.upstream_task_ids == work


def test_confirmed_purge_executes_the_reviewed_plan_after_the_source_changed(airflow_env, run_dag):
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

    def source_changes() -> None:
        plan = read_plan(env, dry)
        planned = plan["resources"]["monitors"]["ids"]
        assert len(planned) >= 3
        # New calls of the number arrive, one planned recording is deleted by someone
        # else, and one goes on hold.
        arrived.extend(
            sandbox.control("POST", "records/monitors", {"count": 2, "fields": {"caller": number}})[
                "ids"
            ]
        )
        deleted_elsewhere.append(planned[0])
        from voipstudio_provider.hooks.voipstudio import VoIPstudioHook

        VoIPstudioHook().delete_records("monitors", [planned[0]])
        held.append(planned[1])
        env.set_variable("voipstudio_legal_hold", {"ids": {"monitors": [planned[1]]}})

    dry = None

    def run(dag_id, logical_date=None, conf=None):
        nonlocal dry
        dag_run = run_dag(dag_id, logical_date=logical_date, conf=conf)
        dry = dry or dag_run
        return dag_run

    dry, confirmed = reviewed_purge(run, conf, between=source_changes)

    assert confirmed.state == "success"
    plan = read_plan(env, dry)
    planned = {r: set(plan["resources"][r]["ids"]) for r in ("monitors", "voicemessages")}
    after = {r: {x["id"] for x in truth(sandbox, r)} for r in planned}
    assert set(arrived) <= after["monitors"]  # not planned: not purged
    assert set(held) <= after["monitors"]
    assert not (planned["monitors"] - set(held)) & after["monitors"]
    assert not planned["voicemessages"] & after["voicemessages"]
    lines = {(x["resource"], x["id"]): x for x in audit_lines(env, confirmed)}
    assert {i for r, i in lines if r == "monitors"} == planned["monitors"]
    assert lines[("monitors", deleted_elsewhere[0])]["reason"] == "gone"
    assert lines[("monitors", held[0])]["reason"] == "legal_hold_id"
    deleted = {i for (r, i), x in lines.items() if r == "monitors" and x["action"] == "deleted"}
    assert deleted == planned["monitors"] - set(held) - set(deleted_elsewhere)


def test_a_confirmed_purge_without_a_reviewed_plan_fails_before_any_request(airflow_env, run_dag):
    env = airflow_env
    older = (today() - dt.timedelta(days=150)).date().isoformat()
    before = state(env.sandbox)
    env.sandbox.control("DELETE", "requests")

    dag_run = run_dag(
        DAG_ID, logical_date=today(), conf={"older_than": older, "dry_run": False,
                                            "confirm": "PURGE"},
    )  # fmt: skip

    assert dag_run.state == "failed"
    assert env.sandbox.control("GET", "requests")["data"] == []
    assert state(env.sandbox) == before


def test_a_reviewed_plan_is_refused_when_changed_old_or_for_other_criteria(airflow_env, run_dag):
    from voipstudio_provider.engine.archive import ArchiveTarget
    from voipstudio_provider.engine.plans import load_reviewed_plan
    from voipstudio_provider.engine.purge import parse_purge_request

    env = airflow_env
    older = (today() - dt.timedelta(days=150)).date().isoformat()
    dry = run_dag(DAG_ID, logical_date=today(), conf={"older_than": older, "dry_run": True})
    assert dry.state == "success"
    confirmed = {"older_than": older, "dry_run": False, "confirm": "PURGE",
                 "plan_run_id": dry.run_id}  # fmt: skip
    s3, target = env.s3(), ArchiveTarget(bucket=env.bucket, prefix=env.prefix)
    request = parse_purge_request(confirmed)
    assert load_reviewed_plan(s3, target, DAG_ID, request)["run_id"] == dry.run_id

    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=73)
    with pytest.raises(PermissionError, match="h old, more than 72 h"):
        load_reviewed_plan(s3, target, DAG_ID, request, now=later)
    other = parse_purge_request({**confirmed, "older_than": today().date().isoformat()})
    with pytest.raises(PermissionError, match="other older_than"):
        load_reviewed_plan(s3, target, DAG_ID, other)
    with pytest.raises(PermissionError, match="digest is not the one"):
        load_reviewed_plan(s3, target, DAG_ID, request, reviewed_sha256="0" * 64)
    key = plan_key(env.prefix, DAG_ID, dry.run_id)
    plan = json.loads(s3.get_object(Bucket=env.bucket, Key=key)["Body"].read())
    plan["resources"]["monitors"]["ids"].append(1)  # widened after the review
    head = s3.head_object(Bucket=env.bucket, Key=key)
    s3.put_object(Bucket=env.bucket, Key=key, Body=json.dumps(plan).encode(),
                  Metadata=head["Metadata"])  # fmt: skip
    with pytest.raises(PermissionError, match="changed after it was written"):
        load_reviewed_plan(s3, target, DAG_ID, request)
    before = state(env.sandbox)
    refused = run_dag(DAG_ID, logical_date=today() + dt.timedelta(seconds=1), conf=confirmed)
    assert refused.state == "failed"
    assert state(env.sandbox) == before
