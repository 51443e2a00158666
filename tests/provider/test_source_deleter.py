"""How the deleter audits what happened to each id of a delete batch.

Most cases run against the sandbox as they are (an id deleted elsewhere, a server that
fails every delete). Two cannot be produced by the sandbox: it cannot lose the answer to a
delete it has performed (a 204 has no body to break), and its deletes by id never finish
late. For those the real hook is wrapped so that its ``delete_records`` misbehaves in
exactly that way; every other call still goes to the sandbox.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from urllib.parse import parse_qs

import pytest
from voipstudio_provider.endpoints import parse_api_datetime
from voipstudio_provider.engine.archive.writer import ArchiveTarget, archive_batch
from voipstudio_provider.engine.deletion.deleter import DeletionUnconfirmedError
from voipstudio_provider.engine.evidence.audit import (
    AuditLog,
    audit_part,
    deletions_so_far,
    read_audit,
)
from voipstudio_provider.engine.evidence.intents import deletion_attempt, pending_intents
from voipstudio_provider.engine.layout import ARCHIVE_KINDS
from voipstudio_provider.engine.subjects.legal_hold import LegalHold
from voipstudio_provider.exceptions import (
    VoIPstudioAccessDeniedError,
    VoIPstudioNotFoundError,
    VoIPstudioServerError,
)
from voipstudio_provider.tasks.retention import SourceDeleter

DAG, RUN, PREFIX = "voipstudio_retention", "manual__2026-11-20T00:00:00+00:00", "vs"


class ScriptedDeletes:
    """The real hook, except that ``delete_records`` plays one of two server behaviours.

    ``lost_answer``: the delete is performed at the server, its answer is lost, and the
    hook's retry is answered 404 (raised with ``after_retry`` set, as the hook does).
    ``never_done``: the delete is accepted but the rows never disappear.
    """

    def __init__(self, hook, behaviour: str) -> None:
        self.hook = hook
        self.behaviour = behaviour
        self.delete_calls: list[list[int]] = []

    def __getattr__(self, name: str):
        return getattr(self.hook, name)

    def delete_records(self, resource: str, ids) -> list[int]:
        ids = sorted(ids)
        self.delete_calls.append(ids)
        if self.behaviour == "never_done":
            return ids
        self.hook.delete_records(resource, ids)
        error = VoIPstudioNotFoundError(f"DELETE /{resource}/...: 404 Not Found", status_code=404)
        error.after_retry = True
        error.deleted_ids = []
        raise error


def make_deleter(hook, s3, bucket: str, audit: AuditLog, **kwargs) -> SourceDeleter:
    options = {"hold": LegalHold(), "dry_run": False, "budget": 100, "require_archive": False}
    options.update(kwargs)
    return SourceDeleter(
        hook, s3, ArchiveTarget(bucket=bucket, prefix=PREFIX), audit, "monitors", **options
    )


def lines_of(audit: AuditLog, s3, bucket: str) -> list[dict]:
    audit.upload(s3, bucket, audit.key)
    return read_audit(s3, bucket, audit.key)


def monitor_ids(truth) -> set[int]:
    return {m["id"] for m in truth("monitors")}


def test_id_deleted_elsewhere_is_gone_and_not_counted(hook, truth, seaweed, s3_bucket):
    s3 = seaweed.client()
    records = truth("monitors")[:5]
    hook.delete_records("monitors", [records[2]["id"]])  # someone else deletes one
    with audit_part(s3, s3_bucket, PREFIX, DAG, RUN, "monitors.try1") as audit:
        deleter = make_deleter(hook, s3, s3_bucket, audit)
        deleter.run(records)
        lines = lines_of(audit, s3, s3_bucket)

    outcome = {x["id"]: (x["action"], x["reason"]) for x in lines}
    assert outcome[records[2]["id"]] == ("skipped", "gone")
    others = [r["id"] for r in records if r is not records[2]]
    assert all(outcome[i] == ("deleted", "archive_not_required") for i in others)
    assert not set(others) & monitor_ids(truth)
    assert deleter.deleted == 4 and deleter.failed == 0
    assert deletions_so_far(s3, s3_bucket, PREFIX, DAG, RUN) == 4


def test_ids_absent_after_a_retried_delete_count_as_deleted(hook, truth, seaweed, s3_bucket):
    s3 = seaweed.client()
    records = truth("monitors")[:4]
    target = ArchiveTarget(bucket=s3_bucket, prefix=PREFIX)
    outcomes = archive_batch(hook, s3, ARCHIVE_KINDS["monitors"], records, target)
    assert {o.status for o in outcomes} == {"archived"}
    lossy = ScriptedDeletes(hook, "lost_answer")
    with audit_part(s3, s3_bucket, PREFIX, DAG, RUN, "monitors.try1") as audit:
        deleter = make_deleter(lossy, s3, s3_bucket, audit, require_archive=True)
        deleter.run(records)
        lines = lines_of(audit, s3, s3_bucket)

    ids = [r["id"] for r in records]
    assert lossy.delete_calls == [ids]  # nothing left to delete a second time
    assert not set(ids) & monitor_ids(truth)
    assert sorted(x["id"] for x in lines) == ids
    for line in lines:
        assert (line["action"], line["reason"]) == ("deleted", "archive_verified")
        assert line["detail"] == "absent after a retried delete request"
    assert deleter.deleted == 4
    assert audit.deletions == 4
    assert deletions_so_far(s3, s3_bucket, PREFIX, DAG, RUN) == 4


@pytest.mark.parametrize(
    ("fault", "error", "action", "reason", "counted"),
    [
        # 403 on the first try: certainly refused, nothing was deleted.
        ("403", VoIPstudioAccessDeniedError, "failed", "delete_error", 0),
        # 500 may hide a delete that was performed: kept pending, never failed-and-forgotten.
        ("500", VoIPstudioServerError, "deleted_unconfirmed", "delete_outcome_unknown", 3),
    ],
)
def test_a_failed_delete_audits_the_batch_and_stops(
    hook, make_hook, sandbox, truth, seaweed, s3_bucket, set_faults, fault, error, action,
    reason, counted,
):  # fmt: skip
    s3 = seaweed.client()
    records = [m for m in truth("monitors") if m["user_id"] != 1002][:6]
    if fault == "403":
        # A user's key: other users' recordings are refused, and invisible to its read-back.
        hook = make_hook(token=f"{sandbox.token}-user-1002", conn_id="voipstudio_user")
    else:
        set_faults({"path": "/v1.1/voipstudio/monitors/*", "methods": ["DELETE"], "kind": fault})
    with audit_part(s3, s3_bucket, PREFIX, DAG, RUN, "monitors.try1") as audit:
        deleter = make_deleter(hook, s3, s3_bucket, audit, batch_size=3)
        with pytest.raises(error):
            deleter.run(records)
        lines = lines_of(audit, s3, s3_bucket)

    # The first batch failed and was audited; the second was never tried.
    first = [r["id"] for r in records[:3]]
    assert sorted(x["id"] for x in lines) == first
    for line in lines:
        assert (line["action"], line["reason"]) == (action, reason)
        assert error.__name__ in line["detail"]
    assert {r["id"] for r in records} <= monitor_ids(truth)
    assert deleter.deleted == 0 and deleter.failed + deleter.unconfirmed == 3
    assert deletions_so_far(s3, s3_bucket, PREFIX, DAG, RUN) == counted
    assert audit.summary()["resources"]["monitors"][action] == 3


def test_rows_still_listed_after_the_wait_are_unconfirmed_then_confirmed_later(
    hook, truth, seaweed, s3_bucket
):
    s3 = seaweed.client()
    records = truth("monitors")[:3]
    ids = [r["id"] for r in records]
    target = ArchiveTarget(bucket=s3_bucket, prefix=PREFIX)
    stuck = ScriptedDeletes(hook, "never_done")
    with deletion_attempt(stuck, s3, target, DAG, RUN, "monitors", 1) as (audit, intents):
        deleter = make_deleter(
            stuck, s3, s3_bucket, audit, confirm_timeout=0.2, intents=intents,
            checkpoint=lambda: audit.upload(s3, s3_bucket, audit.key),
        )  # fmt: skip
        with pytest.raises(DeletionUnconfirmedError, match="3 monitors were still listed"):
            deleter.run(records)
        lines = lines_of(audit, s3, s3_bucket)

    assert stuck.delete_calls == [ids]
    assert sorted(x["id"] for x in lines) == ids
    assert {(x["action"], x["reason"]) for x in lines} == {
        ("deleted_unconfirmed", "delete_unconfirmed")
    }
    assert deleter.deleted == 0 and deleter.unconfirmed == 3
    # Unconfirmed deletions count towards max_deletions, and their intent stays.
    assert deletions_so_far(s3, s3_bucket, PREFIX, DAG, RUN, "monitors") == 3
    assert len(pending_intents(s3, target, DAG, RUN, "monitors")) == 1

    # The delete lands late; the next attempt confirms it before it walks.
    hook.delete_records("monitors", ids)
    with deletion_attempt(hook, s3, target, DAG, RUN, "monitors", 2) as (audit, _):
        later = lines_of(audit, s3, s3_bucket)
    assert sorted(x["id"] for x in later) == ids
    assert {x["action"] for x in later} == {"deleted"}
    assert all("reconciled" in x["detail"] for x in later)
    assert pending_intents(s3, target, DAG, RUN) == []


def query_filters(entry: dict) -> list[dict]:
    raw = parse_qs(entry["query"]).get("filter", ["[]"])[0]
    return json.loads(raw)


def test_a_batch_is_confirmed_by_asking_for_exactly_its_ids(
    hook, truth, seaweed, s3_bucket, sandbox, api_requests
):
    s3 = seaweed.client()
    rows = truth("monitors")[:12]
    # Two runs of consecutive ids and one id alone; the ids between are not deleted.
    records = rows[0:4] + rows[6:9] + rows[11:12]
    ids = sorted(r["id"] for r in records)
    with AuditLog(DAG, RUN) as audit:
        deleter = make_deleter(hook, s3, s3_bucket, audit)
        sandbox.control("DELETE", "requests")
        deleter.run(records)

    reads = [e for e in api_requests("/monitors", method="GET")]
    assert len(reads) == 3  # one per run of ids, not a walk over the span
    asked: set[int] = set()
    for entry in reads:
        bounds = {f["operator"]: f["value"] for f in query_filters(entry) if f["property"] == "id"}
        if "eq" in bounds:
            asked.add(bounds["eq"])
        else:
            asked |= set(range(bounds["gte"], bounds["lte"] + 1))
    assert asked == set(ids)
    assert deleter.deleted == len(ids)
    kept = {rows[i]["id"] for i in (4, 5, 9, 10)}
    assert kept <= monitor_ids(truth)


def test_each_record_is_checked_against_its_own_date(hook, truth, seaweed, s3_bucket):
    s3 = seaweed.client()
    old, recent, unreadable = (dict(r) for r in truth("monitors")[:3])
    cutoff = parse_api_datetime(old["timestamp"]) + dt.timedelta(seconds=1)
    recent["timestamp"] = (cutoff + dt.timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S")
    unreadable["timestamp"] = "last Tuesday"
    with AuditLog(DAG, RUN) as audit:
        deleter = make_deleter(hook, s3, s3_bucket, audit, cutoff=cutoff)
        deleter.run([old, recent, unreadable])
        lines = {x["id"]: x for x in lines_of_log(audit, s3, s3_bucket)}

    assert (lines[old["id"]]["action"], lines[old["id"]]["reason"]) == (
        "deleted",
        "archive_not_required",
    )
    assert (lines[recent["id"]]["action"], lines[recent["id"]]["reason"]) == (
        "skipped",
        "not_past_cutoff",
    )
    assert (lines[unreadable["id"]]["action"], lines[unreadable["id"]]["reason"]) == (
        "skipped",
        "date_unreadable",
    )
    assert "last Tuesday" in lines[unreadable["id"]]["detail"]
    assert {recent["id"], unreadable["id"]} <= monitor_ids(truth)
    assert old["id"] not in monitor_ids(truth)


def test_a_spent_budget_stops_the_walk_with_one_line(hook, truth, seaweed, s3_bucket):
    s3 = seaweed.client()
    records = truth("monitors")[:10]
    with AuditLog(DAG, RUN) as audit:
        deleter = make_deleter(hook, s3, s3_bucket, audit, budget=3, batch_size=2)
        deleter.run(records)
        lines = lines_of_log(audit, s3, s3_bucket)

    assert [x["action"] for x in lines] == ["deleted"] * 3 + ["skipped"]
    stop = lines[-1]
    assert stop["reason"] == "max_deletions" and stop["id"] == records[3]["id"]
    left = len([m for m in truth("monitors") if m["id"] >= records[3]["id"]])
    assert deleter.left_for_next_run == left
    assert f"{left} monitors from id {records[3]['id']} on were left" in stop["detail"]
    assert {r["id"] for r in records[3:]} <= monitor_ids(truth)


def test_the_hold_is_read_again_before_every_batch(hook, truth, seaweed, s3_bucket):
    s3 = seaweed.client()
    records = truth("monitors")[:6]
    holds = {"now": LegalHold()}
    later = records[4]["id"]

    def placed_after_first_batch() -> None:
        holds["now"] = LegalHold(ids={"monitors": frozenset({later})})

    with AuditLog(DAG, RUN) as audit:
        deleter = make_deleter(
            hook, s3, s3_bucket, audit, batch_size=3, hold_loader=lambda: holds["now"],
            checkpoint=placed_after_first_batch,
        )  # fmt: skip
        deleter.run(records)
        lines = {x["id"]: x for x in lines_of_log(audit, s3, s3_bucket)}

    assert (lines[later]["action"], lines[later]["reason"]) == ("skipped", "legal_hold_id")
    assert later in monitor_ids(truth)
    assert sum(x["action"] == "deleted" for x in lines.values()) == 5


def test_an_intent_is_in_s3_before_the_delete_request(hook, truth, seaweed, s3_bucket):
    s3 = seaweed.client()
    records = truth("monitors")[:3]
    target = ArchiveTarget(bucket=s3_bucket, prefix=PREFIX)
    seen: list[list] = []

    class Watching(ScriptedDeletes):
        def delete_records(self, resource, ids):
            seen.append([i["ids"] for _, i in pending_intents(s3, target, DAG, RUN, resource)])
            return self.hook.delete_records(resource, ids)

    watching = Watching(hook, "")
    with deletion_attempt(watching, s3, target, DAG, RUN, "monitors", 1) as (audit, intents):
        deleter = make_deleter(
            watching, s3, s3_bucket, audit, intents=intents,
            checkpoint=lambda: audit.upload(s3, s3_bucket, audit.key),
        )  # fmt: skip
        deleter.run(records)

    assert seen == [[[r["id"] for r in records]]]
    assert pending_intents(s3, target, DAG, RUN) == []  # resolved once audited


def lines_of_log(audit: AuditLog, s3, bucket: str) -> list[dict]:
    key = f"{PREFIX}/scratch/{uuid.uuid4().hex}.jsonl"
    audit.upload(s3, bucket, key)
    return read_audit(s3, bucket, key)
