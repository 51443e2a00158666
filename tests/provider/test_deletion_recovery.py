"""A delete whose outcome is not known is never forgotten: its intent stays until the source
is asked, and every id gone from the source ends with exactly one ``deleted`` line.

The sandbox plays the services that act and then fail: the read-back after an accepted
delete answers 500, a delete is performed and answered 500 or dropped, or it is answered
and only performed later.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections import Counter

import pytest
from voipstudio_provider.engine.archive.writer import ArchiveTarget
from voipstudio_provider.engine.evidence.audit import read_audit
from voipstudio_provider.engine.evidence.intents import deletion_attempt, pending_intents
from voipstudio_provider.engine.layout import audit_key
from voipstudio_provider.engine.subjects.legal_hold import LegalHold
from voipstudio_provider.exceptions import VoIPstudioError
from voipstudio_provider.tasks.deletion_run import finish_audit
from voipstudio_provider.tasks.retention import SourceDeleter

DAG, RUN, PREFIX = "voipstudio_retention", "scheduled__2026-11-21T04:00:00+00:00", "vs"
LISTING = "/v1.1/voipstudio/monitors"
BY_IDS = "/v1.1/voipstudio/monitors/*"


def delete_once(hook, s3, bucket, records, *, confirm_timeout=0.3, expect=None) -> None:
    """One attempt of the run deleting ``records`` with intents and checkpoints."""
    target = ArchiveTarget(bucket=bucket, prefix=PREFIX)
    with deletion_attempt(hook, s3, target, DAG, RUN, "monitors", 1) as (audit, intents):
        deleter = SourceDeleter(
            hook, s3, target, audit, "monitors", hold=LegalHold(), dry_run=False, budget=100,
            require_archive=False, confirm_timeout=confirm_timeout, intents=intents,
            checkpoint=lambda: audit.upload(s3, bucket, audit.key),
        )  # fmt: skip
        if expect is None:
            deleter.run(records)
        else:
            with pytest.raises(expect):
                deleter.run(records)


def wait_for_late_effects(sandbox) -> None:
    deadline = time.monotonic() + 15
    while sandbox.control("GET", "effects")["waiting"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sandbox.control("GET", "effects")["waiting"] == 0


def deleted_lines(s3, bucket) -> Counter:
    lines = read_audit(s3, bucket, audit_key(PREFIX, DAG, RUN))
    return Counter(x["id"] for x in lines if x["action"] == "deleted")


def present(truth) -> set[int]:
    return {m["id"] for m in truth("monitors")}


def test_a_failed_read_back_keeps_the_intent_until_the_source_is_asked(
    hook, truth, s3, s3_bucket, set_faults, sandbox
):
    records = truth("monitors")[:3]
    ids = {r["id"] for r in records}
    # The delete is accepted; every read-back of the listing answers 500.
    set_faults({"path": LISTING, "methods": ["GET"], "kind": "500"})
    delete_once(hook, s3, s3_bucket, records, expect=VoIPstudioError)
    target = ArchiveTarget(bucket=s3_bucket, prefix=PREFIX)
    assert not ids & present(truth)  # deleted at the source
    assert [i["ids"] for _, i in pending_intents(s3, target, DAG, RUN)] == [sorted(ids)]

    sandbox.control("DELETE", "faults")
    finish_audit(hook, s3, target, DAG, RUN)
    assert deleted_lines(s3, s3_bucket) == Counter(dict.fromkeys(ids, 1))
    assert pending_intents(s3, target, DAG, RUN) == []


@pytest.mark.parametrize("kind", ["late_500", "late"])
def test_a_delete_that_lands_after_the_attempt_gives_up_gets_its_line(
    hook, truth, s3, s3_bucket, set_faults, sandbox, kind
):
    records = truth("monitors")[:2]
    ids = {r["id"] for r in records}
    # Answered at once (every try 500, or one 202); the rows disappear 1.5 s later, after
    # the attempt has stopped waiting.
    times = 1 if kind == "late" else None
    set_faults({"path": BY_IDS, "methods": ["DELETE"], "kind": kind, "delay": 1.5, "times": times})
    delete_once(hook, s3, s3_bucket, records, expect=Exception)
    target = ArchiveTarget(bucket=s3_bucket, prefix=PREFIX)
    assert len(pending_intents(s3, target, DAG, RUN)) == 1  # fate unknown: kept
    wait_for_late_effects(sandbox)
    assert not ids & present(truth)

    finish_audit(hook, s3, target, DAG, RUN)
    assert deleted_lines(s3, s3_bucket) == Counter(dict.fromkeys(ids, 1))
    lines = read_audit(s3, s3_bucket, audit_key(PREFIX, DAG, RUN))
    assert not [x for x in lines if x["action"] == "failed"]


@pytest.mark.parametrize("kind", ["apply_500", "apply_drop"])
def test_a_delete_performed_then_failed_is_audited_deleted_once(
    hook, truth, s3, s3_bucket, set_faults, kind
):
    records = truth("monitors")[:4]
    ids = {r["id"] for r in records}
    # Every try is performed and then failed (the retries meet 404 inside and fail too).
    set_faults({"path": BY_IDS, "methods": ["DELETE"], "kind": kind})
    delete_once(hook, s3, s3_bucket, records, expect=VoIPstudioError)
    target = ArchiveTarget(bucket=s3_bucket, prefix=PREFIX)
    assert not ids & present(truth)
    finish_audit(hook, s3, target, DAG, RUN)
    assert deleted_lines(s3, s3_bucket) == Counter(dict.fromkeys(ids, 1))
    assert pending_intents(s3, target, DAG, RUN) == []


def test_a_delete_that_never_lands_is_released_at_the_end(
    hook, truth, s3, s3_bucket, set_faults, sandbox
):
    records = truth("monitors")[:2]
    ids = {r["id"] for r in records}
    set_faults({"path": BY_IDS, "methods": ["DELETE"], "kind": "500"})
    delete_once(hook, s3, s3_bucket, records, expect=VoIPstudioError)
    sandbox.control("DELETE", "faults")
    target = ArchiveTarget(bucket=s3_bucket, prefix=PREFIX)
    finish_audit(hook, s3, target, DAG, RUN)
    assert ids <= present(truth)
    lines = read_audit(s3, s3_bucket, audit_key(PREFIX, DAG, RUN))
    assert not [x for x in lines if x["action"] == "deleted"]
    assert {x["id"] for x in lines if x["action"] == "failed"} == ids
    assert pending_intents(s3, target, DAG, RUN) == []


class DeletesAfterLateEffects:
    """The real hook, except that a delete request waits until the sandbox's queued
    deletes have landed: the moment a late delete lands between a walk and its request."""

    def __init__(self, hook, sandbox) -> None:
        self.hook = hook
        self.sandbox = sandbox

    def __getattr__(self, name: str):
        return getattr(self.hook, name)

    def delete_records(self, resource: str, ids) -> list[int]:
        wait_for_late_effects(self.sandbox)
        return self.hook.delete_records(resource, ids)


def test_an_earlier_attempts_delete_landing_during_the_retry_keeps_its_line(
    hook, truth, s3, s3_bucket, set_faults, sandbox
):
    records = truth("monitors")[:2]
    ids = {r["id"] for r in records}
    set_faults({"path": BY_IDS, "methods": ["DELETE"], "kind": "late", "delay": 1.0, "times": 1})
    delete_once(hook, s3, s3_bucket, records, expect=Exception)  # unconfirmed after 0.3 s
    target = ArchiveTarget(bucket=s3_bucket, prefix=PREFIX)
    retry = DeletesAfterLateEffects(hook, sandbox)
    with deletion_attempt(retry, s3, target, DAG, RUN, "monitors", 2) as (audit, intents):
        assert set(intents.earlier) == ids  # still listed: the intent stays pending
        SourceDeleter(
            retry, s3, target, audit, "monitors", hold=LegalHold(), dry_run=False, budget=100,
            require_archive=False, intents=intents, confirm_timeout=0.3,
            checkpoint=lambda: audit.upload(s3, s3_bucket, audit.key),
        ).run(records)  # fmt: skip
    assert not ids & present(truth)
    finish_audit(hook, s3, target, DAG, RUN, wait=0.5)
    assert deleted_lines(s3, s3_bucket) == Counter(dict.fromkeys(ids, 1))
    assert pending_intents(s3, target, DAG, RUN) == []


def test_a_run_whose_attempt_still_holds_its_lease_is_left_alone(hook, truth, s3, s3_bucket):
    from voipstudio_provider.engine.evidence.intents import DeleteIntents
    from voipstudio_provider.engine.evidence.leases import leases_prefix
    from voipstudio_provider.tasks.deletion_run import settle_earlier_runs

    target = ArchiveTarget(bucket=s3_bucket, prefix=PREFIX)
    record = truth("monitors")[0]
    hook.delete_records("monitors", [record["id"]])  # the other run's delete went through
    DeleteIntents(s3, target, DAG, RUN, "monitors.try1").record(
        "monitors", {record["id"]: {"reason": "archive_verified", "archive_key": "k"}}
    )
    lease_key = f"{leases_prefix(PREFIX, DAG, RUN)}monitors.try1.json"

    def lease(refreshed: dt.datetime) -> None:
        body = {"host": "another-worker", "pid": 1, "refreshed": refreshed.isoformat()}
        s3.put_object(Bucket=s3_bucket, Key=lease_key, Body=json.dumps(body).encode())

    purge = "voipstudio_compliance_purge"
    lease(dt.datetime.now(dt.UTC))  # refreshed just now on another host: alive
    settled = settle_earlier_runs(hook, s3, target, purge, "manual__now", wait=0.5)
    assert settled == {"runs": [], "intents": 0, "recent": [f"{DAG}/{RUN}"]}
    assert len(pending_intents(s3, target, DAG, RUN)) == 1

    lease(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=11))  # ten heartbeats missed
    settled = settle_earlier_runs(hook, s3, target, purge, "manual__later", wait=0.5)
    assert settled == {"runs": [f"{DAG}/{RUN}"], "intents": 1, "recent": []}
    (line,) = read_audit(s3, s3_bucket, audit_key(PREFIX, DAG, RUN))
    assert (line["id"], line["action"], line["run_id"]) == (record["id"], "deleted", RUN)
    assert line["recovered_by"] == f"{purge}/manual__later"
    left = s3.list_objects_v2(Bucket=s3_bucket, Prefix=f"{PREFIX}/audit/{DAG}/{RUN}.")
    assert [o["Key"] for o in left["Contents"]] == [audit_key(PREFIX, DAG, RUN)]
