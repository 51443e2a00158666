"""The retention DAG, run by Airflow against the sandbox and SeaweedFS."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from voipstudio_provider.engine.archive.writer import ArchiveTarget, archive_batch
from voipstudio_provider.engine.evidence.audit import read_audit
from voipstudio_provider.engine.layout import (
    ARCHIVE_KINDS,
    archive_key,
    audit_key,
    parse_api_datetime,
    sidecar_key,
)
from voipstudio_provider.engine.subjects.phone_numbers import normalize_number

DAG_ID = "voipstudio_retention"
DATE_FIELDS = {"monitors": "timestamp", "voicemessages": "origtime", "chatmsgs": "created_at"}
KEEP_DAYS = 120
POLICY = {"monitors": KEEP_DAYS, "voicemessages": KEEP_DAYS, "chatmsgs": KEEP_DAYS}


@pytest.fixture
def run_dag(airflow_env):
    """Run a DAG once with ``dag.test()``, tasks not retried (a test reports the first
    failure instead of waiting out retry delays)."""
    from tests.dags.conftest import load_dag

    def run(dag_id: str, logical_date: dt.datetime | None = None, conf: dict | None = None):
        dag = load_dag(dag_id)
        for task in dag.tasks:
            if hasattr(task, "partial_kwargs"):  # a mapped task
                task.partial_kwargs["retries"] = 0
            else:
                task.retries = 0
        return dag.test(logical_date=logical_date, run_conf=conf)

    return run


def today() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def truth(sandbox, resource: str) -> list[dict]:
    return sandbox.control("GET", f"records/{resource}")["data"]


def older_than(rows: list[dict], resource: str, moment: dt.datetime) -> list[dict]:
    field = DATE_FIELDS[resource]
    return [r for r in rows if parse_api_datetime(r[field]) < moment]


def archive_old(env, resource: str, before: dt.datetime) -> list[dict]:
    """Archive, as the archive DAG would, every record of ``resource`` dated before ``before``."""
    from voipstudio_provider.hooks.voipstudio import VoIPstudioHook

    rows = older_than(truth(env.sandbox, resource), resource, before)
    target = ArchiveTarget(bucket=env.bucket, prefix=env.prefix)
    outcomes = archive_batch(VoIPstudioHook(), env.s3(), ARCHIVE_KINDS[resource], rows, target)
    assert {o.status for o in outcomes} == {"archived"}, outcomes
    return rows


def run_cutoff(dag_run) -> dt.datetime:
    """The cutoff a run used: it counts back from the earlier of its end and now."""
    reference = min(dag_run.data_interval_end, dt.datetime.now(dt.UTC))
    return reference - dt.timedelta(days=KEEP_DAYS)


def audit_lines(env, dag_run) -> list[dict]:
    key = audit_key(env.prefix, DAG_ID, dag_run.run_id)
    return read_audit(env.s3(), env.bucket, key)


def assert_token_nowhere(env, capfd) -> None:
    """The token is in no task output (stdout and stderr) and in no audit object or plan."""
    token = env.sandbox.token
    out, err = capfd.readouterr()
    assert token not in out and token not in err
    s3 = env.s3()
    keys = env.keys("audit/")
    assert any(key.endswith(".jsonl") for key in keys), keys
    for key in keys:
        assert token.encode() not in s3.get_object(Bucket=env.bucket, Key=key)["Body"].read()


@pytest.fixture
def small_pages(airflow_env):
    """Pages of 7 rows, so the keyset walk crosses many pages while it deletes."""
    conn = json.loads(airflow_env.sandbox.airflow_conn_json())
    conn["extra"] = {"page_size": 7}
    airflow_env.monkeypatch.setenv("AIRFLOW_CONN_VOIPSTUDIO_DEFAULT", json.dumps(conn))
    return airflow_env


@pytest.fixture
def calls_arriving(small_pages, monkeypatch):
    """New calls (with recordings) arrive every 7 rows of every walk, i.e. about once a page."""
    from voipstudio_provider.hooks.voipstudio import VoIPstudioHook

    sandbox = small_pages.sandbox
    original = VoIPstudioHook.iter_records
    added: list[int] = []

    def iter_records(self, resource, **kwargs):
        for n, row in enumerate(original(self, resource, **kwargs)):
            if resource in ("monitors", "voicemessages") and n % 7 == 0 and len(added) < 40:
                answer = sandbox.control(
                    "POST", "records/cdrs", {"count": 1, "with_recording": True}
                )
                added.extend(answer["ids"])
            yield row

    monkeypatch.setattr(VoIPstudioHook, "iter_records", iter_records)
    return added


def test_retention_deletes_only_verified_unheld_records(
    small_pages, calls_arriving, run_dag, capfd
):
    env = small_pages
    env.set_variable("voipstudio_retention_policy", POLICY)
    # Archive a little more than the run will need: the cutoff is about KEEP_DAYS back.
    margin = today() - dt.timedelta(days=KEEP_DAYS - 3)
    monitors = archive_old(env, "monitors", margin)
    voicemessages = archive_old(env, "voicemessages", margin)
    assert len(monitors) >= 8 and len(voicemessages) >= 3
    s3 = env.s3()
    kind = ARCHIVE_KINDS["monitors"]

    # Spoil four archived copies, four different ways.
    missing, short, altered, sidecar_changed = monitors[0], monitors[1], monitors[2], monitors[3]
    s3.delete_object(Bucket=env.bucket, Key=archive_key(env.prefix, kind, missing))
    key = archive_key(env.prefix, kind, short)
    head = s3.head_object(Bucket=env.bucket, Key=key)
    s3.put_object(Bucket=env.bucket, Key=key, Body=b"ID3 short", Metadata=head["Metadata"])
    key = archive_key(env.prefix, kind, altered)
    body = s3.get_object(Bucket=env.bucket, Key=key)["Body"].read()
    s3.put_object(Bucket=env.bucket, Key=key, Body=body, Metadata={"sha256": "0" * 64})
    side = sidecar_key(env.prefix, kind, sidecar_changed)
    document = json.loads(s3.get_object(Bucket=env.bucket, Key=side)["Body"].read())
    document["sha256"] = "f" * 64
    s3.put_object(Bucket=env.bucket, Key=side, Body=json.dumps(document).encode())
    spoiled = {missing["id"], short["id"], altered["id"], sidecar_changed["id"]}

    # Hold one monitor and one voicemessage by id, and every call of one caller by number.
    held_number = monitors[5]["caller"]
    env.set_variable(
        "voipstudio_legal_hold",
        {
            "ids": {"monitors": [monitors[4]["id"]], "voicemessages": [voicemessages[0]["id"]]},
            "numbers": ["+" + held_number[:2] + " " + held_number[2:]],
        },
    )
    before = {res: truth(env.sandbox, res) for res in ("monitors", "voicemessages", "chatmsgs")}

    dag_run = run_dag(DAG_ID, logical_date=today())

    assert dag_run.state == "success"
    cutoff = run_cutoff(dag_run)
    lines = audit_lines(env, dag_run)
    by_resource = {res: [x for x in lines if x["resource"] == res] for res in before}

    number = normalize_number(held_number)
    on_hold_by_number = {
        m["id"]
        for m in before["monitors"]
        if number in (normalize_number(m["caller"]), normalize_number(m["called"]))
    }
    candidates = {m["id"] for m in older_than(before["monitors"], "monitors", cutoff)}
    expected_deleted = candidates - spoiled - on_hold_by_number - {monitors[4]["id"]}
    after = {m["id"] for m in truth(env.sandbox, "monitors")}

    # Deleted exactly what it should, nothing else; new calls arrived and were left alone.
    assert len(calls_arriving) > 0
    assert expected_deleted and not (expected_deleted & after)
    newest_before = max(m["id"] for m in before["monitors"])
    assert {i for i in after if i <= newest_before} == (
        {m["id"] for m in before["monitors"]} - expected_deleted
    )
    # One audit line per candidate, with the reason and the key checked.
    assert sorted(x["id"] for x in by_resource["monitors"]) == sorted(candidates)
    reasons = {x["id"]: (x["action"], x["reason"]) for x in by_resource["monitors"]}
    for record_id in spoiled:
        assert reasons[record_id] == ("skipped", "archive_unverified")
    assert reasons[monitors[4]["id"]] == ("skipped", "legal_hold_id")
    for record_id in on_hold_by_number & candidates:
        assert reasons[record_id] == ("skipped", "legal_hold_number")
    for record_id in expected_deleted:
        assert reasons[record_id] == ("deleted", "archive_verified")
    details = {x["id"]: x["detail"] for x in by_resource["monitors"]}
    assert details[missing["id"]] == "missing"
    assert details[short["id"]].startswith("size 9 != record size")
    assert details[altered["id"]] == "sha256 metadata differs from sidecar"
    assert details[sidecar_changed["id"]] == "sha256 metadata differs from sidecar"
    assert all(x["archive_key"] for x in lines)
    assert {x["archive_key"] for x in by_resource["monitors"] if x["id"] == missing["id"]} == {
        archive_key(env.prefix, kind, missing)
    }

    # Voicemail: the held one stays, the others past retention are gone.
    vm_candidates = {v["id"] for v in older_than(before["voicemessages"], "voicemessages", cutoff)}
    vm_after = {v["id"] for v in truth(env.sandbox, "voicemessages")}
    assert sorted(x["id"] for x in by_resource["voicemessages"]) == sorted(vm_candidates)
    assert voicemessages[0]["id"] in vm_after
    held_vm_numbers = {
        v["id"]
        for v in before["voicemessages"]
        if number in {normalize_number(v[f]) for f in ("caller", "callerid", "dialled")}
    }
    assert vm_after & vm_candidates == {voicemessages[0]["id"]} | (held_vm_numbers & vm_candidates)

    # Chat messages: archived with their chat first, then deleted.
    msg_candidates = older_than(before["chatmsgs"], "chatmsgs", cutoff)
    msg_after = {m["id"] for m in truth(env.sandbox, "chatmsgs")}
    assert msg_candidates and not ({m["id"] for m in msg_candidates} & msg_after)
    assert sorted(x["id"] for x in by_resource["chatmsgs"]) == sorted(
        m["id"] for m in msg_candidates
    )
    assert {x["reason"] for x in by_resource["chatmsgs"]} == {"archive_verified"}
    chat_keys = env.keys("chats/")
    archived_messages = {}
    for key in chat_keys:
        answer = s3.get_object(Bucket=env.bucket, Key=key)
        document = json.loads(answer["Body"].read())
        archived_messages.update({m["id"]: m for m in document["messages"]})
    for message in msg_candidates:
        assert archived_messages[message["id"]] == message

    assert_token_nowhere(env, capfd)


def test_dry_run_and_max_deletions(small_pages, run_dag):
    env = small_pages
    env.set_variable("voipstudio_retention_policy", {**POLICY, "chatmsgs": None})
    margin = today() - dt.timedelta(days=KEEP_DAYS - 3)
    archive_old(env, "monitors", margin)
    archive_old(env, "voicemessages", margin)
    before = {res: truth(env.sandbox, res) for res in ("monitors", "voicemessages")}

    dry = run_dag(DAG_ID, logical_date=today(), conf={"dry_run": True})

    assert dry.state == "success"
    assert {res: truth(env.sandbox, res) for res in before} == before
    lines = audit_lines(env, dry)
    candidates = {
        (res, r["id"]) for res in before for r in older_than(before[res], res, run_cutoff(dry))
    }
    assert {(x["resource"], x["id"]) for x in lines} == candidates
    assert {x["action"] for x in lines} == {"would_delete"}

    capped = run_dag(
        DAG_ID, logical_date=today() + dt.timedelta(seconds=1), conf={"max_deletions": 5}
    )

    # Each resource deletes 5, then stops with one line; the run asks for attention.
    assert capped.state == "failed"
    lines = audit_lines(env, capped)
    for resource in before:
        mine = [x for x in lines if x["resource"] == resource]
        assert [x["action"] for x in mine] == ["deleted"] * 5 + ["skipped"], resource
        assert mine[-1]["reason"] == "max_deletions"
        left = len(older_than(before[resource], resource, run_cutoff(capped))) - 5
        assert f"{left} {resource} from id {mine[-1]['id']} on were left" in mine[-1]["detail"]
    remaining = sum(len(truth(env.sandbox, res)) for res in before)
    assert remaining == sum(len(rows) for rows in before.values()) - 10


def test_policy_budgets_per_resource(airflow_env, run_dag):
    env = airflow_env
    env.set_variable(
        "voipstudio_retention_policy",
        {"monitors": KEEP_DAYS, "voicemessages": None, "chatmsgs": KEEP_DAYS,
         "max_deletions": {"monitors": 2}},
    )  # fmt: skip
    margin = today() - dt.timedelta(days=KEEP_DAYS - 3)
    archive_old(env, "monitors", margin)
    before = {res: truth(env.sandbox, res) for res in ("monitors", "chatmsgs")}

    dag_run = run_dag(DAG_ID, logical_date=today())

    assert dag_run.state == "failed"  # monitors' budget was spent
    lines = audit_lines(env, dag_run)
    monitors = [x for x in lines if x["resource"] == "monitors"]
    assert [x["action"] for x in monitors] == ["deleted", "deleted", "skipped"]
    # Recordings did not use up the chat messages' budget.
    messages = older_than(before["chatmsgs"], "chatmsgs", run_cutoff(dag_run))
    deleted = {x["id"] for x in lines if x["resource"] == "chatmsgs" and x["action"] == "deleted"}
    assert messages and deleted == {m["id"] for m in messages}


def test_no_policy_means_a_dry_run_that_says_why(airflow_env, run_dag, capfd):
    env = airflow_env  # no voipstudio_retention_policy Variable
    archive_old(env, "voicemessages", today() - dt.timedelta(days=80))  # built-in: 90 days
    before = {res: truth(env.sandbox, res) for res in ("monitors", "voicemessages", "chatmsgs")}

    # A run's bucket and prefix params are not read by a deleting DAG.
    dag_run = run_dag(DAG_ID, logical_date=today(), conf={"bucket": "elsewhere", "prefix": "x"})

    assert dag_run.state == "success"
    assert {res: truth(env.sandbox, res) for res in before} == before
    lines = audit_lines(env, dag_run)
    assert lines and {x["action"] for x in lines} <= {"would_delete", "skipped"}
    assert any(x["action"] == "would_delete" for x in lines)
    out, err = capfd.readouterr()
    assert "voipstudio_retention_policy is not set: this run is a dry run" in out + err


def test_cutoff_counts_back_from_now_when_the_run_ends_in_the_future(airflow_env, run_dag):
    env = airflow_env
    env.set_variable(
        "voipstudio_retention_policy", {"monitors": KEEP_DAYS, "voicemessages": None,
                                        "chatmsgs": None},
    )  # fmt: skip
    archive_old(env, "monitors", today())
    before = truth(env.sandbox, "monitors")
    started = dt.datetime.now(dt.UTC)

    dag_run = run_dag(DAG_ID, logical_date=today() + dt.timedelta(days=60))

    assert dag_run.state == "success"
    assert dag_run.data_interval_end > started + dt.timedelta(days=50)
    finished = dt.datetime.now(dt.UTC)
    deleted = {m["id"] for m in before} - {m["id"] for m in truth(env.sandbox, "monitors")}
    dated = {m["id"]: parse_api_datetime(m["timestamp"]) for m in before}
    limit = finished - dt.timedelta(days=KEEP_DAYS)
    assert deleted and all(dated[i] < limit for i in deleted)
    spared = [i for i, d in dated.items() if limit < d < limit + dt.timedelta(days=50)]
    assert spared and not set(spared) & deleted


def test_chat_archive_keeps_messages_deleted_by_earlier_runs(airflow_env, run_dag):
    env = airflow_env
    first_policy = {"monitors": None, "voicemessages": None, "chatmsgs": KEEP_DAYS}
    env.set_variable("voipstudio_retention_policy", first_policy)
    held_chat = truth(env.sandbox, "chats")[0]["id"]
    env.set_variable("voipstudio_legal_hold", {"ids": {"chats": [held_chat]}})
    before = truth(env.sandbox, "chatmsgs")

    first = run_dag(DAG_ID, logical_date=today())
    env.set_variable("voipstudio_retention_policy", {**first_policy, "chatmsgs": 30})
    second = run_dag(DAG_ID, logical_date=today() + dt.timedelta(seconds=1))

    assert first.state == second.state == "success"
    gone = older_than(before, "chatmsgs", second.data_interval_end - dt.timedelta(days=30))
    kept = [m for m in gone if m["chat_id"] == held_chat]
    assert kept, "the held chat should have messages past retention"
    after = {m["id"] for m in truth(env.sandbox, "chatmsgs")}
    assert {m["id"] for m in gone} - after == {m["id"] for m in gone if m not in kept}
    assert {m["id"] for m in kept} <= after
    s3 = env.s3()
    archived = {}
    for key in env.keys("chats/"):
        document = json.loads(s3.get_object(Bucket=env.bucket, Key=key)["Body"].read())
        assert document["chat"]["id"] != held_chat
        archived.update({m["id"]: m for m in document["messages"]})
    # Messages deleted by the first run are still in the archive after the second.
    first_deleted = [x["id"] for x in audit_lines(env, first) if x["action"] == "deleted"]
    assert first_deleted and set(first_deleted) <= set(archived)
    assert all(archived[m["id"]] == m for m in gone if m not in kept)
    reasons = {x["id"]: (x["action"], x["reason"]) for x in audit_lines(env, second)}
    for message in kept:
        assert reasons.get(message["id"]) == ("skipped", "legal_hold_id"), message["id"]


def test_number_held_after_its_message_was_deleted_still_holds_the_chat(airflow_env, run_dag):
    env = airflow_env
    sandbox = env.sandbox
    policy = {"monitors": None, "voicemessages": None, "chatmsgs": KEEP_DAYS}
    env.set_variable("voipstudio_retention_policy", policy)
    chat = truth(sandbox, "chats")[1]
    number = "+44 20 7946 0123"

    def add_message(days_old: int, text: str) -> int:
        created = today() - dt.timedelta(days=days_old)
        fields = {
            "chat_id": chat["id"],
            "message": text,
            "created_at": created.strftime("%Y-%m-%d %H:%M:%S"),
        }
        return sandbox.control("POST", "records/chatmsgs", {"count": 1, "fields": fields})["ids"][0]

    naming = add_message(KEEP_DAYS + 30, f"please call me back on {number}")
    later = [add_message(60, "any news?"), add_message(45, "still waiting")]

    first = run_dag(DAG_ID, logical_date=today())

    assert first.state == "success"
    first_lines = {x["id"]: (x["action"], x["reason"]) for x in audit_lines(env, first)}
    assert first_lines[naming] == ("deleted", "archive_verified")
    after_first = {m["id"] for m in truth(sandbox, "chatmsgs")}
    assert naming not in after_first and set(later) <= after_first

    # The number goes on hold only now; its message exists only in the archive.
    env.set_variable("voipstudio_legal_hold", {"numbers": ["0044 (20) 7946-0123"]})
    env.set_variable("voipstudio_retention_policy", {**policy, "chatmsgs": 30})
    second = run_dag(DAG_ID, logical_date=today() + dt.timedelta(seconds=1))

    assert second.state == "success"
    cutoff = second.data_interval_end - dt.timedelta(days=30)
    rest = [
        m
        for m in older_than(truth(sandbox, "chatmsgs"), "chatmsgs", cutoff)
        if m["chat_id"] == chat["id"]
    ]
    assert set(later) <= {m["id"] for m in rest}
    lines = {x["id"]: x for x in audit_lines(env, second)}
    for message in rest:
        line = lines[message["id"]]
        assert (line["action"], line["reason"]) == ("skipped", "legal_hold_number")
        assert line["chat_id"] == chat["id"]
    # Other chats were not held: the run deleted messages of theirs.
    assert any(x["action"] == "deleted" for x in lines.values())


def test_a_bucket_that_fails_the_probe_deletes_nothing(airflow_env, run_dag, capfd):
    env = airflow_env
    env.set_variable("voipstudio_retention_policy", POLICY)
    archive_old(env, "voicemessages", today() - dt.timedelta(days=KEEP_DAYS))
    # This S3 server has no KMS: every write the run's options ask for is refused.
    env.set_variable("voipstudio_s3_options", {"sse": "aws:kms", "kms_key_id": "archive-key"})
    before = {res: truth(env.sandbox, res) for res in ("monitors", "voicemessages", "chatmsgs")}
    env.sandbox.control("DELETE", "requests")

    dag_run = run_dag(DAG_ID, logical_date=today())

    assert dag_run.state == "failed"
    assert {res: truth(env.sandbox, res) for res in before} == before
    assert [e for e in env.sandbox.control("GET", "requests")["data"]] == []
    out, err = capfd.readouterr()
    assert "probe: writing s3://" in out + err


def test_a_resource_kept_forever_ends_skipped_and_the_run_succeeds(airflow_env, run_dag):
    env = airflow_env
    env.set_variable("voipstudio_retention_policy", {**POLICY, "chatmsgs": None})
    before = truth(env.sandbox, "chatmsgs")

    dag_run = run_dag(DAG_ID, logical_date=today(), conf={"dry_run": True})

    assert dag_run.state == "success"
    states = {(ti.task_id, ti.map_index): ti.state for ti in dag_run.get_task_instances()}
    assert states[("delete_expired_records", 0)] == "success"  # monitors
    assert states[("delete_expired_records", 1)] == "success"  # voicemessages
    assert states[("delete_expired_records", 2)] == "skipped"  # chatmsgs: kept forever
    assert states[("write_audit_log", -1)] == "success"
    assert states[("fail_if_a_task_failed", -1)] == "skipped"
    assert truth(env.sandbox, "chatmsgs") == before
    assert {x["resource"] for x in audit_lines(env, dag_run)} <= {"monitors", "voicemessages"}
