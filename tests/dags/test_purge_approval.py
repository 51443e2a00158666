"""Who may approve a purge, and what the approver reads: answered through Airflow's API."""

from __future__ import annotations

import datetime as dt

from voipstudio_provider.engine.evidence.audit import read_audit
from voipstudio_provider.engine.layout import audit_key, plan_key

from tests.dags.approvals import DAG_TEST_USER, TimeoutSweep
from tests.dags.test_purge import DAG_ID, approved_purge, audit_lines, read_plan, state, xcom
from tests.dags.test_purge import desk as desk  # noqa: F401 (fixture)
from tests.dags.test_purge_numbers import add
from tests.dags.test_purge_operator import run_note, task_states
from tests.dags.test_retention import run_dag as run_dag  # noqa: F401 (fixture, no retries)
from tests.dags.test_retention import today, truth

NUMBER = "+44 20 7946 0321"
OLDER = (today() - dt.timedelta(days=150)).date().isoformat()
CONF = {"older_than": OLDER, "require_archive": False, "resources": ["monitors"]}


def writes(sandbox) -> list[dict]:
    """The API requests that changed something."""
    log = sandbox.control("GET", "requests")["data"]
    return [r for r in log if r["method"] in ("DELETE", "PATCH", "POST", "PUT")]


def test_the_request_shows_the_plan_it_asks_about(airflow_env, run_dag, desk):
    env = airflow_env
    sandbox = env.sandbox
    env.set_variable("voipstudio_default_region", "GB")
    callers = ("442079460321", "020 7946 0321", "sip:442079460321@sip.example.com")
    monitors = [add(sandbox, "monitors", caller=v, called="101") for v in callers]
    voicemail = add(sandbox, "voicemessages", caller="442079460321", callerid="", dialled="101")
    chat = truth(sandbox, "chats")[0]
    add(sandbox, "chatmsgs", chat_id=chat["id"], message="call me | on 020 7946 0321 *now*")
    env.set_variable("voipstudio_legal_hold", {"ids": {"monitors": [monitors[1]]}})

    dag_run = approved_purge(
        run_dag, desk, {"phone_number": NUMBER, "require_archive": False},
        steps=[("bob", ["Reject"])],
    )  # fmt: skip

    assert dag_run.state == "success"
    plan = read_plan(env, dag_run)
    counts = {r: plan["resources"][r]["count"] for r in ("monitors", "voicemessages", "chatmsgs")}
    assert counts["monitors"] == 2 and counts["voicemessages"] == 1 and counts["chatmsgs"] > 1
    request = desk.requests[0]
    assert request["subject"] == (
        f"Purge 2 recordings, 1 voicemail and {counts['chatmsgs']} chat messages of {NUMBER}?"
    )
    assert request["options"] == ["Approve", "Reject"] and not request["defaults"]
    body = request["body"]
    summary = xcom(dag_run, "plan_purge")
    key = plan_key(env.prefix, DAG_ID, dag_run.run_id)
    assert f"`s3://{env.bucket}/{key}`" in body
    assert f"SHA-256: `{summary['plan_sha256']}`" in body
    assert f"`s3://{env.bucket}/{summary['plan_csv_key']}`" in body
    assert f"**Asked by** `{DAG_TEST_USER}` at " in body and f"run `{dag_run.run_id}`" in body
    asked = dag_run.run_after.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    assert f" at {asked}," in body
    expires = body.split("**Expires** ", 1)[1][:20]
    expected = dag_run.run_after + dt.timedelta(hours=72)
    assert abs(dt.datetime.strptime(expires, "%Y-%m-%d %H:%M UTC").replace(tzinfo=dt.UTC)
               - expected) < dt.timedelta(minutes=10)  # fmt: skip
    assert f"- phone number: {NUMBER} (+442079460321)" in body
    assert "| monitors | 2 | 1 |" in body and "| voicemessages | 1 | 0 |" in body
    assert f"| monitors | {monitors[1]} | legal\\_hold\\_id |" in body  # held, and why
    assert "### Held, kept (1)" in body
    # The first rows: resource, id, date, the text that matched (escaped, shown as it is).
    assert f"| monitors | {monitors[0]} | " in body and "| 442079460321 |" in body
    assert f"| voicemessages | {voicemail} | " in body
    assert "call me \\| on 020 7946 0321 \\*now\\*" not in body  # not a matched number text
    assert "| 020 7946 0321 |" in body
    total = sum(counts.values())
    shown = min(total, 10)
    assert f"### First rows of the plan ({shown} of {total})" in body


def test_a_rejected_purge_deletes_nothing_and_says_who_rejected(airflow_env, run_dag, desk):
    env = airflow_env
    before = state(env.sandbox)
    env.sandbox.control("DELETE", "requests")

    dag_run = approved_purge(run_dag, desk, CONF, steps=[("bob", ["Reject"])])

    assert dag_run.state == "success"
    assert [(a.user, a.status) for a in desk.answers] == [("bob", 200)]
    assert state(env.sandbox) == before and writes(env.sandbox) == []
    states = task_states(dag_run)
    assert states[("approve_purge", -1)] == "success"
    assert {s for (t, _), s in states.items() if t == "purge_planned_records"} == {"skipped"}
    assert states[("mask_matching_cdrs", -1)] == "skipped"
    assert audit_lines(env, dag_run) == []
    assert run_note(dag_run).startswith("REJECTED by bob: nothing was deleted; plan ")


def test_the_asker_approving_their_own_purge_deletes_nothing(airflow_env, run_dag, desk, capfd):
    env = airflow_env
    before = state(env.sandbox)
    env.sandbox.control("DELETE", "requests")

    dag_run = approved_purge(run_dag, desk, CONF, steps=[(DAG_TEST_USER, ["Approve"])])

    assert dag_run.state == "failed"
    # No list of approvers: Airflow takes the answer; the purge refuses it.
    assert [(a.user, a.status) for a in desk.answers] == [(DAG_TEST_USER, 200)]
    assert state(env.sandbox) == before and writes(env.sandbox) == []
    states = task_states(dag_run)
    assert states[("approve_purge", -1)] == "failed"
    assert states[("mask_matching_cdrs", -1)] == "upstream_failed"
    assert audit_lines(env, dag_run) == []
    assert run_note(dag_run).startswith(
        f"REFUSED: self-approval refused: {DAG_TEST_USER} asked for this purge and cannot "
        "approve it too; nothing was deleted."
    )
    out, err = capfd.readouterr()
    assert "self-approval refused" in out + err


def test_listed_approvers_without_the_asker_are_the_only_ones_who_may_answer(
    airflow_env, run_dag, desk
):
    env = airflow_env
    env.set_variable("voipstudio_purge_approvers", {"users": [DAG_TEST_USER, "bob"]})
    before = state(env.sandbox)
    steps = [(DAG_TEST_USER, ["Approve"]), ("carol", ["Approve"]), ("bob", ["Approve"])]

    dag_run = approved_purge(run_dag, desk, CONF, steps=steps)

    assert dag_run.state == "success"
    assert desk.requests[0]["assigned_users"] == [{"id": "bob", "name": "bob"}]
    assert [(a.user, a.status) for a in desk.answers] == [
        (DAG_TEST_USER, 403), ("carol", 403), ("bob", 200)
    ]  # fmt: skip
    planned = set(read_plan(env, dag_run)["resources"]["monitors"]["ids"])
    after = {m["id"] for m in truth(env.sandbox, "monitors")}
    assert planned and planned == {m["id"] for m in before["monitors"]} - after
    lines = audit_lines(env, dag_run)
    assert {x["approved_by"]["name"] for x in lines} == {"bob"}
    deleted = sum(x["action"] == "deleted" for x in lines)
    assert run_note(dag_run) == f"PURGED: {deleted} deleted, 0 kept; approved by bob"


def test_a_self_approval_the_variable_allows_deletes_and_says_so(airflow_env, run_dag, desk):
    env = airflow_env
    approvers = {"users": [DAG_TEST_USER], "allow_self_approval": True}
    env.set_variable("voipstudio_purge_approvers", approvers)

    dag_run = approved_purge(run_dag, desk, CONF, steps=[(DAG_TEST_USER, ["Approve"])])

    assert dag_run.state == "success"
    lines = audit_lines(env, dag_run)
    assert lines and all(x["self_approved"] is True for x in lines)
    assert all(x["approved_by"]["name"] == x["requested_by"] == DAG_TEST_USER for x in lines)
    assert run_note(dag_run).endswith(
        f"approved by {DAG_TEST_USER} (self-approved, as voipstudio_purge_approvers allows)"
    )


def test_an_asker_who_is_the_only_listed_approver_is_refused_at_once(airflow_env, run_dag):
    env = airflow_env
    env.set_variable("voipstudio_purge_approvers", {"users": [DAG_TEST_USER]})
    before = state(env.sandbox)

    dag_run = run_dag(DAG_ID, logical_date=today(), conf={**CONF, "dry_run": False})

    assert dag_run.state == "failed"
    assert state(env.sandbox) == before
    assert task_states(dag_run)[("approve_purge", -1)] == "failed"


def test_an_unanswered_request_expires_and_deletes_nothing(airflow_env, run_dag):
    env = airflow_env
    before = state(env.sandbox)
    env.sandbox.control("DELETE", "requests")

    with TimeoutSweep():  # the scheduler's sweep, which dag.test() does not run
        dag_run = run_dag(
            DAG_ID, logical_date=today(), conf={**CONF, "dry_run": False, "approval_hours": 0.001}
        )

    assert dag_run.state == "failed"
    assert state(env.sandbox) == before and writes(env.sandbox) == []
    assert task_states(dag_run)[("approve_purge", -1)] == "failed"
    assert run_note(dag_run) == (
        "EXPIRED: nobody answered the approval request within 0.001 h: nothing was deleted"
    )
    key = audit_key(env.prefix, DAG_ID, dag_run.run_id)
    assert read_audit(env.s3(), env.bucket, key) == []
