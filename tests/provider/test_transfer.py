"""VoIPstudioToS3Operator: sandbox records into a SeaweedFS bucket, through Airflow connections."""

from __future__ import annotations

import hashlib
import json
import uuid

import pytest
from airflow.providers.common.compat.sdk import AirflowException
from voipstudio_provider.engine.archive.writer import verify_archive
from voipstudio_provider.engine.layout import ARCHIVE_KINDS, sidecar_key
from voipstudio_provider.operators.voipstudio import VoIPstudioListOperator
from voipstudio_provider.transfers.voipstudio_to_s3 import VoIPstudioToS3Operator


@pytest.fixture(autouse=True)
def connections(sandbox, seaweed, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_VOIPSTUDIO_DEFAULT", sandbox.airflow_conn_json())
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", seaweed.airflow_conn_uri())


@pytest.fixture
def prefix() -> str:
    return f"transfer-{uuid.uuid4().hex[:8]}"


def truth(sandbox, resource: str) -> list[dict]:
    return sandbox.control("GET", f"records/{resource}")["data"]


def test_listed_monitors_are_archived_and_verified(sandbox, s3, bucket, prefix):
    monitors = sorted(truth(sandbox, "monitors"), key=lambda m: m["size"])[:4]
    listed = VoIPstudioListOperator(
        task_id="list",
        resource="monitors",
        filters=[{"property": "size", "operator": "lte", "value": monitors[-1]["size"]}],
    ).execute(context={})
    transfer = VoIPstudioToS3Operator(
        task_id="archive",
        kind="monitors",
        records=listed,
        bucket=bucket,
        prefix=prefix,
        max_streams=2,
    )

    summary = transfer.execute(context={})

    assert summary == {
        "kind": "monitors",
        "archived": len(listed),
        "skipped": 0,
        "failed": 0,
        "bytes": sum(m["size"] for m in listed),
        "failed_ids": [],
    }
    target = transfer.target()
    for monitor in listed:
        check = verify_archive(s3, ARCHIVE_KINDS["monitors"], monitor, target)
        assert check.ok, check.reason
        stored = s3.get_object(Bucket=bucket, Key=check.key)
        assert hashlib.sha256(stored["Body"].read()).hexdigest() == stored["Metadata"]["sha256"]
    json.dumps(summary)  # small and serialisable: fit for XCom


def test_record_ids_are_fetched_first_and_a_rerun_skips_them(sandbox, s3, bucket, prefix):
    voicemessages = truth(sandbox, "voicemessages")[:3]
    ids = [v["id"] for v in voicemessages]
    kind = ARCHIVE_KINDS["voicemessages"]

    def run() -> dict:
        return VoIPstudioToS3Operator(
            task_id="archive", kind="voicemessages", record_ids=ids, bucket=bucket, prefix=prefix
        ).execute(context={})

    assert run()["archived"] == 3
    sandbox.control("DELETE", "requests")
    assert run()["skipped"] == 3
    downloads = [
        e for e in sandbox.control("GET", "requests")["data"] if e["path"].endswith(".mp3")
    ]
    assert downloads == []
    for voicemessage in voicemessages:
        sidecar = s3.get_object(Bucket=bucket, Key=sidecar_key(prefix, kind, voicemessage))
        assert json.loads(sidecar["Body"].read())["id"] == voicemessage["id"]


def test_failures_are_named_after_the_others_are_archived(sandbox, s3, bucket, prefix):
    pcaps = [c["id"] for c in truth(sandbox, "cdrs")[:4]]
    broken = pcaps[1]
    sandbox.control(
        "PUT",
        "faults",
        {
            "seed": 1,
            "rules": [
                {"path": f"*/cdrs/{broken}.pcap", "methods": ["GET"], "kind": "drop", "rate": 1}
            ],
        },
    )
    transfer = VoIPstudioToS3Operator(
        task_id="archive",
        kind="cdr_pcaps",
        record_ids=[*pcaps, 99999999],
        bucket=bucket,
        prefix=prefix,
        max_streams=2,
    )
    transfer.voipstudio_hook.backoff_base = transfer.voipstudio_hook.backoff_cap = 0.01

    with pytest.raises(AirflowException) as raised:
        transfer.execute(context={})

    message = str(raised.value)
    assert f"2 of 5 cdr_pcaps failed to archive: ids 99999999, {broken}" in message
    assert sandbox.token not in message
    keys = [
        o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/").get("Contents", [])
    ]
    assert sorted(k.rsplit("/", 1)[1] for k in keys) == sorted(
        f"{i}.pcap" for i in pcaps if i != broken
    )


def test_unknown_kind_and_ambiguous_input_are_refused(bucket):
    with pytest.raises(ValueError, match="either records or record_ids"):
        VoIPstudioToS3Operator(task_id="a", kind="monitors", bucket=bucket)
    with pytest.raises(ValueError, match="unknown kind"):
        VoIPstudioToS3Operator(task_id="a", kind="faxes", records=[], bucket=bucket).execute(
            context={}
        )


def test_a_recording_over_max_size_fails_its_record_and_stores_nothing(s3, sandbox, bucket, prefix):
    monitors = sorted(truth(sandbox, "monitors"), key=lambda m: m["size"])
    small = monitors[0]
    large = next(m for m in monitors if m["size"] > small["size"])
    transfer = VoIPstudioToS3Operator(
        task_id="archive",
        kind="monitors",
        records=[small, large],
        bucket=bucket,
        prefix=prefix,
        max_size=str(large["size"] - 1),  # rendered templates arrive as strings
    )

    with pytest.raises(AirflowException, match=f"ids {large['id']}; first error: download: "):
        transfer.execute(context={})

    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
    assert len(keys) == 2 and all(f"/{small['id']}." in k for k in keys)
    assert transfer.target().max_size == large["size"] - 1
