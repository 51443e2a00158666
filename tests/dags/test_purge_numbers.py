"""Phone numbers in the purge and retention DAGs, run by Airflow against the sandbox and S3."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from voipstudio_provider.engine.layout import plan_key

from tests.dags.test_purge import approved_purge
from tests.dags.test_purge import desk as desk  # noqa: F401 (fixture)
from tests.dags.test_retention import run_dag as run_dag  # noqa: F401 (fixture, no retries)
from tests.dags.test_retention import today, truth

PURGE = "voipstudio_compliance_purge"
RETENTION = "voipstudio_retention"
NUMBER = "+44 20 7946 0321"
#: The purge's number as the API, SIP and a national form with region GB write it.
SAME = ("442079460321", "sip:442079460321@sip.example.com", "020 7946 0321")
#: Other subscribers whose numbers share the last 8, 9 or all 10 national digits.
NEIGHBOURS = ("12079460321", "443079460321", "442879460321", "33179460321", "493079460321")


def add(sandbox, resource: str, **fields) -> int:
    return sandbox.control("POST", f"records/{resource}", {"count": 1, "fields": fields})["ids"][0]


def by_id(sandbox, resource: str) -> dict[int, dict]:
    return {r["id"]: r for r in truth(sandbox, resource)}


def writes(sandbox) -> list[dict]:
    """The API requests that changed something (DELETE, PATCH)."""
    log = sandbox.control("GET", "requests")["data"]
    return [e for e in log if e["method"] in ("DELETE", "PATCH", "POST", "PUT")]


def test_purge_takes_one_number_and_leaves_its_neighbours(airflow_env, run_dag, desk):
    env = airflow_env
    sandbox = env.sandbox
    env.set_variable("voipstudio_default_region", "GB")
    assert all(n[-8:] == "79460321" for n in NEIGHBOURS)  # the old rule's 8 digits
    monitors = {v: add(sandbox, "monitors", caller=v, called="101") for v in SAME + NEIGHBOURS}
    voicemail = {
        v: add(sandbox, "voicemessages", caller=v, callerid=v, dialled="101")
        for v in (SAME[0], *NEIGHBOURS)
    }
    chat, other_chat = truth(sandbox, "chats")[:2]
    said = "Order 123 call me on +44 (0)20 7946 0321 2 times"
    add(sandbox, "chatmsgs", chat_id=chat["id"], message=said)
    add(sandbox, "chatmsgs", chat_id=other_chat["id"], message="ring +1 207 946 0321 or 0")
    cdr = add(
        sandbox, "cdrs", src="anonymous", clid="", dst="442079460321", dst_name="+44 20 7946 0321"
    )
    neighbour_cdr = add(sandbox, "cdrs", src="12079460321", clid="12079460321", dst="101")
    before = {res: by_id(sandbox, res) for res in ("monitors", "voicemessages", "chatmsgs")}

    conf = {"phone_number": NUMBER, "require_archive": False, "mask_cdrs": True}
    dag_run = approved_purge(run_dag, desk, conf)

    assert dag_run.state == "success"
    after = {res: by_id(sandbox, res) for res in ("monitors", "voicemessages", "chatmsgs")}
    gone = {res: set(before[res]) - set(after[res]) for res in before}
    assert gone["monitors"] == {monitors[v] for v in SAME}
    assert gone["voicemessages"] == {voicemail[SAME[0]]}
    chat_messages = {i for i, m in before["chatmsgs"].items() if m["chat_id"] == chat["id"]}
    assert gone["chatmsgs"] == chat_messages and len(chat_messages) > 1
    assert all(
        m["chat_id"] != other_chat["id"] for m in (before["chatmsgs"][i] for i in gone["chatmsgs"])
    )
    cdrs = by_id(sandbox, "cdrs")
    assert cdrs[cdr]["dst"] == "masked" and cdrs[cdr]["dst_name"] == "masked"
    assert cdrs[cdr]["src"] == "anonymous"
    assert cdrs[neighbour_cdr]["src"] == "12079460321"

    key = plan_key(env.prefix, PURGE, dag_run.run_id)
    plan = json.loads(env.s3().get_object(Bucket=env.bucket, Key=key)["Body"].read())
    assert plan["criteria"]["phone_number"] == "+442079460321"
    assert plan["criteria"]["region"] == "GB"
    # The reviewer sees, per record, the number text that put it in the plan.
    assert plan["resources"]["monitors"]["matched"] == {str(monitors[v]): v for v in SAME}
    assert plan["resources"]["voicemessages"]["matched"] == {str(voicemail[SAME[0]]): SAME[0]}
    assert set(plan["resources"]["chatmsgs"]["matched"].values()) == {"+44 (0)20 7946 0321"}
    assert plan["cdrs_to_mask"]["matched"] == {str(cdr): "442079460321"}


@pytest.mark.parametrize(
    ("dag_id", "numbers"),
    [
        (PURGE, ["+44 20 7946 0000", "call me maybe"]),
        (PURGE, ["020 7946 0321"]),  # national, and no voipstudio_default_region
        (RETENTION, ["+44 20 7946 0000", "+44 20 7946 000"]),
    ],
)
def test_a_hold_entry_that_does_not_parse_fails_the_run_before_any_delete(
    airflow_env, run_dag, desk, capfd, dag_id, numbers
):
    env = airflow_env
    sandbox = env.sandbox
    env.set_variable("voipstudio_retention_policy", {"monitors": 30, "voicemessages": 30})
    older = (today() - dt.timedelta(days=30)).date().isoformat()
    before = {res: by_id(sandbox, res) for res in ("monitors", "voicemessages", "chatmsgs")}

    def bad_hold() -> None:
        env.set_variable("voipstudio_legal_hold", {"numbers": numbers})
        sandbox.control("DELETE", "requests")

    if dag_id == PURGE:
        # The bad entry is added to the hold while the approval waits, so that the approved
        # run gets as far as reading the hold again before its first delete.
        dag_run = approved_purge(run_dag, desk, {"older_than": older}, between=bad_hold)
    else:
        bad_hold()
        dag_run = run_dag(dag_id, logical_date=today() + dt.timedelta(seconds=1))

    assert dag_run.state == "failed"
    assert writes(sandbox) == []
    assert {res: by_id(sandbox, res) for res in before} == before
    out, err = capfd.readouterr()
    bad = numbers[-1]
    assert f"voipstudio_legal_hold numbers[{len(numbers) - 1}]: {bad!r}" in out + err
