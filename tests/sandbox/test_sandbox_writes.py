"""Deletes by ids, whole-collection deletes and bulk updates, with the API's rules."""

from __future__ import annotations

import time

import pytest

from tests.sandbox.sandbox_api import Api, records


def _ids(sandbox, resource: str) -> list[int]:
    return [r["id"] for r in records(sandbox, resource)]


def test_delete_by_ids_removes_exactly_those(sandbox, api: Api):
    before = _ids(sandbox, "monitors")
    doomed = before[2:5]
    response = api.request("DELETE", "/monitors/" + ",".join(map(str, doomed)))
    assert response.status_code == 204 and response.content == b""
    assert _ids(sandbox, "monitors") == [i for i in before if i not in doomed]


def test_delete_is_all_or_nothing(sandbox, api: Api):
    before = _ids(sandbox, "voicemessages")
    response = api.request("DELETE", f"/voicemessages/{before[0]},{before[1]},99999999")
    assert response.status_code == 404
    assert "99999999" in response.json()["message"]
    assert _ids(sandbox, "voicemessages") == before


@pytest.mark.parametrize("ids", ["1,x", "1,,2", "-4", "1.5"])
def test_delete_with_a_non_integer_id_is_400(sandbox, api: Api, ids):
    before = _ids(sandbox, "chatmsgs")
    assert api.request("DELETE", f"/chatmsgs/{ids}").status_code == 400
    assert _ids(sandbox, "chatmsgs") == before


def test_deleting_all_monitors_is_accepted_then_happens(sandbox, api: Api):
    response = api.request("DELETE", "/monitors")
    assert response.status_code == 202
    assert _ids(sandbox, "monitors"), "rows disappear later, not at once"
    for _ in range(100):
        if not _ids(sandbox, "monitors"):
            break
        time.sleep(0.1)
    assert _ids(sandbox, "monitors") == []
    assert _ids(sandbox, "cdrs"), "other collections are untouched"


def test_a_reset_cancels_a_pending_collection_delete(sandbox, api: Api):
    assert api.request("DELETE", "/voicemessages").status_code == 202
    count = len(_ids(sandbox, "voicemessages"))
    sandbox.control("POST", "reset")
    time.sleep(1.5)  # past the delayed delete of the state before the reset
    assert len(_ids(sandbox, "voicemessages")) == count > 0


def test_deleting_all_cdrs_is_immediate(sandbox, api: Api):
    assert api.request("DELETE", "/cdrs").status_code == 204
    assert _ids(sandbox, "cdrs") == []


def test_only_the_root_may_delete_a_collection(sandbox, user_api: Api):
    assert user_api.request("DELETE", "/cdrs").status_code == 403
    assert _ids(sandbox, "cdrs")


def test_patch_voicemessage_folders(sandbox, api: Api):
    messages = records(sandbox, "voicemessages")[:2]
    body = [
        {"id": messages[0]["id"], "folder": "Old"},
        {"id": messages[1]["id"], "folder": "INBOX"},
    ]
    response = api.request("PATCH", "/voicemessages", json=body)
    assert response.status_code == 200
    after = {m["id"]: m for m in records(sandbox, "voicemessages")}
    assert [after[row["id"]]["folder"] for row in body] == ["Old", "INBOX"]


@pytest.mark.parametrize(
    "body",
    [
        [{"id": 1, "folder": "abcd"}],
        [{"id": 1, "folder": 0}],
        [{"folder": "Old"}],
        [{"id": 1, "folder": "Old", "caller": "123"}],
        {"id": 1, "folder": "Old"},
        [],
    ],
    ids=["bad-folder", "numeric-folder", "no-id", "other-field", "not-a-list", "empty"],
)
def test_patch_voicemessages_validates(sandbox, api: Api, body):
    before = records(sandbox, "voicemessages")
    response = api.request("PATCH", "/voicemessages", json=body)
    assert response.status_code == 400
    assert response.json()["errors"][0]["message"]
    assert records(sandbox, "voicemessages") == before


def test_patch_with_an_unknown_id_is_404_and_changes_nothing(sandbox, api: Api):
    first = records(sandbox, "voicemessages")[0]
    body = [{"id": first["id"], "folder": "Old" if first["folder"] == "INBOX" else "INBOX"},
            {"id": 99999999, "folder": "Old"}]  # fmt: skip
    assert api.request("PATCH", "/voicemessages", json=body).status_code == 404
    assert records(sandbox, "voicemessages")[0] == first


def test_patch_cdrs_takes_partial_objects(sandbox, api: Api):
    cdr = records(sandbox, "cdrs")[10]
    response = api.request("PATCH", "/cdrs", json=[{"id": cdr["id"], "info": "callback done"}])
    assert response.status_code == 200
    after = {c["id"]: c for c in records(sandbox, "cdrs")}[cdr["id"]]
    assert after == cdr | {"info": "callback done"}
    unknown = api.request("PATCH", "/cdrs", json=[{"id": cdr["id"], "colour": "red"}])
    assert unknown.status_code == 400
    assert unknown.json()["errors"][0]["property"] == "colour"
