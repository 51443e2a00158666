"""``run()`` and ``call()`` go through the hook's own retries, timeouts and errors."""

from __future__ import annotations

import pytest
from voipstudio_provider.exceptions import (
    VoIPstudioAuthenticationError,
    VoIPstudioNotFoundError,
    VoIPstudioServerError,
)

CDRS = "/v1.1/voipstudio/cdrs"


def test_run_gets_a_path_under_the_base_url(hook, truth):
    response = hook.run("cdrs", data={"limit": 3, "sort": "id", "dir": "ASC"})
    assert response.status_code == 200
    assert [r["id"] for r in response.json()["data"]] == [r["id"] for r in truth("cdrs")[:3]]
    assert response.json()["total"] == len(truth("cdrs"))


def test_run_keeps_a_query_written_in_the_endpoint(hook, api_requests):
    assert len(hook.run("/chats?limit=2").json()["data"]) == 2
    assert "limit=2" in api_requests("/chats")[0]["query"]


def test_run_retries_server_errors(hook, set_faults, api_requests):
    set_faults({"path": CDRS, "methods": ["GET"], "kind": "503", "rate": 1, "times": 2})
    assert len(hook.run("cdrs", data={"limit": 1}).json()["data"]) == 1
    assert [e["status"] for e in api_requests("/cdrs")] == [503, 503, 200]


def test_run_raises_the_hooks_errors(make_hook, sandbox, api_requests):
    with pytest.raises(VoIPstudioNotFoundError) as raised:
        make_hook().run("cdrs/987654321")
    assert "GET /cdrs/987654321 answered 404" in str(raised.value)
    bad = "sandbox-token-wrong"
    with pytest.raises(VoIPstudioAuthenticationError) as denied:
        make_hook(token=bad, conn_id="voipstudio_bad").run("ping")
    assert bad not in str(denied.value)
    assert len(api_requests("/cdrs/987654321")) == 1 and len(api_requests("/ping")) == 1


def test_run_applies_a_timeout_from_extra_options(make_hook, set_faults):
    set_faults({"path": "/v1.1/voipstudio/ping", "kind": "slow", "delay": 1.5, "rate": 1})
    with pytest.raises(VoIPstudioServerError, match="timed out"):
        make_hook(max_attempts=1).run("ping", extra_options={"timeout": (2, 0.3)})


def test_run_sends_other_methods_with_a_json_body(hook, truth):
    voicemessage = next(v for v in truth("voicemessages") if v["folder"] != "Old")
    hook.method = "PATCH"
    response = hook.run("voicemessages", data=[{"id": voicemessage["id"], "folder": "Old"}])
    assert response.status_code == 200
    assert (
        next(v for v in truth("voicemessages") if v["id"] == voicemessage["id"])["folder"] == "Old"
    )


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://elsewhere.example/cdrs",
        "//elsewhere.example/cdrs",
        "",
        None,
        "/",
        "../../v1.2/voipstudio/cdrs",
        "%2F%2Felsewhere.example/cdrs",
        "cdrs/../..",
    ],
)
def test_run_refuses_anything_but_a_path_under_the_base_url(hook, api_requests, endpoint):
    with pytest.raises(ValueError, match="path under the connection's base URL"):
        hook.run(endpoint)
    assert api_requests() == []


def test_run_refuses_extra_options_it_cannot_honour(hook, api_requests):
    with pytest.raises(ValueError, match="verify"):
        hook.run("ping", extra_options={"verify": False})
    assert api_requests() == []


def test_requests_past_the_retry_policy_are_not_available(hook, api_requests):
    # A plain hook: HttpHook's entry points that would bypass the retry policy do not exist.
    for name in ("run_with_advanced_retry", "run_and_check"):
        with pytest.raises(AttributeError, match=name):
            getattr(hook, name)
    assert api_requests() == []


@pytest.mark.parametrize(
    "endpoint",
    [
        "voicemessages",
        "/voicemessages",
        "voicemessages/",
        "/monitors?confirm=1",
        "VoiceMessages",
        "cdrs",
        "chatmsgs",
        "statements",
        "monitors/../voicemessages",
        "%2Fvoicemessages",
        "monitors/",
        "monitors/,",
        "monitors/all",
        "monitors/0",
        "../voipstudio/voicemessages",
        "%2E%2E/voipstudio/monitors",
        "voicemessages;1",
        "./monitors/%252e%252e/voicemessages",
        "monitors\\..\\chatmsgs",
        "voicemessages%3F/1",
    ],
)
def test_run_refuses_a_whole_collection_delete(hook, sandbox, api_requests, endpoint):
    before = sandbox.control("GET", "stats")
    hook.method = "DELETE"
    with pytest.raises(ValueError, match="DELETE"):
        hook.run(endpoint)
    assert api_requests() == []
    assert sandbox.control("GET", "stats") == before


def test_run_sends_the_path_it_judged(hook, truth, api_requests):
    first, second = (m["id"] for m in truth("monitors")[:2])
    hook.method = "DELETE"
    assert hook.run(f"./x/../monitors;v=1//%{ord(str(first)[0]):X}{str(first)[1:]},{second}/")
    assert [e["path"] for e in api_requests(method="DELETE")] == [
        f"/v1.1/voipstudio/monitors/{first},{second}"
    ]
    assert not {first, second} & {m["id"] for m in truth("monitors")}


def test_run_still_deletes_by_ids(hook, truth):
    first, second = (m["id"] for m in truth("monitors")[:2])
    hook.method = "DELETE"
    assert hook.run(f"monitors/{first},{second}").status_code == 204
    assert not {first, second} & {m["id"] for m in truth("monitors")}


@pytest.mark.parametrize(
    "operation", ["delete_all_voicemessages", "delete_all_monitors", "delete_all_cdrs"]
)
def test_call_refuses_a_whole_collection_delete(hook, api_requests, operation):
    with pytest.raises(ValueError, match="delete_all"):
        hook.call(operation)
    if operation != "delete_all_cdrs":  # CDRs cannot be deleted by id
        with pytest.raises(ValueError, match="at least one id"):
            hook.call(operation.replace("delete_all_", "delete_"), ids=[])
    assert api_requests() == []


def test_the_base_url_is_read_once_as_requests_are_sent_to_it(make_hook, sandbox, api_requests):
    hook = make_hook(host=sandbox.base_url + "//x/../")
    assert hook.run("cdrs", data={"limit": 1}).status_code == 200
    assert hook.base_url == sandbox.base_url
    assert [e["path"] for e in api_requests()] == ["/v1.1/voipstudio/cdrs"]
    with pytest.raises(ValueError, match="plain http"):
        make_hook(host=sandbox.base_url + "?x=1", conn_id="voipstudio_query").run("cdrs")
    assert len(api_requests()) == 1
