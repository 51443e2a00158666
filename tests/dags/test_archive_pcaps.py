"""``voipstudio_archive_pcaps`` run by Airflow against the sandbox and SeaweedFS."""

from __future__ import annotations

import datetime as dt
import hashlib
import io

import dpkt
import pytest
import requests
from voipstudio_provider.endpoints import parse_api_datetime
from voipstudio_provider.engine.layout import ARCHIVE_KINDS, archive_key

from tests.dags.conftest import load_dag

pytestmark = pytest.mark.slow

DAG_ID = "voipstudio_archive_pcaps"
# The daily run whose interval ends at the next 03:00 UTC: its window holds the newest calls,
# so nothing lies above the high-water mark it starts; the look-back widens it to a week.
_NOW = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
UNTIL = _NOW.replace(hour=3) + dt.timedelta(days=1 if _NOW.hour >= 3 else 0)
LOGICAL_DATE = UNTIL + dt.timedelta(hours=1)
LOOKBACK_HOURS = 6 * 24
SINCE = UNTIL - dt.timedelta(hours=24 + LOOKBACK_HOURS)
CONF = {"lookback_hours": LOOKBACK_HOURS, "batch_size": 5, "max_streams": 2}
DATE_FIELDS = {"cdrs": "calldate", "msdrs": "created_at"}


def records_in_window(sandbox, resource: str) -> list[dict]:
    rows = sandbox.control("GET", f"records/{resource}")["data"]
    return [r for r in rows if SINCE <= parse_api_datetime(r[DATE_FIELDS[resource]]) < UNTIL]


def expected_keys(sandbox, prefix: str, kinds: tuple[str, ...]) -> set[str]:
    return {
        archive_key(prefix, ARCHIVE_KINDS[name], record)
        for name in kinds
        for record in records_in_window(sandbox, ARCHIVE_KINDS[name].resource)
    }


def binary_gets(sandbox) -> list[str]:
    log = sandbox.control("GET", "requests")["data"]
    return [r["path"] for r in log if r["path"].endswith((".pcap", ".trace"))]


def run_pcaps(conf: dict | None = None, batch_retries: int = 0):
    dag = load_dag(DAG_ID)
    for task in dag.tasks:  # no retries unless asked: a broken run fails at once
        if task.task_id == "archive_pcap_batch":
            task.partial_kwargs["retries"] = batch_retries
            task.partial_kwargs["retry_delay"] = dt.timedelta(seconds=0)
        else:
            task.retries = 0
    return dag.test(logical_date=LOGICAL_DATE, run_conf={**CONF, **(conf or {})})


def assert_archived(env, kinds: tuple[str, ...]) -> set[str]:
    s3 = env.s3()
    expected = expected_keys(env.sandbox, env.prefix, kinds)
    assert len(expected) > len(kinds), "the window holds too few calls: widen the look-back"
    assert set(env.keys("pcaps/")) == expected
    for key in expected:
        obj = s3.get_object(Bucket=env.bucket, Key=key)
        body = obj["Body"].read()
        assert obj["Metadata"]["sha256"] == hashlib.sha256(body).hexdigest()
        assert obj["Metadata"]["size"] == str(len(body))
        if key.endswith(".pcap"):
            assert obj["ContentType"] == "application/vnd.tcpdump.pcap"
            packets = list(dpkt.pcap.Reader(io.BytesIO(body)))
            assert packets, f"{key} holds no packets"
        else:
            assert obj["ContentType"].startswith("text/plain")
            assert b"SIP/2.0" in body
    return expected


def test_archives_cdr_and_msdr_pcaps_of_the_window(airflow_env, capfd, caplog):
    dag_run = run_pcaps()
    assert dag_run.state == "success"
    keys = assert_archived(airflow_env, ("cdr_pcaps", "msdr_pcaps"))
    assert {k.split("/")[2] for k in keys} == {"cdrs", "msdrs"}

    # The archived bytes are the API's bytes.
    key = sorted(keys)[0]  # {prefix}/pcaps/{resource}/date=.../{id}.pcap
    resource, file_name = key.split("/")[2], key.rsplit("/", 1)[1]
    api = requests.get(
        f"{airflow_env.sandbox.base_url}/{resource}/{file_name}",
        headers={"X-Auth-Token": airflow_env.sandbox.token},
        timeout=30,
    )
    stored = airflow_env.s3().get_object(Bucket=airflow_env.bucket, Key=key)["Body"].read()
    assert api.status_code == 200 and api.content == stored

    out, err = capfd.readouterr()
    out += caplog.text  # task logs reach stdout or the logging capture
    assert airflow_env.sandbox.token not in out + err


def test_traces_option_adds_sip_traces_and_a_rerun_downloads_nothing(airflow_env, capfd, caplog):
    kinds = ("cdr_pcaps", "msdr_pcaps", "cdr_traces", "msdr_traces")
    rules = [
        {"path": "/v1.1/voipstudio/*", "methods": ["GET"], "kind": kind, "rate": 0.05}
        for kind in ("500", "drop", "truncate", "429")
    ]
    airflow_env.sandbox.control("PUT", "faults", {"seed": 5, "rules": rules})
    # A download can meet more faults in a row than the hook tries: the batch retry, as in
    # production, fetches only what is still missing.
    dag_run = run_pcaps({"include_traces": True}, batch_retries=1)
    airflow_env.sandbox.control("DELETE", "faults")
    assert dag_run.state == "success"
    keys = assert_archived(airflow_env, kinds)
    assert any(k.endswith(".trace") for k in keys)
    assert not airflow_env.s3().list_multipart_uploads(Bucket=airflow_env.bucket).get("Uploads")

    airflow_env.sandbox.control("DELETE", "requests")
    again = run_pcaps({"include_traces": True})
    assert again.state == "success"
    assert binary_gets(airflow_env.sandbox) == []
    out, err = capfd.readouterr()
    out += caplog.text  # task logs reach stdout or the logging capture
    assert f"{len(keys)} skipped (already verified)" in out + err
    assert airflow_env.sandbox.token not in out + err
