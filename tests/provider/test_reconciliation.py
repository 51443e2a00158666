"""Reconciliation, manifests and the verifier against the sandbox and SeaweedFS."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path

import pytest
from voipstudio_provider.engine.archive.batches import plan_batches
from voipstudio_provider.engine.archive.writer import ArchiveTarget
from voipstudio_provider.engine.evidence.audit import AuditLog
from voipstudio_provider.engine.layout import (
    ARCHIVE_KINDS,
    archive_key,
    audit_key,
    manifest_key,
    parse_api_datetime,
)
from voipstudio_provider.tasks import archive as archive_steps
from voipstudio_provider.tasks.reconcile import run_reconciliation
from voipstudio_provider.verify_manifest import main as verify_main
from voipstudio_provider.verify_manifest import verify

pytestmark = pytest.mark.slow

TODAY = dt.datetime.now(dt.UTC).date()
FIRST, LAST = TODAY - dt.timedelta(days=42), TODAY - dt.timedelta(days=4)
RESOURCES = ("monitors", "voicemessages")
DATE_FIELDS = {"monitors": "timestamp", "voicemessages": "origtime"}


@pytest.fixture
def target(hook, seaweed, monkeypatch) -> ArchiveTarget:
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", seaweed.airflow_conn_uri())
    bucket = f"reconcile-{uuid.uuid4().hex[:10]}"
    seaweed.client().create_bucket(Bucket=bucket)
    return ArchiveTarget(bucket=bucket, prefix="vs")


def at(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), dt.UTC)


def archive_range(hook, target, first: dt.date, last: dt.date) -> int:
    """Archive the recordings and voicemail of the days as the archive DAG's batches do."""
    since, until = at(first), at(last + dt.timedelta(days=1))
    batches = plan_batches(hook, RESOURCES, since, until, 10)
    return sum(archive_steps.archive_one_batch(b, target)["archived"] for b in batches)


def reconcile(hook, s3, target, rearchive: bool = False) -> dict:
    def archive(batch):
        return archive_steps.archive_one_batch(batch, target)

    return run_reconciliation(
        hook,
        s3,
        target,
        FIRST,
        LAST,
        report_day=TODAY,
        now=dt.datetime.now(dt.UTC),
        archive=archive if rearchive else None,
        resources=RESOURCES,
    )


def in_range(truth, resource: str) -> list[dict]:
    return [
        r
        for r in truth(resource)
        if FIRST <= parse_api_datetime(r[DATE_FIELDS[resource]]).date() <= LAST
    ]


def key_of(target, resource: str, record: dict) -> str:
    return archive_key(target.prefix, ARCHIVE_KINDS[resource], record)


def test_report_names_what_was_removed_corrupted_or_added_and_rearchive_repairs(
    hook, s3, target, truth
):
    monitors, voicemail = in_range(truth, "monitors"), in_range(truth, "voicemessages")
    assert len(monitors) >= 4 and voicemail, "the range holds too few recordings"
    assert archive_range(hook, target, FIRST, LAST) == len(monitors) + len(voicemail)

    clean = reconcile(hook, s3, target)
    assert clean["counts"]["monitors"]["verified"] == len(monitors)
    assert clean["counts"]["voicemessages"]["verified"] == len(voicemail)
    assert all(not ids for found in clean["gaps"].values() for ids in found.values())
    assert len(clean["manifests_written"]) == (LAST - FIRST).days + 1
    assert verify(s3, target.bucket, target.prefix, FIRST, LAST, objects=True)["problems"] == []
    # The listing and the ledgers are enough: no HEAD per object.
    assert "HeadObject" not in clean["s3_requests"]

    removed, purged, vanished = monitors[0], monitors[1], monitors[2]
    corrupted = voicemail[0]
    s3.delete_object(Bucket=target.bucket, Key=key_of(target, "monitors", removed))
    body = s3.get_object(Bucket=target.bucket, Key=key_of(target, "voicemessages", corrupted))
    changed = bytearray(body["Body"].read())
    changed[len(changed) // 2] ^= 0x01
    s3.put_object(
        Bucket=target.bucket,
        Key=key_of(target, "voicemessages", corrupted),
        Body=bytes(changed),
        ContentType="audio/mpeg",
    )
    day = parse_api_datetime(monitors[3]["timestamp"]).date()
    added = f"{target.prefix}/recordings/date={day.isoformat()}/99999999.mp3"
    s3.put_object(Bucket=target.bucket, Key=added, Body=b"ID3 not ours", ContentType="audio/mpeg")
    hook.delete_records("monitors", [purged["id"], vanished["id"]])
    with AuditLog("voipstudio_compliance_purge", "manual__1") as audit:
        audit.add("monitors", purged["id"], "deleted", "archive_verified")
        audit.upload(
            s3, target.bucket, audit_key(target.prefix, "voipstudio_compliance_purge", "manual__1")
        )

    report = reconcile(hook, s3, target)
    assert report["gaps"]["monitors"] == {
        "missing": [removed["id"]],
        "unverified": [],
        "orphaned": sorted([vanished["id"], 99999999]),
    }
    assert report["gaps"]["voicemessages"] == {
        "missing": [],
        "unverified": [corrupted["id"]],
        "orphaned": [],
    }
    assert report["counts"]["monitors"]["deleted_at_source"] == 1
    assert set(report["overdue"]["monitors"]) == {removed["id"], vanished["id"], 99999999}
    saved = json.loads(s3.get_object(Bucket=target.bucket, Key=report["key"])["Body"].read())
    assert saved["gaps"] == report["gaps"]

    problems = verify(s3, target.bucket, target.prefix, FIRST, LAST, objects=True)["problems"]
    named = "\n".join(problems)
    assert key_of(target, "monitors", removed) in named
    assert key_of(target, "voicemessages", corrupted) in named
    assert added in named
    assert len(problems) == 3

    repaired = reconcile(hook, s3, target, rearchive=True)
    assert repaired["rearchived"]["monitors"]["archived"] == 1
    assert repaired["rearchived"]["voicemessages"]["archived"] == 1
    assert repaired["gaps"]["monitors"]["missing"] == []
    assert repaired["gaps"]["voicemessages"]["unverified"] == []
    assert repaired["gaps"]["monitors"]["orphaned"] == sorted([vanished["id"], 99999999])


def test_a_late_record_writes_a_new_manifest_version_and_edits_break_the_chain(
    hook, s3, target, sandbox, seaweed, monkeypatch, capsys
):
    # The verifier is a plain AWS client: credentials from the usual environment.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweed.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweed.secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    archive_range(hook, target, FIRST, LAST)
    reconcile(hook, s3, target)
    late_day = FIRST + dt.timedelta(days=3)
    late_time = at(late_day) + dt.timedelta(hours=9)
    fields = {"timestamp": late_time.strftime("%Y-%m-%d %H:%M:%S")}
    (late_id,) = sandbox.control("POST", "records/monitors", {"fields": fields})["ids"]
    archive_range(hook, target, late_day, late_day)

    report = reconcile(hook, s3, target)
    assert all(not ids for found in report["gaps"].values() for ids in found.values())
    newer = json.loads(
        s3.get_object(Bucket=target.bucket, Key=manifest_key(target.prefix, late_day, 2))[
            "Body"
        ].read()
    )
    assert newer["supersedes"]["key"] == manifest_key(target.prefix, late_day, 1)
    assert newer["version"] == 2
    lines_key = manifest_key(target.prefix, late_day, 2, "jsonl")
    lines = s3.get_object(Bucket=target.bucket, Key=lines_key)["Body"].read().decode()
    assert any(json.loads(line)["record_id"] == late_id for line in lines.splitlines())
    # The first version is still there, unchanged.
    assert s3.head_object(Bucket=target.bucket, Key=manifest_key(target.prefix, late_day, 1))

    args = ["--bucket", target.bucket, "--prefix", target.prefix, "--from", str(FIRST)]
    args += ["--to", str(LAST), "--endpoint-url", s3.meta.endpoint_url]
    assert verify_main(args) == 0
    days = (LAST - FIRST).days + 1  # one manifest a day, and a second version of the late day
    assert (
        capsys.readouterr()
        .out.splitlines()[-1]
        .startswith(f"OK: {days} days, {days + 1} manifests")
    )

    earlier = manifest_key(target.prefix, FIRST + dt.timedelta(days=1))
    edited = json.loads(s3.get_object(Bucket=target.bucket, Key=earlier)["Body"].read())
    edited["objects"] += 0  # the same document, written again with other whitespace
    s3.put_object(Bucket=target.bucket, Key=earlier, Body=json.dumps(edited).encode())
    assert verify_main(args) == 1
    out = capsys.readouterr().out
    assert f"the previous manifest {earlier} changed" in out
    assert out.splitlines()[-1].startswith("FAILED")


def test_per_user_csvs_and_archived_chats_are_reconciled_by_listing(hook, s3, target, truth):
    from voipstudio_provider.engine.archive.writer import put_json
    from voipstudio_provider.engine.exports.cdr_csv import export_user_day, users_to_export
    from voipstudio_provider.engine.layout import cdr_csv_key, chat_key

    by_day: dict[dt.date, set[int]] = {}
    for cdr in truth("cdrs"):
        by_day.setdefault(parse_api_datetime(cdr["calldate"]).date(), set()).add(cdr["user_id"])
    day = max(d for d, users in by_day.items() if len(users) >= 2 and d < TODAY)
    callers = users_to_export(hook, day)
    assert set(callers) == by_day[day]
    for user_id in callers:
        export_user_day(hook, s3, target.bucket, target.prefix, user_id, day)
    chat = truth("chats")[0]
    put_json(s3, target, chat_key(target.prefix, chat["id"], day), {"chat": chat})
    put_json(s3, target, chat_key(target.prefix, 99999999, day), {"chat": {"id": 99999999}})

    def check() -> dict:
        return run_reconciliation(
            hook,
            s3,
            target,
            day,
            day,
            report_day=TODAY,
            now=dt.datetime.now(dt.UTC),
            resources=("cdr_csv", "chats"),
        )

    first = check()
    assert first["gaps"]["cdr_csv"] == {"missing": [], "unverified": [], "orphaned": []}
    assert first["counts"]["cdr_csv"]["verified"] == len(callers)
    assert first["gaps"]["chats"]["orphaned"] == [99999999]

    quiet = next(u["id"] for u in truth("users") if u["id"] not in callers)
    s3.delete_object(Bucket=target.bucket, Key=cdr_csv_key(target.prefix, callers[0], day))
    s3.put_object(Bucket=target.bucket, Key=cdr_csv_key(target.prefix, quiet, day), Body=b"x")
    second = check()
    assert second["gaps"]["cdr_csv"] == {
        "missing": [callers[0]],
        "unverified": [],
        "orphaned": [quiet],
    }


def test_the_auditors_shell_check_of_one_day(hook, s3, target, truth, tmp_path):
    """The manual's recipe: `sed` turns the day's .jsonl into `sha256sum -c` input."""
    import hashlib
    import re
    import subprocess

    archive_range(hook, target, FIRST, LAST)
    reconcile(hook, s3, target)
    day = parse_api_datetime(in_range(truth, "monitors")[0]["timestamp"]).date()
    manifest = s3.get_object(Bucket=target.bucket, Key=manifest_key(target.prefix, day))
    document = json.loads(manifest["Body"].read())
    lines = s3.get_object(Bucket=target.bucket, Key=document["jsonl"]["key"])["Body"].read()
    assert hashlib.sha256(lines).hexdigest() == document["jsonl"]["sha256"]
    (tmp_path / "manifest.jsonl").write_bytes(lines)

    recipe = (Path(__file__).resolve().parents[2] / "docs" / "proving.md").read_text()
    (sed_line,) = [line for line in recipe.splitlines() if line.startswith("sed -E ")]
    expression = re.search(r"'([^']*)'", sed_line).group(1)
    sums = subprocess.run(
        ["sed", "-E", expression, "manifest.jsonl"], cwd=tmp_path, capture_output=True, check=True
    ).stdout.decode()
    assert len(sums.splitlines()) == document["objects"] > 0
    for line in sums.splitlines():
        key = line[66:]
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        body = s3.get_object(Bucket=target.bucket, Key=key)["Body"].read()
        (tmp_path / key).write_bytes(body)
    (tmp_path / "day.sha256").write_text(sums)
    check = subprocess.run(["sha256sum", "-c", "day.sha256"], cwd=tmp_path, capture_output=True)
    assert check.returncode == 0, check.stdout

    first_key = sums.splitlines()[0][66:]
    (tmp_path / first_key).write_bytes(b"changed")
    check = subprocess.run(["sha256sum", "-c", "day.sha256"], cwd=tmp_path, capture_output=True)
    assert check.returncode != 0 and f"{first_key}: FAILED" in check.stdout.decode()


def test_manifests_are_locked_like_the_binaries(s3):
    from voipstudio_provider.engine.evidence.manifests import manifest_index, write_day

    bucket = f"locked-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    target = ArchiveTarget(
        bucket=bucket, prefix="vs", object_lock_mode="GOVERNANCE", object_lock_days=7
    )
    entry = {
        "key": "vs/recordings/date=2026-11-02/7.mp3",
        "size": 3,
        "sha256": "ab",
        "kind": "monitors",
    }
    index = manifest_index(s3, bucket, "vs")
    first = write_day(s3, target, dt.date(2026, 11, 1), [], index)
    second = write_day(s3, target, dt.date(2026, 11, 2), [entry], index)

    assert second["previous"]["key"] == manifest_key("vs", dt.date(2026, 11, 1))
    assert (first["objects"], second["objects"]) == (0, 1)
    for key in (manifest_key("vs", dt.date(2026, 11, 2)), second["jsonl"]["key"]):
        retention = s3.get_object_retention(Bucket=bucket, Key=key)["Retention"]
        assert retention["Mode"] == "GOVERNANCE"
        version = s3.head_object(Bucket=bucket, Key=key)["VersionId"]
        with pytest.raises(s3.exceptions.ClientError):
            s3.delete_object(Bucket=bucket, Key=key, VersionId=version)
    assert write_day(s3, target, dt.date(2026, 11, 2), [entry], index) is None  # unchanged
