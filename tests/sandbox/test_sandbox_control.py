"""The control API: records added mid-run, faults as a client sees them, the request log."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import urllib.error

import pytest
import requests

from tests.sandbox.sandbox_api import Api, records

MONITORS = "/v1.1/voipstudio/monitors/*"


def _faults(sandbox, *rules: dict, seed: int = 7) -> None:
    sandbox.control("PUT", "faults", {"seed": seed, "rules": list(rules)})


def test_health_and_stats(sandbox):
    assert sandbox.control("GET", "health") == {"status": "ok"}
    stats = sandbox.control("GET", "stats")
    assert stats["cdrs"] == len(records(sandbox, "cdrs")) > 0
    assert stats["monitors"] == len(records(sandbox, "monitors")) > 0


def test_added_calls_with_recordings_are_linked(sandbox, api: Api):
    answer = sandbox.control("POST", "records/cdrs", {"count": 3, "with_recording": True})
    assert len(answer["ids"]) == 3
    cdrs = {c["id"]: c for c in records(sandbox, "cdrs")}
    monitors = {m["id"]: m for m in records(sandbox, "monitors")}
    for cdr_id, monitor_id in zip(answer["ids"], answer["monitors"], strict=True):
        cdr, monitor = cdrs[cdr_id], monitors[monitor_id]
        assert monitor["live_id"] == cdr["live_id"]
        assert (monitor["caller"], monitor["called"]) == (cdr["src"], cdr["dst"])
        assert monitor["timestamp"] == cdr["calldate"]
        assert api.get(f"/monitors/{monitor_id}.mp3").headers["content-length"] == str(
            monitor["size"]
        )
    assert len(answer["msdrs"]) == 3


def test_added_records_take_field_overrides(sandbox, api: Api):
    answer = sandbox.control("POST", "records/monitors", {"fields": {"size": 12345}})
    (monitor_id,) = answer["ids"]
    assert len(api.get(f"/monitors/{monitor_id}.mp3").content) == 12345
    with pytest.raises(urllib.error.HTTPError) as error:
        sandbox.control("POST", "records/monitors", {"fields": {"colour": "red"}})
    assert error.value.code == 400


def test_keyset_paging_sees_calls_arriving_mid_run(sandbox, api: Api):
    seen, last_id = [], 0
    while True:
        page = api.page(
            "/cdrs",
            filter=[{"property": "id", "operator": "gt", "value": last_id}],
            sort="id",
            dir="ASC",
            limit=100,
        )["data"]
        if not page:
            break
        if not seen:
            sandbox.control("POST", "records/cdrs", {"count": 5})
        seen.extend(c["id"] for c in page)
        last_id = page[-1]["id"]
    assert seen == [c["id"] for c in records(sandbox, "cdrs")]


def test_offset_paging_repeats_rows_when_calls_arrive(sandbox, api: Api):
    first = api.page("/cdrs", page=1, limit=50)["data"]
    sandbox.control("POST", "records/cdrs", {"count": 5})
    second = api.page("/cdrs", page=2, limit=50)["data"]
    assert {c["id"] for c in first} & {c["id"] for c in second}


def test_reset_returns_to_the_seeded_state(sandbox):
    before = records(sandbox, "cdrs")
    sandbox.control("POST", "records/cdrs", {"count": 2})
    _faults(sandbox, {"path": "*", "kind": "500"})
    sandbox.control("POST", "reset")
    assert records(sandbox, "cdrs") == before
    assert sandbox.control("GET", "faults")["rules"] == []
    assert sandbox.control("GET", "requests")["data"] == []


@pytest.mark.parametrize("kind", ["429", "500", "502", "503"])
def test_error_faults(sandbox, api: Api, kind):
    _faults(sandbox, {"path": MONITORS, "kind": kind, "retry_after": 2, "times": 1})
    response = api.get("/monitors/1")
    assert response.status_code == int(kind)
    assert response.json()["errors"][0]["message"]
    if kind == "429":
        assert response.headers["retry-after"] == "2"
    assert api.get("/monitors/1").status_code == 200, "times=1: the second request passes"
    assert sandbox.control("GET", "faults")["rules"][0]["hits"] == 1


def test_slow_fault_answers_normally(sandbox, api: Api):
    _faults(sandbox, {"path": MONITORS, "kind": "slow", "delay": 0.2})
    assert api.get("/monitors/1").json()["data"]["id"] == 1
    assert sandbox.control("GET", "requests")["data"][-1]["fault"] == "slow"


@pytest.mark.parametrize("kind", ["drop", "truncate"])
def test_broken_bodies_are_seen_by_requests(sandbox, api: Api, kind):
    monitor = records(sandbox, "monitors")[0]
    _faults(sandbox, {"path": MONITORS, "methods": ["GET"], "kind": kind})
    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.ConnectionError)):
        api.get(f"/monitors/{monitor['id']}.mp3").content  # noqa: B018
    entry = sandbox.control("GET", "requests")["data"][-1]
    assert entry["fault"] == kind and entry["status"] == 200
    assert 0 <= entry["bytes"] < monitor["size"]


def test_malformed_fault_sends_broken_json_with_200(sandbox, api: Api):
    _faults(sandbox, {"path": "/v1.1/voipstudio/cdrs", "kind": "malformed"})
    response = api.get("/cdrs")
    assert response.status_code == 200
    with pytest.raises(ValueError):
        json.loads(response.text)


def test_malformed_headers_fault_is_an_answer_no_http_client_parses(sandbox, api: Api):
    _faults(sandbox, {"path": "/v1.1/voipstudio/ping", "kind": "malformed_headers", "times": 1})
    with socket.create_connection(("127.0.0.1", sandbox.port), timeout=10) as conn:
        conn.sendall(b"GET /v1.1/voipstudio/ping HTTP/1.1\r\nHost: sandbox\r\n\r\n")
        raw = b""
        while b"\r\n\r\n" not in raw:
            raw += conn.recv(65536)
    status_line, *header_lines = raw.split(b"\r\n\r\n")[0].split(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 429")
    assert max(len(line) for line in header_lines) > 65536  # http.client's longest line
    _faults(sandbox, {"path": "/v1.1/voipstudio/ping", "kind": "malformed_headers", "times": 1})
    with pytest.raises(requests.ConnectionError, match="LineTooLong"):
        api.get("/ping")
    assert api.get("/ping").status_code == 200  # the next answer is a normal one


def _raw_get(sandbox, path: str) -> bytes:
    """Everything the server writes for one GET, read until it closes the connection."""
    with socket.create_connection(("127.0.0.1", sandbox.port), timeout=10) as conn:
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: sandbox\r\nConnection: close\r\n\r\n".encode())
        raw = b""
        while chunk := conn.recv(65536):
            raw += chunk
    return raw


INVALID_TOKEN = {"path": "/v1.1/voipstudio/ping", "kind": "malformed_headers",
                 "form": "invalid_token", "times": 1}  # fmt: skip


def test_malformed_headers_fault_in_its_invalid_token_form(sandbox, api: Api):
    _faults(sandbox, INVALID_TOKEN)
    head, _, body = _raw_get(sandbox, "/v1.1/voipstudio/ping").partition(b"\r\n\r\n")
    status_line, *header_lines = head.split(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 429")
    assert b"X-RateLimit Remaining: 0" in header_lines  # a space: not a header name
    assert json.loads(body)["message"] == "Too many requests"  # nothing after the answer
    # Python's parser reads the status, stops at the bad line and keeps what came before.
    _faults(sandbox, INVALID_TOKEN)
    response = api.get("/ping")
    assert response.status_code == 429 and "retry-after" not in response.headers
    assert response.raw._original_response.msg.defects  # urllib3 only logged it
    # The server closed that connection, but its "connection: close" came after the bad
    # line, so the pool kept it: the next request goes on a new one, not into a reset.
    assert not response.raw._original_response.will_close
    api.session.close()
    assert api.get("/ping").status_code == 200
    log = sandbox.control("GET", "requests")["data"]
    assert [(e["status"], e["fault"]) for e in log] == [
        (429, "malformed_headers"), (429, "malformed_headers"), (200, None)
    ]  # fmt: skip


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js")
@pytest.mark.parametrize(
    ("form", "node_error"),
    [("invalid_token", "HPE_INVALID_HEADER_TOKEN"), ("overflow", "HPE_HEADER_OVERFLOW")],
)
def test_node_refuses_both_forms_of_malformed_headers(sandbox, form, node_error):
    _faults(sandbox, {**INVALID_TOKEN, "form": form})
    script = (
        f"require('http').get('{sandbox.base_url}/ping', {{headers: {{'X-Auth-Token': "
        f"'{sandbox.token}'}}}}, r => console.log('status', r.statusCode))"
        ".on('error', e => console.log('error', e.code))"
    )
    node = subprocess.run(["node", "-e", script], capture_output=True, text=True, timeout=30)
    assert node.stdout.strip() == f"error {node_error}"


def test_an_unknown_form_of_malformed_headers_is_refused(sandbox):
    with pytest.raises(urllib.error.HTTPError) as refused:
        _faults(sandbox, {**INVALID_TOKEN, "form": "gibberish"})
    assert refused.value.code == 400


def test_fault_rate_is_deterministic_for_a_seed(sandbox, api: Api):
    def pattern() -> list[int]:
        _faults(sandbox, {"path": MONITORS, "kind": "503", "rate": 0.5}, seed=11)
        return [api.get("/monitors/1").status_code for _ in range(30)]

    first, second = pattern(), pattern()
    assert first == second
    assert 0 < first.count(503) < 30


def test_methods_limit_a_fault(sandbox, api: Api):
    _faults(sandbox, {"path": MONITORS, "methods": ["DELETE"], "kind": "500"})
    assert api.get("/monitors/1").status_code == 200
    assert api.request("DELETE", "/monitors/1").status_code == 500
    assert 1 in {m["id"] for m in records(sandbox, "monitors")}


def test_bad_fault_rules_are_refused(sandbox):
    with pytest.raises(urllib.error.HTTPError) as error:
        _faults(sandbox, {"path": "*", "kind": "explode"})
    assert error.value.code == 400


def test_request_log_counts_requests_and_bytes(sandbox, api: Api):
    monitor = records(sandbox, "monitors")[1]
    api.get("/cdrs", params={"limit": 3})
    api.get(f"/monitors/{monitor['id']}.mp3")
    api.get("/monitors/99999999")
    log = sandbox.control("GET", "requests")["data"]
    assert [(e["method"], e["path"], e["status"]) for e in log] == [
        ("GET", "/v1.1/voipstudio/cdrs", 200),
        ("GET", f"/v1.1/voipstudio/monitors/{monitor['id']}.mp3", 200),
        ("GET", "/v1.1/voipstudio/monitors/99999999", 404),
    ]
    assert log[0]["query"] == "limit=3"
    assert log[1]["bytes"] == monitor["size"]
    sandbox.control("DELETE", "requests")
    assert sandbox.control("GET", "requests")["data"] == []
