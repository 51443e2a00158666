"""Holds that lock the archived copies, and erasure that reaches them: archived from the
sandbox into an Object-Lock bucket of SeaweedFS, judged by what S3 holds afterwards."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
import time
import uuid

import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from voipstudio_provider.engine.archive.batches import archive_planned_batch
from voipstudio_provider.engine.archive.ledger import read_day
from voipstudio_provider.engine.archive.targets import ArchiveTarget
from voipstudio_provider.engine.deletion.chats import ChatArchive
from voipstudio_provider.engine.deletion.erasure import (
    ErasureRules,
    erase_due,
    erase_subjects,
    subjects_of_number,
)
from voipstudio_provider.engine.evidence.manifests import (
    manifest_index,
    manifest_lines,
    read_lines,
    tombstone,
    write_day,
)
from voipstudio_provider.engine.evidence.reconciliation import Reconciler
from voipstudio_provider.engine.layout import quarantine_key
from voipstudio_provider.engine.subjects.legal_hold import parse_legal_hold
from voipstudio_provider.engine.subjects.object_holds import UNKNOWN, hold_status, sync_holds
from voipstudio_provider.engine.subjects.subject_index import SubjectIndex, backfill
from voipstudio_provider.verify_manifest import verify

SUBJECT = "442079460321"
LOOK_ALIKES = ("442079460322", "12079460321")
SUBJECT_E164 = "+" + SUBJECT


@pytest.fixture(scope="module")
def lock_bucket(seaweed) -> str:
    name = f"locked-{uuid.uuid4().hex[:12]}"
    seaweed.client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


@pytest.fixture
def target(lock_bucket) -> ArchiveTarget:
    return ArchiveTarget(bucket=lock_bucket, prefix=f"p{uuid.uuid4().hex[:8]}")


def add(sandbox, resource: str, count: int, **fields) -> list[int]:
    return sandbox.control("POST", f"records/{resource}", {"count": count, "fields": fields})["ids"]


def archive(hook, s3, target, kind: str, ids: list[int]) -> dict:
    now = dt.datetime.now(dt.UTC)
    batch = {
        "kind": kind, "first_id": min(ids), "last_id": max(ids), "count": len(ids),
        "since": (now - dt.timedelta(days=3)).isoformat(),
        "until": (now + dt.timedelta(days=1)).isoformat(), "above_id": None, "ids": ids,
    }  # fmt: skip
    summary = archive_planned_batch(hook, s3, batch, target, max_streams=2)
    assert summary["archived"] == len(ids), summary
    return summary


def versions(s3, bucket: str, below: str) -> list[tuple[str, str]]:
    page = s3.list_object_versions(Bucket=bucket, Prefix=below)
    return sorted((v["Key"], v["VersionId"]) for v in page.get("Versions", []))


def keys_of(index: SubjectIndex, resource: str, record_id: int) -> list[str]:
    return index.lines[(resource, record_id)]["keys"]


def audit(s3, bucket: str, key: str) -> list[dict]:
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return [json.loads(x) for x in body.splitlines()]


def test_the_index_answers_by_number_with_a_few_reads(sandbox, hook, s3, target):
    subject = add(sandbox, "monitors", 2, caller=SUBJECT)
    others = [add(sandbox, "monitors", 1, caller=n)[0] for n in LOOK_ALIKES]
    archive(hook, s3, target, "monitors", subject + others)

    index = SubjectIndex.read(s3, target.bucket, target.prefix)

    found = index.of_number(SUBJECT_E164)
    assert sorted(line["record_id"] for line in found) == sorted(subject)
    assert {"number": SUBJECT_E164, "field": "caller", "ambiguous": False} in found[0]["numbers"]
    assert index.requests == {"LIST": 1, "GET": 1}  # one batch, one day: one object
    for line in found:
        assert [k.rsplit(".", 1)[-1] for k in line["keys"]] == ["mp3", "json"]


def test_backfill_indexes_old_objects_from_their_sidecars(sandbox, hook, s3, target):
    subject = add(sandbox, "monitors", 1, caller=SUBJECT)
    archive(hook, s3, target, "monitors", subject)
    for obj in s3.list_objects_v2(Bucket=target.bucket, Prefix=f"{target.prefix}/subjects/")[
        "Contents"
    ]:
        for key, version in versions(s3, target.bucket, obj["Key"]):
            s3.delete_object(Bucket=target.bucket, Key=key, VersionId=version)
    assert SubjectIndex.read(s3, target.bucket, target.prefix).lines == {}

    done = backfill(s3, target)

    index = SubjectIndex.read(s3, target.bucket, target.prefix)
    assert done["indexed"] == 1
    assert [line["record_id"] for line in index.of_number(SUBJECT_E164)] == subject
    assert backfill(s3, target)["indexed"] == 0  # nothing is indexed twice


def test_holds_lock_every_copy_lifting_releases_and_drift_is_set_right(sandbox, hook, s3, target):
    held = add(sandbox, "monitors", 1, caller=SUBJECT)[0]
    free = add(sandbox, "monitors", 1, caller=LOOK_ALIKES[0])[0]
    archive(hook, s3, target, "monitors", [held, free])
    index = SubjectIndex.read(s3, target.bucket, target.prefix)
    binary = keys_of(index, "monitors", held)[0]
    copy = quarantine_key(target.prefix, binary, dt.datetime.now(dt.UTC))
    s3.put_object(Bucket=target.bucket, Key=copy, Body=b"a copy set aside")
    hold = parse_legal_hold({"numbers": [SUBJECT_E164]})

    report = sync_holds(s3, target, hold, index, "run-1")

    held_versions = versions(s3, target.bucket, binary.rsplit(".", 1)[0] + ".")
    held_versions += versions(s3, target.bucket, copy)
    assert report["set_on"] == len(held_versions) == 3  # binary, sidecar, quarantined copy
    for key, version in held_versions:
        assert hold_status(s3, target.bucket, key, version) == "ON"
        with pytest.raises(ClientError) as refused:
            s3.delete_object(Bucket=target.bucket, Key=key, VersionId=version)
        assert refused.value.response["Error"]["Code"] == "AccessDenied"
    free_key = keys_of(index, "monitors", free)[0]
    for key, version in versions(s3, target.bucket, free_key):
        assert hold_status(s3, target.bucket, key, version) == "OFF"
    lines = audit(s3, target.bucket, report["audit_key"])
    assert {(x["key"], x["version_id"], x["legal_hold"]) for x in lines} == {
        (k, v, "ON") for k, v in held_versions
    }
    assert {x["hold_entry"] for x in lines} == {f"numbers:{SUBJECT_E164}"}

    # Someone with the right turns one flag off: the next sync reports and fixes it.
    key, version = held_versions[0]
    s3.put_object_legal_hold(
        Bucket=target.bucket, Key=key, VersionId=version, LegalHold={"Status": "OFF"}
    )
    report = sync_holds(s3, target, hold, index, "run-2")
    assert report["drift"] == [{"key": key, "version_id": version, "found": "OFF"}]
    assert hold_status(s3, target.bucket, key, version) == "ON"

    report = sync_holds(s3, target, parse_legal_hold(None), index, "run-3")
    assert report["set_off"] == 3
    for key, version in held_versions:
        assert hold_status(s3, target.bucket, key, version) == "OFF"
    lifted = audit(s3, target.bucket, report["audit_key"])
    assert {(x["legal_hold"], x["was"], x["reason"]) for x in lifted} == {("OFF", "ON", "lifted")}
    assert sync_holds(s3, target, parse_legal_hold(None), index, "run-4")["set_off"] == 0


def test_a_bucket_without_object_lock_is_a_loud_finding(sandbox, hook, s3, bucket):
    target = ArchiveTarget(bucket=bucket, prefix=f"p{uuid.uuid4().hex[:8]}")
    held = add(sandbox, "monitors", 1, caller=SUBJECT)
    archive(hook, s3, target, "monitors", held)
    index = SubjectIndex.read(s3, target.bucket, target.prefix)

    report = sync_holds(s3, target, parse_legal_hold({"numbers": [SUBJECT_E164]}), index, "r")

    assert report["lock_enabled"] is False
    assert report["held_records"] == 1
    assert report["findings"][0].startswith("holds cannot be enforced in this bucket")


def test_a_flag_s3_does_not_show_is_unknown_not_off(s3):
    # S3 leaves out fields the caller may not read; no local server can be told to.
    with Stubber(s3) as stub:
        stub.add_response("head_object", {"ContentLength": 1})
        stub.add_response("get_object_legal_hold", {})
        assert hold_status(s3, "b", "k", "v") == UNKNOWN


def _manifest_of_today(s3, target) -> tuple[dt.date, bytes]:
    day = dt.datetime.now(dt.UTC).date()
    lines, _, _ = read_day(s3, target.bucket, target.prefix, day)
    index = manifest_index(s3, target.bucket, target.prefix)
    write_day(s3, target, day, lines.values(), index)
    key = index[day][-1][1].replace(".json", ".jsonl")
    return day, s3.get_object(Bucket=target.bucket, Key=key)["Body"].read()


def test_erasure_by_number_reaches_the_archive_but_keeps_what_must_stay(sandbox, hook, s3, target):
    gone, held, locked = (add(sandbox, "monitors", 1, caller=SUBJECT)[0] for _ in range(3))
    kept_for_duty = add(sandbox, "voicemessages", 1, caller=SUBJECT, callerid=SUBJECT)[0]
    others = [add(sandbox, "monitors", 1, caller=n)[0] for n in LOOK_ALIKES]
    archive(hook, s3, target, "monitors", [gone, held, locked, *others])
    archive(hook, s3, target, "voicemessages", [kept_for_duty])
    day, before = _manifest_of_today(s3, target)
    assert verify(s3, target.bucket, target.prefix, day, day, objects=True)["problems"] == []
    index = SubjectIndex.read(s3, target.bucket, target.prefix)
    retain_until = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=6)
    for key, version in versions(s3, target.bucket, keys_of(index, "monitors", locked)[0]):
        s3.put_object_retention(
            Bucket=target.bucket, Key=key, VersionId=version,
            Retention={"Mode": "GOVERNANCE", "RetainUntilDate": retain_until},
        )  # fmt: skip
    untouched = {
        k: versions(s3, target.bucket, k) for o in others for k in keys_of(index, "monitors", o)
    }
    rules = ErasureRules(
        hold=parse_legal_hold({"ids": {"monitors": [held]}}), keep_days={"voicemessages": 30}
    )

    keys = {ref: list(line["keys"]) for ref, line in index.lines.items()}
    subjects = subjects_of_number(index, SUBJECT_E164)
    # The purge deletes at the source what the hold does not keep there; then the archive.
    deleted = hook.delete_records("monitors", [gone, locked])
    deleted += hook.delete_records("voicemessages", [kept_for_duty])
    result = erase_subjects(s3, s3, target, index, subjects, rules, "erase-1", purge_run="p-1")
    source = {r["id"] for r in sandbox.control("GET", "records/monitors")["data"]}
    assert sorted(deleted) == sorted([gone, locked, kept_for_duty])
    assert {held, *others} <= source and not {gone, locked} & source

    assert {line["record_id"] for line in subjects} == {gone, held, locked, kept_for_duty}
    assert result["records_erased"] == 1
    lines = audit(s3, target.bucket, result["audit_key"])
    by_record = {}
    for line in lines:
        by_record.setdefault(line["record_id"], set()).add(
            (line["action"], line["reason"], line.get("erase_after"))
        )
    assert by_record[gone] == {("erased", "compliance_purge", None)}
    assert by_record[held] == {("kept", f"legal_hold_id ids.monitors:{held}", None)}
    assert {x[:2] for x in by_record[locked]} == {("kept", "object_lock_retention")}
    assert {x[2] for x in by_record[locked]} == {retain_until.isoformat()}
    assert {x[:2] for x in by_record[kept_for_duty]} == {("kept", "minimum_keep_days")}
    for key in SubjectIndex.read(s3, target.bucket, target.prefix).lines[("monitors", held)][
        "keys"
    ]:
        assert versions(s3, target.bucket, key)
    fresh = SubjectIndex.read(s3, target.bucket, target.prefix)
    assert ("monitors", gone) not in fresh.lines  # the index forgets whose it was
    for key in keys[("monitors", gone)]:
        assert versions(s3, target.bucket, key) == []
    assert {k: versions(s3, target.bucket, k) for k in untouched} == untouched

    # The manifest chain still verifies; the erased line's tombstone is its digest.
    assert verify(s3, target.bucket, target.prefix, day, day, objects=True)["problems"] == []
    after = read_lines(s3, target.bucket, result["manifests"][0])
    erased = [line for line in after.values() if line.get("tombstone")]
    assert [line["record_id"] for line in erased] == [gone]
    removed = next(raw for raw in before.splitlines() if f"/{gone}.mp3" in raw.decode())
    assert erased[0]["tombstone"]["line_sha256"] == hashlib.sha256(removed + b"\n").hexdigest()
    recipe = subprocess.run(
        f"grep -F '\"key\": \"{erased[0]['key']}\"' | sha256sum",
        shell=True, input=before, capture_output=True, check=True,
    )  # fmt: skip
    assert recipe.stdout.split()[0].decode() == erased[0]["tombstone"]["line_sha256"]
    assert erased[0]["tombstone"]["purge_run"] == "p-1"
    assert SUBJECT not in json.dumps(after)

    # Once the retention and the duty have passed, the daily task erases them.
    time.sleep(max(0.0, (retain_until - dt.datetime.now(dt.UTC)).total_seconds()) + 1)
    later = ErasureRules(
        hold=rules.hold, keep_days=rules.keep_days,
        now=dt.datetime.now(dt.UTC) + dt.timedelta(days=31),
    )  # fmt: skip
    fresh = SubjectIndex.read(s3, target.bucket, target.prefix)
    due = erase_due(s3, s3, target, fresh, later, "erase-due-1")
    assert due["records_erased"] == 2 and due["waiting"] == 0
    for resource, record_id in (("monitors", locked), ("voicemessages", kept_for_duty)):
        for key in keys[(resource, record_id)]:
            assert versions(s3, target.bucket, key) == [], key
    assert verify(s3, target.bucket, target.prefix, day, day, objects=True)["problems"] == []
    last = SubjectIndex.read(s3, target.bucket, target.prefix)
    assert [line["record_id"] for line in last.of_number(SUBJECT_E164)] == [held]


def test_an_erased_object_is_not_a_reconciliation_gap(sandbox, hook, s3, target):
    gone = add(sandbox, "monitors", 1, caller=SUBJECT)[0]
    archive(hook, s3, target, "monitors", [gone])
    index = SubjectIndex.read(s3, target.bucket, target.prefix)
    rules = ErasureRules(hold=parse_legal_hold(None))
    erase_subjects(s3, s3, target, index, [index.lines[("monitors", gone)]], rules, "erase-2")

    day = dt.datetime.now(dt.UTC).date()
    result = Reconciler(hook, s3, target, ["monitors"]).check_day(day)["monitors"]

    assert result.counts["erased"] == 1
    assert gone not in [gap["id"] for gap in result.gaps]


def test_verify_finds_a_tombstone_that_does_not_match_or_an_erased_line_come_back(s3, bucket):
    target = ArchiveTarget(bucket=bucket, prefix=f"p{uuid.uuid4().hex[:8]}")
    day = dt.date(2026, 3, 2)
    line = {
        "key": f"{target.prefix}/recordings/date={day}/1.mp3", "size": 3, "sha256": "a" * 64,
        "s3_checksum": "x", "etag": "e", "record_id": 1, "kind": "monitors",
        "archived_at": "2026-03-03T00:00:00+00:00",
    }  # fmt: skip
    index = manifest_index(s3, bucket, target.prefix)
    write_day(s3, target, day, [line], index)
    assert verify(s3, bucket, target.prefix, day, day)["problems"] == []

    forged = tombstone(line, "2026-04-01T00:00:00+00:00", "compliance_purge", "p")
    forged["tombstone"]["line_sha256"] = "0" * 64
    write_day(s3, target, day, [forged], index)
    problems = verify(s3, bucket, target.prefix, day, day)["problems"]
    assert len(problems) == 1 and "does not match the removed line" in problems[0]

    # A ledger still naming the erased object does not bring its line back.
    assert write_day(s3, target, day, [line], index) is None
    latest = read_lines(s3, bucket, index[day][-1][1].replace(".json", ".jsonl"))
    assert latest[line["key"]]["tombstone"]["line_sha256"] == "0" * 64
    honest = tombstone(line, "2026-04-01T00:00:00+00:00", "compliance_purge", "p")
    assert honest["tombstone"]["line_sha256"] == hashlib.sha256(manifest_lines([line])).hexdigest()


def test_a_chat_naming_a_held_number_is_indexed_and_its_archive_held(sandbox, hook, s3, target):
    chat_id = sandbox.control("GET", "records/chats")["data"][0]["id"]
    message_id = add(sandbox, "chatmsgs", 1, chat_id=chat_id, message="ring me: +44 20 7946 0321")[
        0
    ]
    message = next(
        m for m in sandbox.control("GET", "records/chatmsgs")["data"] if m["id"] == message_id
    )
    chats = ChatArchive(hook, s3, target, parse_legal_hold(None), write=True)
    key = chats.key_of(message)
    assert chats.check(message, check_archive=True)[0] == "archive_verified"

    assert backfill(s3, target, sidecars=False)["indexed"] == 1
    index = SubjectIndex.read(s3, target.bucket, target.prefix)
    [line] = index.of_number(SUBJECT_E164)
    assert line["keys"] == [key] and message_id in line["message_ids"]

    by_message = parse_legal_hold({"ids": {"chatmsgs": [message_id]}})
    report = sync_holds(s3, target, by_message, index, "run-chat")
    assert report["set_on"] == len(versions(s3, target.bucket, key)) >= 1
    for k, version in versions(s3, target.bucket, key):
        assert hold_status(s3, target.bucket, k, version) == "ON"
    assert sync_holds(s3, target, parse_legal_hold(None), index, "run-chat-2")["set_off"] >= 1
