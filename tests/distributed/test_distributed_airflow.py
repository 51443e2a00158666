"""The DAGs on a real distributed Airflow: CeleryExecutor, two workers, PostgreSQL, Redis.

Driven only through the public REST API v2, as an operator's script would: check that
every DAG parses, archive the recordings of a window, then apply a retention policy and
check the sandbox and the bucket against each other.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

import pytest
from voipstudio_provider.endpoints import RESOURCES
from voipstudio_provider.engine.layout import (
    ARCHIVE_KINDS,
    archive_key,
    audit_key,
    parse_api_datetime,
    sidecar_key,
)

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

DAG_IDS = {
    "voipstudio_archive_recordings",
    "voipstudio_archive_pcaps",
    "voipstudio_export_user_cdrs",
    "voipstudio_retention",
    "voipstudio_compliance_purge",
}
PURGE_PARAMS = {
    "dry_run", "resources", "older_than", "phone_number", "require_archive", "approval_hours"
}  # fmt: skip
RECORDING_KINDS = (ARCHIVE_KINDS["monitors"], ARCHIVE_KINDS["voicemessages"])
# The archive window: recent enough to leave older recordings unarchived, so that
# retention has old records it must keep (no archived copy) as well as ones it deletes.
WINDOW_DAYS = 60
RETENTION_DAYS = 30


def recorded_at(resource: str, row: dict) -> dt.datetime:
    return parse_api_datetime(row[RESOURCES[resource].date_field])


def sandbox_rows(sandbox, resource: str) -> list[dict]:
    return sandbox.control("GET", f"records/{resource}")["data"]


def bucket_keys(s3, bucket: str, prefix: str) -> set[str]:
    keys: set[str] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.update(item["Key"] for item in page.get("Contents", []))
    return keys


def run_to_completion(cluster, dag_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """Trigger ``dag_id`` and wait; on failure, the assertion shows the failed tasks' logs."""
    run_id = cluster.trigger(dag_id, body)
    run = cluster.wait_for_run(dag_id, run_id, timeout=600)
    if run["state"] != "success":
        failed = [ti for ti in run["task_instances"] if ti["state"] not in ("success", None)]
        logs = "\n".join(
            f"--- {ti['task_id']}[{ti.get('map_index')}] {ti['state']} ---\n"
            + cluster.task_log(dag_id, run_id, ti)[-4000:]
            for ti in failed
        )
        pytest.fail(f"{dag_id} run {run_id} ended {run['state']}:\n{logs}")
    return run


@pytest.fixture(scope="module")
def archive_window(sandbox_server) -> tuple[dt.datetime, dt.datetime]:
    sandbox_server.control("POST", "reset")
    # The scheduler refuses a logical date in the future; the seed ends before now.
    until = dt.datetime.now(dt.UTC).replace(microsecond=0)
    return until - dt.timedelta(days=WINDOW_DAYS), until


def test_every_dag_parses_and_the_purge_offers_its_params(airflow_cluster):
    dags = airflow_cluster.wait_for_dags(DAG_IDS)
    assert DAG_IDS <= dags.keys()
    assert airflow_cluster.api("GET", "/api/v2/importErrors")["total_entries"] == 0
    details = airflow_cluster.api("GET", "/api/v2/dags/voipstudio_compliance_purge/details")
    assert PURGE_PARAMS <= set(details["params"]), sorted(details["params"])
    pools = airflow_cluster.api("GET", "/api/v2/pools/voipstudio_api")
    assert pools["slots"] == 4


def test_archive_recordings_copies_every_recording_of_its_window(
    airflow_cluster, sandbox_server, seaweed, archive_bucket, archive_prefix, archive_window
):
    since, until = archive_window
    airflow_cluster.wait_for_dags({"voipstudio_archive_recordings"})
    run = run_to_completion(
        airflow_cluster,
        "voipstudio_archive_recordings",
        {
            "logical_date": until.isoformat(),
            "data_interval_start": since.isoformat(),
            "data_interval_end": until.isoformat(),
            # Small batches, so that the mapped tasks spread over both workers.
            "conf": {"lookback_hours": 0, "batch_size": 8, "max_streams": 2},
        },
    )
    batches = [ti for ti in run["task_instances"] if ti["task_id"] == "archive_recording_batch"]
    assert len(batches) > 2 and all(ti["state"] == "success" for ti in batches)

    s3 = seaweed.client()
    for kind in RECORDING_KINDS:
        rows = sandbox_rows(sandbox_server, kind.resource)
        in_window = [row for row in rows if since <= recorded_at(kind.resource, row) < until]
        assert in_window, f"the seed has no {kind.resource} in the window"
        expected = {archive_key(archive_prefix, kind, row) for row in in_window}
        expected |= {sidecar_key(archive_prefix, kind, row) for row in in_window}
        assert bucket_keys(s3, archive_bucket, f"{archive_prefix}/{kind.folder}/") == expected

        for row in in_window:
            stored = s3.get_object(
                Bucket=archive_bucket, Key=archive_key(archive_prefix, kind, row)
            )
            body = stored["Body"].read()
            assert stored["Metadata"]["sha256"] == hashlib.sha256(body).hexdigest()
            if "size" in row:
                assert len(body) == row["size"]
            sidecar = json.loads(
                s3.get_object(Bucket=archive_bucket, Key=sidecar_key(archive_prefix, kind, row))[
                    "Body"
                ].read()
            )
            assert sidecar["id"] == row["id"]
            assert sidecar["sha256"] == stored["Metadata"]["sha256"]


def test_retention_deletes_exactly_the_archived_records_past_their_policy(
    airflow_cluster, sandbox_server, seaweed, archive_bucket, archive_prefix, archive_window
):
    since, until = archive_window
    cutoff = until - dt.timedelta(days=RETENTION_DAYS)
    before = {
        kind.resource: sandbox_rows(sandbox_server, kind.resource) for kind in RECORDING_KINDS
    }
    archived = {
        resource: {row["id"] for row in rows if since <= recorded_at(resource, row) < until}
        for resource, rows in before.items()
    }
    expired = {
        resource: {row["id"] for row in rows if recorded_at(resource, row) < cutoff}
        for resource, rows in before.items()
    }
    expired_and_archived = {r: expired[r] & archived[r] for r in before}
    assert all(expired_and_archived.values()), "the window holds nothing past retention"
    assert all(expired[r] - archived[r] for r in before), "nothing old is left unarchived"
    held = min(expired_and_archived["monitors"])

    # As an operator would: the policy and the legal hold are Variables set through the API.
    policy = {"monitors": RETENTION_DAYS, "voicemessages": RETENTION_DAYS, "chatmsgs": None}
    hold = {"ids": {"monitors": [held]}, "numbers": []}
    for key, value in (("voipstudio_retention_policy", policy), ("voipstudio_legal_hold", hold)):
        airflow_cluster.api("POST", "/api/v2/variables", {"key": key, "value": json.dumps(value)})

    airflow_cluster.wait_for_dags({"voipstudio_retention"})
    run = run_to_completion(
        airflow_cluster,
        "voipstudio_retention",
        {
            "logical_date": until.isoformat(),
            "data_interval_start": (until - dt.timedelta(days=1)).isoformat(),
            "data_interval_end": until.isoformat(),
            "conf": {},
        },
    )

    after = {r: {row["id"] for row in sandbox_rows(sandbox_server, r)} for r in before}
    deleted = {r: {row["id"] for row in before[r]} - after[r] for r in before}
    assert deleted["monitors"] == expired_and_archived["monitors"] - {held}
    assert deleted["voicemessages"] == expired_and_archived["voicemessages"]
    assert held in after["monitors"]
    for resource in before:  # old but never archived: kept
        assert expired[resource] - archived[resource] <= after[resource]

    # The archive keeps every copy, and the audit log names each deletion and the hold.
    s3 = seaweed.client()
    for kind in RECORDING_KINDS:
        stored = bucket_keys(s3, archive_bucket, f"{archive_prefix}/{kind.folder}/")
        for row in before[kind.resource]:
            if row["id"] in archived[kind.resource]:
                assert archive_key(archive_prefix, kind, row) in stored
    key = audit_key(archive_prefix, "voipstudio_retention", run["dag_run_id"])
    body = s3.get_object(Bucket=archive_bucket, Key=key)["Body"].read().decode()
    lines = [json.loads(line) for line in body.splitlines() if line.strip()]
    for resource in before:
        logged = {
            ln["id"] for ln in lines if ln["resource"] == resource and ln["action"] == "deleted"
        }
        assert logged == deleted[resource], resource
    held_lines = [ln for ln in lines if ln["resource"] == "monitors" and ln["id"] == held]
    assert [(ln["action"], ln["reason"]) for ln in held_lines] == [("skipped", "legal_hold_id")]


def test_a_run_without_a_logical_date_succeeds_and_notes_what_it_did(
    airflow_cluster, sandbox_server, archive_window
):
    """A dry-run purge triggered with ``"logical_date": null``; its note arrives through
    the REST API with the ``airflow_api`` connection, as in a deployment."""
    since, _ = archive_window
    airflow_cluster.api(
        "POST",
        "/api/v2/connections",
        {
            "connection_id": "airflow_api",
            "conn_type": "http",
            "host": airflow_cluster.api_url,
            "login": "ops",
            "password": airflow_cluster.password,
        },
    )
    before = {r: sandbox_rows(sandbox_server, r) for r in ("monitors", "voicemessages")}
    older_than = since.date().isoformat()
    run = run_to_completion(
        airflow_cluster,
        "voipstudio_compliance_purge",
        {"logical_date": None, "conf": {"older_than": older_than, "dry_run": True}},
    )
    assert run["logical_date"] is None
    assert {r: sandbox_rows(sandbox_server, r) for r in before} == before
    states = {(ti["task_id"], ti["map_index"]): ti["state"] for ti in run["task_instances"]}
    assert states[("mask_matching_cdrs", -1)] == "skipped"
    assert states[("set_run_note", -1)] == "success"
    stored = airflow_cluster.api(
        "GET", f"/api/v2/dags/voipstudio_compliance_purge/dagRuns/{run['dag_run_id']}"
    )
    assert stored["note"].startswith("DRY RUN: ") and " planned, " in stored["note"]


def test_the_connection_test_works_through_the_rest_api_but_not_with_port_zero(
    airflow_cluster, sandbox_server
):
    stored = {
        "connection_id": "voipstudio_default",
        "conn_type": "voipstudio",
        "host": sandbox_server.base_url,
    }
    answer = airflow_cluster.api("POST", "/api/v2/connections/test", stored)
    assert answer["status"] is True, answer
    assert "Pong" in answer["message"]
    # What the UI's Test button sends for a connection without a port: port 0 and the
    # masked password.
    with pytest.raises(RuntimeError, match="host or port to test differs"):
        airflow_cluster.api(
            "POST", "/api/v2/connections/test", {**stored, "port": 0, "password": "***"}
        )
