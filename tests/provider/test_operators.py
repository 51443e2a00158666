"""Every History endpoint through its operator, against the sandbox."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from airflow.providers.common.compat.sdk import AirflowException
from voipstudio_provider.endpoints import (
    ENDPOINTS,
    RESOURCES,
    Shape,
    endpoints_of,
    parse_api_datetime,
)
from voipstudio_provider.operators.voipstudio import (
    VoIPstudioDeleteAllOperator,
    VoIPstudioDeleteOperator,
    VoIPstudioDownloadOperator,
    VoIPstudioGetOperator,
    VoIPstudioListOperator,
    VoIPstudioUpdateOperator,
    hook_method,
    operator_for,
)


@pytest.fixture(autouse=True)
def voipstudio_connection(sandbox, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_VOIPSTUDIO_DEFAULT", sandbox.airflow_conn_json())


def truth(sandbox, resource: str) -> list[dict]:
    return sandbox.control("GET", f"records/{resource}")["data"]


def of_shape(*shapes: Shape) -> list:
    return [pytest.param(e, id=e.operation) for e in ENDPOINTS if e.shape in shapes]


def test_every_endpoint_has_an_operator_and_a_hook_method():
    from voipstudio_provider.hooks.voipstudio import VoIPstudioHook
    from voipstudio_provider.operators import voipstudio as operators

    for ep in ENDPOINTS:
        assert hasattr(operators, operator_for(ep)), ep.operation
        assert callable(getattr(VoIPstudioHook, hook_method(ep))), ep.operation


@pytest.mark.parametrize("ep", of_shape(Shape.LIST))
def test_list_operator(sandbox, ep):
    op = VoIPstudioListOperator(task_id="list", operation=ep.operation, page_size=7)

    records = op.execute(context={})

    ids = [r["id"] for r in records]
    assert ids == sorted(set(ids))
    if ep.operation == f"list_{ep.resource}":
        assert ids == [r["id"] for r in truth(sandbox, ep.resource)]
    assert all(set(RESOURCES[ep.resource].fields) <= set(r) for r in records)


def test_list_operator_window_and_filters_from_rendered_strings(sandbox):
    monitors = truth(sandbox, "monitors")
    times = sorted(parse_api_datetime(m["timestamp"]) for m in monitors)
    since, until = times[1], times[-2]
    op = VoIPstudioListOperator(
        task_id="list",
        resource="monitors",
        since=since.isoformat(),
        until=until.strftime("%Y-%m-%d %H:%M:%S"),
        filters='[{"property": "size", "operator": "gt", "value": 0}]',
    )

    records = op.execute(context={})

    expected = [m["id"] for m in monitors if since <= parse_api_datetime(m["timestamp"]) < until]
    assert [r["id"] for r in records] == expected
    assert expected


def test_list_operator_refuses_to_push_more_than_max_records(sandbox):
    op = VoIPstudioListOperator(task_id="list", resource="cdrs", max_records=3)
    with pytest.raises(AirflowException, match="more than 3 cdrs records"):
        op.execute(context={})


def test_list_operator_refuses_an_endpoint_of_another_shape():
    op = VoIPstudioListOperator(task_id="list", operation="get_cdr")
    with pytest.raises(ValueError, match="list"):
        op.execute(context={})


@pytest.mark.parametrize("ep", of_shape(Shape.GET, Shape.DICTIONARY))
def test_get_operator(sandbox, ep):
    record = truth(sandbox, ep.resource)[0]
    op = VoIPstudioGetOperator(
        task_id="get", operation=ep.operation, record_id=str(record["id"]) if ep.takes_id else None
    )

    answer = op.execute(context={})

    if ep.shape is Shape.DICTIONARY:
        assert isinstance(answer, dict) and answer
    elif ep.operation == "get_cdr_notes":
        assert isinstance(answer, list)
        assert all(note["cdr_id"] == record["id"] for note in answer)
    else:
        assert answer == record


def test_get_operator_needs_a_record_id():
    with pytest.raises(ValueError, match="needs a record_id"):
        VoIPstudioGetOperator(task_id="get", operation="get_monitor").execute(context={})


@pytest.mark.parametrize("ep", of_shape(Shape.DOWNLOAD))
def test_download_operator(sandbox, tmp_path, ep):
    if ep.operation == "export_user_cdrs_csv":
        sandbox.control("PUT", "settings", {"csv_export": "stream"})  # 202 otherwise
        record_id = next(c["user_id"] for c in truth(sandbox, "cdrs") if c.get("user_id"))
    else:
        record_id = truth(sandbox, ep.resource)[0]["id"]
    path = tmp_path / "out" / f"{record_id}.{ep.suffix}"
    op = VoIPstudioDownloadOperator(
        task_id="download", operation=ep.operation, record_id=record_id, path=path
    )

    result = op.execute(context={})

    body = path.read_bytes()
    assert body
    assert result["size"] == len(body)
    assert result["sha256"] == hashlib.sha256(body).hexdigest()
    assert result["content_type"] == ep.content_type
    assert list(path.parent.iterdir()) == [path]  # no ".part" left behind


def test_download_operator_keeps_no_partial_file(sandbox, tmp_path):
    monitor = truth(sandbox, "monitors")[0]
    sandbox.control(
        "PUT",
        "faults",
        {
            "seed": 1,
            "rules": [{"path": "*.mp3", "methods": ["GET"], "kind": "truncate", "rate": 1}],
        },
    )
    path = tmp_path / "m.mp3"
    op = VoIPstudioDownloadOperator(
        task_id="download",
        operation="download_monitor_mp3",
        record_id=monitor["id"],
        path=str(path),
        expected_size=monitor["size"],
    )
    op.hook.max_attempts = 2

    with pytest.raises(Exception, match="bytes"):
        op.execute(context={})
    assert list(tmp_path.iterdir()) == []


def test_download_operator_exports_one_users_day_of_cdrs(sandbox, tmp_path):
    sandbox.control("PUT", "settings", {"csv_export": "stream"})
    cdr = truth(sandbox, "cdrs")[0]
    day = parse_api_datetime(cdr["calldate"]).replace(hour=0, minute=0, second=0)
    same_day = [
        c
        for c in truth(sandbox, "cdrs")
        if c["user_id"] == cdr["user_id"] and c["calldate"].startswith(day.strftime("%Y-%m-%d"))
    ]
    path = tmp_path / "cdrs.csv"
    op = VoIPstudioDownloadOperator(
        task_id="csv",
        operation="export_user_cdrs_csv",
        record_id=cdr["user_id"],
        path=path,
        since=day.isoformat(),
        until=(day + dt.timedelta(days=1)).isoformat(),
    )

    result = op.execute(context={})

    lines = path.read_text().strip().splitlines()
    assert len(lines) == 1 + len(same_day)  # the header row, then one row per call
    assert result["content_type"] == "text/csv" and result["size"] == path.stat().st_size


def test_download_operator_returns_an_accepted_export_job_and_writes_no_file(sandbox, tmp_path):
    user_id = truth(sandbox, "cdrs")[0]["user_id"]
    path = tmp_path / "out" / "cdrs.csv"
    op = VoIPstudioDownloadOperator(
        task_id="csv", operation="export_user_cdrs_csv", record_id=user_id, path=path
    )

    result = op.execute(context={})

    assert result["export_job"] is True and result["path"] is None
    assert result["status_code"] == 202
    assert result["body"]["data"]["user_id"] == user_id
    assert list(path.parent.iterdir()) == []  # neither the file nor a ".part"


@pytest.mark.parametrize("ep", of_shape(Shape.DELETE_IDS))
def test_delete_operator(sandbox, ep):
    before = [r["id"] for r in truth(sandbox, ep.resource)]
    doomed = before[:2]
    op = VoIPstudioDeleteOperator(
        task_id="delete", resource=ep.resource, ids=",".join(map(str, doomed))
    )

    assert op.execute(context={}) == doomed

    assert [r["id"] for r in truth(sandbox, ep.resource)] == before[2:]


@pytest.mark.parametrize("ep", of_shape(Shape.DELETE_ALL))
def test_delete_all_operator_needs_the_phrase(sandbox, ep):
    before = len(truth(sandbox, ep.resource))
    wrong = VoIPstudioDeleteAllOperator(task_id="wipe", resource=ep.resource, confirm="yes")
    with pytest.raises(ValueError, match=f"DELETE ALL {ep.resource}"):
        wrong.execute(context={})
    assert len(truth(sandbox, ep.resource)) == before

    op = VoIPstudioDeleteAllOperator(
        task_id="wipe", resource=ep.resource, confirm=f"DELETE ALL {ep.resource}"
    )

    assert op.execute(context={}) == ep.success_status
    if ep.success_status == 204:
        assert truth(sandbox, ep.resource) == []


@pytest.mark.parametrize("ep", of_shape(Shape.UPDATE))
def test_update_operator(sandbox, ep):
    record = truth(sandbox, ep.resource)[0]
    change = {"folder": "Old"} if ep.resource == "voicemessages" else {"info": "reviewed"}
    op = VoIPstudioUpdateOperator(
        task_id="update", resource=ep.resource, rows=[{"id": record["id"], **change}]
    )

    op.execute(context={})

    after = next(r for r in truth(sandbox, ep.resource) if r["id"] == record["id"])
    assert after == {**record, **change}


def test_update_operator_refuses_rows_without_id(sandbox):
    op = VoIPstudioUpdateOperator(task_id="update", resource="cdrs", rows='[{"info": "x"}]')
    with pytest.raises(ValueError, match="id"):
        op.execute(context={})


@pytest.mark.parametrize("ep", of_shape(Shape.DELETE_ALL))
def test_generic_operators_never_send_a_whole_collection_delete(sandbox, ep):
    before = sandbox.control("GET", "stats")
    with pytest.raises(ValueError):
        VoIPstudioGetOperator(task_id="get", operation=ep.operation).execute(context={})
    with pytest.raises(ValueError):
        VoIPstudioListOperator(task_id="list", operation=ep.operation).execute(context={})
    if endpoints_of(ep.resource, Shape.DELETE_IDS):
        for empty in ("", "[]", " , ", []):
            op = VoIPstudioDeleteOperator(task_id="delete", resource=ep.resource, ids=empty)
            assert op.execute(context={}) == []
        for wrong in ("all", "0", "-1"):
            op = VoIPstudioDeleteOperator(task_id="delete", resource=ep.resource, ids=wrong)
            with pytest.raises(ValueError):
                op.execute(context={})
    deletes = [e for e in sandbox.control("GET", "requests")["data"] if e["method"] == "DELETE"]
    assert deletes == []
    assert sandbox.control("GET", "stats") == before
