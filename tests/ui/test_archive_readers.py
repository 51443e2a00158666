"""What the Archive page reads, against SeaweedFS: broken reports and chains are shown as
broken, and every bounded count says when it stopped."""

from __future__ import annotations

import datetime as dt
import json

from voipstudio_provider.engine.archive.targets import ArchiveTarget
from voipstudio_provider.engine.evidence import deletion_runs
from voipstudio_provider.engine.evidence.audit import AuditLog
from voipstudio_provider.engine.evidence.coverage import gap_days, manifest_chain, read_coverage
from voipstudio_provider.engine.evidence.manifests import manifest_index, write_day
from voipstudio_provider.engine.layout import audit_key, manifest_key, report_key
from voipstudio_provider.engine.s3objects import put_json
from voipstudio_provider.engine.subjects.hold_reach import hold_reach
from voipstudio_provider.engine.subjects.legal_hold import parse_legal_hold

PREFIX = "p"


def _report(s3, bucket: str, day: str, missing: int = 0) -> str:
    key = report_key(PREFIX, dt.date.fromisoformat(day))
    report = {"from": day, "to": day, "days_with_gaps": [day] if missing else [],
              "counts": {"monitors": {"verified": 5, "missing": missing}}}  # fmt: skip
    put_json(s3, bucket, key, report, write_args={})
    return key


def test_a_report_changed_after_it_was_written_is_listed_first_as_a_problem(seaweed, s3_bucket):
    s3 = seaweed.client()
    _report(s3, s3_bucket, "2026-11-01")
    changed = _report(s3, s3_bucket, "2026-11-02")
    _report(s3, s3_bucket, "2026-11-03")
    body = s3.get_object(Bucket=s3_bucket, Key=changed)["Body"].read().replace(b"5", b"6")
    s3.put_object(Bucket=s3_bucket, Key=changed, Body=body)  # no longer its sha256 metadata

    rows = read_coverage(s3, s3_bucket, PREFIX)
    assert [(r.day, r.has_gaps) for r in rows] == [
        ("2026-11-02", True), ("2026-11-03", False), ("2026-11-01", False)
    ]  # fmt: skip
    assert rows[0].problem == "does not match the SHA-256 it was written with"
    assert rows[1].totals["verified"] == 5 and rows[1].totals["missing"] == 0


def test_the_chain_breaks_where_a_manifest_is_missing_unless_a_report_names_the_gap(
    seaweed, s3_bucket
):
    s3 = seaweed.client()
    target = ArchiveTarget(bucket=s3_bucket, prefix=PREFIX)
    index = manifest_index(s3, s3_bucket, PREFIX)
    for day in ("2026-11-01", "2026-11-03"):
        entry = {"key": f"{PREFIX}/recordings/date={day}/1.mp3", "size": 1, "kind": "monitors"}
        write_day(s3, target, dt.date.fromisoformat(day), [entry], index)
    broken = manifest_chain(s3, s3_bucket, PREFIX)
    assert broken["state"] == "broken" and broken["problems"] == ["2026-11-02: no manifest"]

    _report(s3, s3_bucket, "2026-11-03", missing=1)
    _report(s3, s3_bucket, "2026-11-02", missing=1)
    named = gap_days(read_coverage(s3, s3_bucket, PREFIX))
    assert manifest_chain(s3, s3_bucket, PREFIX, gap_days=named)["state"] == "holds"

    lines = manifest_key(PREFIX, dt.date(2026, 11, 1), suffix="jsonl")
    s3.put_object(Bucket=s3_bucket, Key=lines, Body=b'{"key": "forged"}\n')
    chain = manifest_chain(s3, s3_bucket, PREFIX, gap_days=named)
    assert chain["state"] == "broken" and chain["problems"]


def test_hold_counts_say_when_a_bound_stopped_them(seaweed, s3_bucket):
    s3 = seaweed.client()
    for record_id, caller in ((1, "+442079460321"), (2, "+442079460321"), (3, "+12025550143")):
        key = f"{PREFIX}/recordings/date=2026-11-0{record_id}/{record_id}"
        s3.put_object(Bucket=s3_bucket, Key=f"{key}.mp3", Body=b"mp3")
        sidecar = {"id": record_id, "caller": caller, "called": "101"}
        s3.put_object(Bucket=s3_bucket, Key=f"{key}.json", Body=json.dumps(sidecar).encode())
    hold = parse_legal_hold({"ids": {"monitors": [3], "chatmsgs": [9]},
                             "numbers": ["+44 20 7946 0321"]})  # fmt: skip

    whole = hold_reach(s3, s3_bucket, PREFIX, hold)
    assert whole["complete"] and whole["listed"] == 6
    assert [(i["resource"], i["id"], i["objects"]) for i in whole["ids"]] == [
        ("chatmsgs", 9, None), ("monitors", 3, 2)
    ]  # fmt: skip
    assert whole["numbers"] == [{"number": "+442079460321", "records": 2, "objects": 4}]

    bounded = hold_reach(s3, s3_bucket, PREFIX, hold, max_sidecars=1)
    assert not bounded["complete"] and bounded["sidecars_read"] == 1
    # Newest day first: recording 3 (another number) is read, so the count is a lower bound.
    assert bounded["numbers"][0]["records"] == 0


def test_a_deleting_run_is_counted_from_its_audit_object_up_to_the_cap(
    seaweed, s3_bucket, monkeypatch
):
    s3 = seaweed.client()
    key = audit_key(PREFIX, "voipstudio_retention", "run-1")
    with AuditLog("voipstudio_retention", "run-1") as audit:
        audit.add("monitors", 1, "deleted", "archive_verified")
        audit.add("monitors", 2, "deleted_unconfirmed", "delete_unconfirmed")
        audit.add("monitors", 3, "skipped", "legal_hold_number")
        audit.add("voicemessages", 4, "failed", "delete_error")
        audit.upload(s3, s3_bucket, key)
    put_json(s3, s3_bucket, key.replace(".jsonl", ".plan.json"), {}, write_args={})

    (run,) = deletion_runs.latest_deletion_runs(s3, s3_bucket, PREFIX, "voipstudio_retention")
    shown = run.as_dict()
    assert (shown["run_id"], shown["audit_key"], shown["complete"]) == ("run-1", key, True)
    assert shown["deleted"] == {"monitors": 2}
    assert {k["reason"]: k["count"] for k in shown["kept"]} == {
        "legal_hold_number": 1, "delete_error": 1
    }  # fmt: skip

    monkeypatch.setattr(deletion_runs, "MAX_AUDIT_LINES", 2)
    (capped,) = deletion_runs.latest_deletion_runs(s3, s3_bucket, PREFIX, "voipstudio_retention")
    assert (capped.lines, capped.complete, capped.kept) == (2, False, {})
