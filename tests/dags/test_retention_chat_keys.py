"""A chat's archive is found where it was written, whatever deletion left of the chat."""

from __future__ import annotations

import datetime as dt
import json

from voipstudio_provider.engine.evidence.audit import read_audit
from voipstudio_provider.engine.layout import audit_key

DAG_ID = "voipstudio_retention"
KEEP_DAYS = 120
POLICY = {"monitors": None, "voicemessages": None, "chatmsgs": KEEP_DAYS}
NUMBER = "+44 20 7946 0123"


def today() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def rows(sandbox, resource: str) -> list[dict]:
    return sandbox.control("GET", f"records/{resource}")["data"]


def lines_of(env, dag_run) -> dict[int, dict]:
    key = audit_key(env.prefix, DAG_ID, dag_run.run_id)
    return {
        x["id"]: x for x in read_audit(env.s3(), env.bucket, key) if x["resource"] == "chatmsgs"
    }


def test_a_held_number_in_a_deleted_message_holds_a_chat_whose_record_is_gone(airflow_env, run_dag):
    env, sandbox = airflow_env, airflow_env.sandbox
    # A chat whose own record is no longer at the source: only its messages are.
    chat_id = max(c["id"] for c in rows(sandbox, "chats")) + 500
    day = today() - dt.timedelta(days=KEEP_DAYS + 30)

    def add_message(moment: dt.datetime, text: str) -> int:
        fields = {"chat_id": chat_id, "message": text,
                  "created_at": moment.strftime("%Y-%m-%d %H:%M:%S")}  # fmt: skip
        return sandbox.control("POST", "records/chatmsgs", {"count": 1, "fields": fields})["ids"][0]

    naming = add_message(day + dt.timedelta(hours=12), f"please call me back on {NUMBER}")
    # A recent message after it, so that no id is given again once it is deleted.
    recent = add_message(today(), "a message too recent for retention")
    env.set_variable("voipstudio_retention_policy", POLICY)

    first = run_dag(DAG_ID, logical_date=today())

    assert first.state == "success"
    assert (lines_of(env, first)[naming]["action"], lines_of(env, first)[naming]["reason"]) == (
        "deleted",
        "archive_verified",
    )
    assert naming not in {m["id"] for m in rows(sandbox, "chatmsgs")}
    (written,) = [k for k in env.keys("chats/") if k.endswith(f"/{chat_id}.json")]

    # The number goes on hold; the chat's next message is on the following UTC day.
    env.set_variable("voipstudio_legal_hold", {"numbers": [NUMBER]})
    following = add_message(day + dt.timedelta(days=1, hours=1), "any news?")

    second = run_dag(DAG_ID, logical_date=today() + dt.timedelta(seconds=1))

    assert second.state == "success"
    assert following in {m["id"] for m in rows(sandbox, "chatmsgs")}
    line = lines_of(env, second)[following]
    assert (line["action"], line["reason"]) == ("skipped", "legal_hold_number")
    assert line["archive_key"] == written
    # The archive the first run wrote is the chat's only one, and still names the number.
    assert [k for k in env.keys("chats/") if k.endswith(f"/{chat_id}.json")] == [written]
    document = json.loads(env.s3().get_object(Bucket=env.bucket, Key=written)["Body"].read())
    archived = {m["id"]: m["message"] for m in document["messages"]}
    assert set(archived) == {naming, recent} and NUMBER in archived[naming]
