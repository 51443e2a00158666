"""Every endpoint of the table, called through the hook against the sandbox."""

from __future__ import annotations

import hashlib
import io
import time

import pytest
from voipstudio_provider.endpoints import AUTH_ENDPOINTS, ENDPOINTS, RESOURCES, Shape
from voipstudio_provider.exceptions import VoIPstudioFilterError, VoIPstudioNotFoundError
from voipstudio_provider.hooks.downloads import ExportJob

SANDBOX_PASSWORD = "sandbox-password"


def _ids(endpoints):
    return [e.operation for e in endpoints]


def _of(shape):
    return [e for e in ENDPOINTS if e.shape is shape]


def _first_id(truth, resource, **match):
    rows = [r for r in truth(resource) if all(r.get(k) == v for k, v in match.items())]
    assert rows, f"the sandbox holds no {resource} to test with"
    return rows[0]["id"]


@pytest.mark.parametrize("ep", _of(Shape.LIST), ids=_ids(_of(Shape.LIST)))
def test_list_endpoints(hook, truth, ep):
    rows, total = hook.list_page(ep.resource, limit=5, operation=ep.operation)
    assert len(rows) <= 5
    assert total >= len(rows)
    held = {r["id"]: r for r in truth(ep.resource)}
    for row in rows:
        assert isinstance(row["id"], int)
        assert row == held[row["id"]]  # every field, those beyond the reference's too
    again = hook.call(ep.operation, params={"limit": 5})
    assert again["data"] == rows  # the default order is id descending either way


@pytest.mark.parametrize(
    "ep",
    [e for e in _of(Shape.GET) if e.operation != "get_cdr_notes"],
    ids=_ids(e for e in _of(Shape.GET) if e.operation != "get_cdr_notes"),
)
def test_get_endpoints(hook, truth, ep):
    record_id = _first_id(truth, ep.resource)
    record = hook.get_record(ep.resource, record_id)
    assert record["id"] == record_id
    assert hook.call(ep.operation, id=record_id)["data"] == record


def test_get_cdr_notes(hook, truth):
    notes = truth("cdrs")  # notes are not a resource of their own: find a CDR that has some
    for cdr in notes[:50]:
        found = hook.get_cdr_notes(cdr["id"])
        assert isinstance(found, list)
        assert all(note["cdr_id"] == cdr["id"] for note in found)
        if found:
            break
    else:
        pytest.fail("no CDR among the first 50 has notes")


@pytest.mark.parametrize("ep", _of(Shape.DICTIONARY), ids=_ids(_of(Shape.DICTIONARY)))
def test_dictionary_endpoints(hook, ep):
    dictionaries = hook.get_dictionaries(ep.resource)
    assert isinstance(dictionaries, dict) and dictionaries
    for field, labels in dictionaries.items():
        assert field in RESOURCES[ep.resource].fields
        assert isinstance(labels, dict) and labels


@pytest.mark.parametrize("ep", _of(Shape.DOWNLOAD), ids=_ids(_of(Shape.DOWNLOAD)))
def test_download_endpoints(hook, sandbox, truth, users, ep):
    if ep.operation == "export_user_cdrs_csv":
        sandbox.control("PUT", "settings", {"csv_export": "stream"})  # 202 otherwise
        record_id = next(c["user_id"] for c in truth("cdrs"))
    else:
        record_id = _first_id(truth, ep.resource)
    sink = io.BytesIO()
    result = hook.download(ep.operation, record_id, sink)
    body = sink.getvalue()
    assert result.size == len(body) > 0
    assert result.sha256 == hashlib.sha256(body).hexdigest()
    assert result.content_type == ep.content_type


def test_user_cdr_csv_answered_as_an_export_job_writes_nothing(hook, truth, api_requests):
    user_id = truth("cdrs")[0]["user_id"]
    sink = io.BytesIO()
    answer = hook.export_user_cdrs_csv(user_id, sink)
    assert isinstance(answer, ExportJob)
    assert answer.status_code == 202
    assert answer.body["data"]["user_id"] == user_id and answer.body["data"]["status"] == "queued"
    assert sink.getvalue() == b""
    assert len(api_requests("/cdrs.csv")) == 1  # accepted, not retried


def test_user_cdr_csv_refused_filter_is_named(hook, truth):
    user_id = truth("cdrs")[0]["user_id"]
    with pytest.raises(VoIPstudioFilterError, match="labels like 'vip'"):
        hook.export_user_cdrs_csv(
            user_id,
            io.BytesIO(),
            filters=[{"property": "labels", "operator": "like", "value": "vip"}],
        )


@pytest.mark.parametrize("ep", _of(Shape.DELETE_IDS), ids=_ids(_of(Shape.DELETE_IDS)))
def test_delete_by_ids_endpoints(hook, truth, ep):
    rows = truth(ep.resource)
    victims = [rows[0]["id"], rows[-1]["id"]]
    assert hook.delete_records(ep.resource, reversed(victims)) == sorted(victims)
    remaining = {r["id"] for r in truth(ep.resource)}
    assert not remaining & set(victims)
    assert len(remaining) == len(rows) - 2


@pytest.mark.parametrize("ep", _of(Shape.DELETE_ALL), ids=_ids(_of(Shape.DELETE_ALL)))
def test_delete_all_endpoints(hook, sandbox, ep):
    status = hook.delete_all(ep.resource, confirm=f"DELETE ALL {ep.resource}")
    assert status == ep.success_status
    deadline = time.monotonic() + 15  # 202: the rows go shortly after
    while sandbox.control("GET", "stats")[ep.resource] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sandbox.control("GET", "stats")[ep.resource] == 0


def test_update_cdrs(hook, truth):
    cdr_id = _first_id(truth, "cdrs")
    hook.update_records("cdrs", [{"id": cdr_id, "info": "reviewed"}])
    assert hook.get_record("cdrs", cdr_id)["info"] == "reviewed"


def test_update_voicemessages(hook, truth):
    rows = truth("voicemessages")[:2]
    hook.update_records("voicemessages", [{"id": r["id"], "folder": "Old"} for r in rows])
    for row in rows:
        assert hook.get_record("voicemessages", row["id"])["folder"] == "Old"


def test_every_update_endpoint_is_reachable(hook):
    updated = {e.resource for e in _of(Shape.UPDATE)}
    assert updated == {"cdrs", "voicemessages"}  # each has a test above


@pytest.mark.parametrize("ep", AUTH_ENDPOINTS, ids=_ids(AUTH_ENDPOINTS))
def test_auth_endpoints(hook, make_hook, users, ep):
    root, _ = users
    if ep.operation == "ping":
        assert hook.ping() == {"response": "Pong"}
    elif ep.operation == "me":
        me = hook.me()
        assert me["id"] == root["id"]
        assert me["customer_id"] == root["customer_id"]  # a field beyond the reference's
    else:
        answer = hook.call("login", json={"email": root["email"], "password": SANDBOX_PASSWORD})
        assert answer["user_id"] == root["id"]
        session_hook = make_hook(token=answer["user_token"], conn_id="voipstudio_session")
        assert session_hook.me()["id"] == root["id"]


def test_a_deleted_record_is_not_found(hook, truth):
    monitor_id = _first_id(truth, "monitors")
    hook.delete_records("monitors", [monitor_id])
    with pytest.raises(VoIPstudioNotFoundError):
        hook.get_record("monitors", monitor_id)


def test_call_refuses_files_and_whole_collection_deletes(hook, api_requests):
    with pytest.raises(ValueError, match="download"):
        hook.call("download_monitor_mp3", id=1)
    with pytest.raises(ValueError, match="delete_all"):
        hook.call("delete_all_monitors")
    assert api_requests() == []


@pytest.mark.parametrize("bad", [0, -3, True, "5", 2.0, None])
def test_ids_must_be_positive_integers(hook, api_requests, bad):
    with pytest.raises(ValueError, match="positive integer"):
        hook.get_record("cdrs", bad)
    with pytest.raises(ValueError, match="positive integer"):
        hook.delete_records("monitors", [1, bad])
    with pytest.raises(ValueError, match="positive integer"):
        hook.download("download_cdr_pcap", bad, io.BytesIO())
    assert api_requests() == []
