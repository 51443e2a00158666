"""How the deleter audits what happened to each id of a delete batch.

Most cases run against the sandbox as they are (an id deleted elsewhere, a server that
fails every delete). Two cannot be produced by the sandbox: it cannot lose the answer to a
delete it has performed (a 204 has no body to break), and its deletes by id never finish
late. For those the real hook is wrapped so that its ``delete_records`` misbehaves in
exactly that way; every other call still goes to the sandbox.
"""

from __future__ import annotations

import pytest
from voipstudio_provider.archive import ArchiveTarget, archive_batch
from voipstudio_provider.audit import AuditLog, audit_part, deletions_so_far, read_audit
from voipstudio_provider.exceptions import VoIPstudioNotFoundError, VoIPstudioServerError
from voipstudio_provider.layout import ARCHIVE_KINDS
from voipstudio_provider.policy import LegalHold
from voipstudio_provider.retention import SourceDeleter

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


def test_a_refused_delete_audits_the_batch_failed_and_stops(
    hook, truth, seaweed, s3_bucket, set_faults
):
    s3 = seaweed.client()
    records = truth("monitors")[:6]
    set_faults({"path": "/v1.1/voipstudio/monitors/*", "methods": ["DELETE"], "kind": "500"})
    with audit_part(s3, s3_bucket, PREFIX, DAG, RUN, "monitors.try1") as audit:
        deleter = make_deleter(hook, s3, s3_bucket, audit, batch_size=3)
        with pytest.raises(VoIPstudioServerError):
            deleter.run(records)
        lines = lines_of(audit, s3, s3_bucket)

    # The first batch failed and was audited; the second was never tried.
    first = [r["id"] for r in records[:3]]
    assert sorted(x["id"] for x in lines) == first
    for line in lines:
        assert (line["action"], line["reason"]) == ("failed", "delete_error")
        assert line["detail"].startswith("VoIPstudioServerError")
    assert {r["id"] for r in records} <= monitor_ids(truth)
    assert deleter.deleted == 0 and deleter.failed == 3
    assert deletions_so_far(s3, s3_bucket, PREFIX, DAG, RUN) == 0
    assert audit.summary()["resources"]["monitors"]["failed"] == 3


def test_rows_still_listed_after_the_wait_are_unconfirmed(hook, truth, seaweed, s3_bucket):
    s3 = seaweed.client()
    records = truth("monitors")[:3]
    stuck = ScriptedDeletes(hook, "never_done")
    with audit_part(s3, s3_bucket, PREFIX, DAG, RUN, "monitors.try1") as audit:
        deleter = make_deleter(stuck, s3, s3_bucket, audit, confirm_timeout=0.2)
        deleter.run(records)
        lines = lines_of(audit, s3, s3_bucket)

    assert stuck.delete_calls == [[r["id"] for r in records]]
    assert sorted(x["id"] for x in lines) == [r["id"] for r in records]
    assert {(x["action"], x["reason"]) for x in lines} == {("failed", "delete_unconfirmed")}
    assert deleter.deleted == 0 and deleter.failed == 3
    assert deletions_so_far(s3, s3_bucket, PREFIX, DAG, RUN) == 0
