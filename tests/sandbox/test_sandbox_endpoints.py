"""Every endpoint of the table answers with its documented status, shape and content type."""

from __future__ import annotations

import time

import pytest
from voipstudio_provider.endpoints import AUTH_ENDPOINTS, ENDPOINTS, Endpoint, Shape

from tests.sandbox.sandbox_api import Api, records

_BODIES = {
    "update_cdrs": lambda row: [{"id": row["id"], "info": "checked"}],
    "update_voicemessages": lambda row: [{"id": row["id"], "folder": "Old"}],
}


def _target(sandbox, ep: Endpoint) -> dict:
    """An existing record the endpoint can act on (a user for the CSV export)."""
    resource = "users" if ep.path.startswith("/users/") else ep.resource
    rows = records(sandbox, resource)
    if resource == "users":
        return next(row for row in rows if not row["is_root"])
    return rows[len(rows) // 2]


def _wait_until_empty(sandbox, resource: str) -> list:
    for _ in range(100):
        rows = records(sandbox, resource)
        if not rows:
            break
        time.sleep(0.1)
    return rows


@pytest.mark.parametrize("ep", ENDPOINTS, ids=lambda ep: ep.operation)
def test_endpoint_answers_as_documented(sandbox, api: Api, ep: Endpoint):
    row = _target(sandbox, ep)
    if ep.suffix == "csv":  # by default an export job (202); see test_sandbox_bodies
        sandbox.control("PUT", "settings", {"csv_export": "stream"})
    path = ep.path.format(id=row["id"], ids=row["id"])
    body = _BODIES[ep.operation](row) if ep.shape == Shape.UPDATE else None
    response = api.request(ep.method, path, json=body)

    assert response.status_code == ep.success_status, response.text
    if ep.success_status == 204:
        assert response.content == b""
    else:
        assert response.headers["content-type"].split(";")[0] == ep.content_type
    if ep.shape == Shape.LIST:
        payload = response.json()
        assert isinstance(payload["data"], list) and isinstance(payload["total"], int)
        assert payload["total"] >= len(payload["data"]) > 0
    elif ep.shape == Shape.GET and ep.path.endswith("/notes"):
        payload = response.json()
        assert payload["total"] == len(payload["data"])
        assert all(note["cdr_id"] == row["id"] for note in payload["data"])
    elif ep.shape == Shape.GET:
        assert response.json() == {"data": row, "links": {}}
    elif ep.shape == Shape.DOWNLOAD:
        assert "accept-ranges" not in response.headers
        assert "content-disposition" not in response.headers
        assert len(response.content) > 0
        if ep.suffix != "csv":
            assert int(response.headers["content-length"]) == len(response.content)
    elif ep.shape == Shape.DICTIONARY:
        dictionaries = response.json()["data"]
        assert dictionaries and all(isinstance(v, dict) for v in dictionaries.values())
    elif ep.shape == Shape.UPDATE:
        changed = {r["id"]: r for r in records(sandbox, ep.resource)}[row["id"]]
        assert {k: changed[k] for k in body[0]} == body[0]
    elif ep.shape == Shape.DELETE_IDS:
        assert row["id"] not in {r["id"] for r in records(sandbox, ep.resource)}
    elif ep.shape == Shape.DELETE_ALL:
        assert _wait_until_empty(sandbox, ep.resource) == []


@pytest.mark.parametrize("ep", ENDPOINTS, ids=lambda ep: ep.operation)
def test_endpoint_refuses_a_missing_token(sandbox, ep: Endpoint):
    response = Api(sandbox).request(ep.method, ep.path.format(id=1, ids=1), json=[{"id": 1}])
    assert response.status_code == 401
    assert response.json()["errors"][0]["message"]
    assert records(sandbox, "cdrs"), "an unauthenticated request changed nothing"


@pytest.mark.parametrize(
    "ep",
    [e for e in ENDPOINTS if e.takes_id and 404 in e.error_statuses],
    ids=lambda ep: ep.operation,
)
def test_endpoint_by_id_answers_404_and_400(api: Api, ep: Endpoint):
    missing = api.request(ep.method, ep.path.format(id=99_999_999))
    assert missing.status_code == 404
    assert missing.json()["message"]
    assert api.request(ep.method, ep.path.format(id="abc")).status_code == 400


def test_both_api_versions_serve_the_same_data(sandbox, api: Api):
    v11 = api.get("/cdrs", params={"limit": 5}).json()
    v12 = api.session.get(sandbox.root_url + "/v1.2/voipstudio/cdrs", params={"limit": 5})
    assert v12.json() == v11


def test_unknown_path_is_a_json_404(api: Api):
    response = api.get("/nothing-here")
    assert response.status_code == 404
    assert response.json()["errors"][0]["message"]


def test_auth_endpoints_are_served():
    assert {e.operation for e in AUTH_ENDPOINTS} == {"ping", "me", "login"}


def test_ping_and_me(api: Api):
    assert api.get("/ping").json() == {"data": {"response": "Pong"}}
    me = api.get("/me").json()["data"]
    assert me["is_root"] is True and me["id"] == 1001
