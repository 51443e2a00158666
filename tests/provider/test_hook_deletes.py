"""Deletes: ids split into short URLs, all-or-nothing answers, confirmed collection deletes."""

from __future__ import annotations

import pytest
from voipstudio_provider.endpoints import MAX_URL_LENGTH
from voipstudio_provider.exceptions import VoIPstudioNotFoundError


def test_1500_ids_are_split_into_urls_below_the_limit(hook, sandbox, truth, api_requests):
    added = sandbox.control("POST", "records/chatmsgs", {"count": 1500})["ids"]
    assert len(added) == 1500
    kept = [m["id"] for m in truth("chatmsgs") if m["id"] not in set(added)]
    assert hook.delete_records("chatmsgs", reversed(added)) == sorted(added)

    deletes = api_requests(method="DELETE")
    assert len(deletes) > 1
    sent: list[int] = []
    for entry in deletes:
        assert entry["status"] == 204
        assert len(sandbox.root_url + entry["path"]) < MAX_URL_LENGTH
        sent += [int(i) for i in entry["path"].rsplit("/", 1)[1].split(",")]
    assert sent == sorted(added)
    assert [m["id"] for m in truth("chatmsgs")] == kept


def test_unknown_id_deletes_nothing_and_is_not_retried(hook, truth, api_requests):
    real = truth("monitors")[0]["id"]
    with pytest.raises(VoIPstudioNotFoundError) as raised:
        hook.delete_records("monitors", [real, 987654321])
    assert raised.value.deleted_ids == []
    assert raised.value.after_retry is False  # the id truly did not exist
    assert real in {m["id"] for m in truth("monitors")}
    assert len(api_requests(method="DELETE")) == 1


def test_not_found_on_a_retried_delete_says_so(hook, set_faults, api_requests):
    # A first attempt that went through but whose answer was lost looks like this from the
    # client: a 5xx, then a 404 for ids an earlier attempt may have deleted.
    set_faults(
        {
            "path": "/v1.1/voipstudio/monitors/*",
            "methods": ["DELETE"],
            "kind": "500",
            "times": 1,
            "rate": 1,
        }
    )
    with pytest.raises(VoIPstudioNotFoundError) as raised:
        hook.delete_records("monitors", [987654321])
    assert raised.value.after_retry is True
    assert [e["status"] for e in api_requests(method="DELETE")] == [500, 404]


def test_no_ids_no_request(hook, api_requests):
    assert hook.delete_records("voicemessages", []) == []
    assert api_requests() == []


def test_whole_collection_delete_needs_the_exact_phrase(hook, sandbox, api_requests):
    for wrong in ("", "yes", "DELETE ALL", "delete all monitors", "DELETE ALL cdrs"):
        with pytest.raises(ValueError, match="DELETE ALL monitors"):
            hook.delete_all("monitors", confirm=wrong)
    assert api_requests() == []
    assert sandbox.control("GET", "stats")["monitors"] > 0


def test_resources_without_the_endpoint_are_refused(hook, api_requests):
    with pytest.raises(ValueError):
        hook.delete_all("sms", confirm="DELETE ALL sms")
    with pytest.raises(ValueError):
        hook.delete_records("cdrs", [1])
    with pytest.raises(ValueError):
        hook.update_records("monitors", [{"id": 1}])
    assert api_requests() == []
