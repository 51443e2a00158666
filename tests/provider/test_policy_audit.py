"""The deletion audit log in a real S3 (SeaweedFS): parts, merging, counting deletions."""

from __future__ import annotations

import pytest
from voipstudio_provider.engine.evidence.audit import (
    audit_part,
    audit_parts_prefix,
    deletions_so_far,
    merge_audit_parts,
    read_audit,
)
from voipstudio_provider.engine.layout import audit_key

DAG, RUN, PREFIX = "voipstudio_retention", "manual__2026-11-20T00:00:00+00:00", "vs"


def test_a_part_is_written_even_when_the_task_fails(seaweed, s3_bucket):
    s3 = seaweed.client()
    with pytest.raises(RuntimeError):
        with audit_part(s3, s3_bucket, PREFIX, DAG, RUN, "monitors.try1") as audit:
            audit.add("monitors", 1, "deleted", "archive_verified", archive_key="k/1.mp3")
            raise RuntimeError("the API went away")
    lines = read_audit(s3, s3_bucket, audit.key)
    assert [(x["id"], x["action"], x["archive_key"]) for x in lines] == [(1, "deleted", "k/1.mp3")]
    assert audit.key.startswith(audit_parts_prefix(PREFIX, DAG, RUN))


def test_merge_joins_parts_once_and_counts_deletions(seaweed, s3_bucket):
    s3 = seaweed.client()
    with audit_part(s3, s3_bucket, PREFIX, DAG, RUN, "monitors.try1") as audit:
        audit.add("monitors", 1, "deleted", "archive_verified", archive_key="a")
        audit.add("monitors", 2, "skipped", "legal_hold_id", archive_key="b")
    with audit_part(s3, s3_bucket, PREFIX, DAG, RUN, "chatmsgs.try1") as audit:
        audit.add("chatmsgs", 5, "would_delete", "archive_pending", archive_key="c")
    assert deletions_so_far(s3, s3_bucket, PREFIX, DAG, RUN) == 2

    summary = merge_audit_parts(s3, s3_bucket, PREFIX, DAG, RUN)

    assert summary["lines"] == 3
    assert summary["resources"]["monitors"]["deleted"] == 1
    assert summary["resources"]["monitors"]["reasons"] == {
        "archive_verified": 1,
        "legal_hold_id": 1,
    }
    key = audit_key(PREFIX, DAG, RUN)
    assert summary["key"] == key
    listing = s3.list_objects_v2(Bucket=s3_bucket, Prefix=f"{PREFIX}/audit/")
    assert [o["Key"] for o in listing["Contents"]] == [key]  # parts removed
    assert deletions_so_far(s3, s3_bucket, PREFIX, DAG, RUN) == 2

    # A cleared task adds a part later: its lines join those already merged, none twice.
    with audit_part(s3, s3_bucket, PREFIX, DAG, RUN, "voicemessages.try2") as audit:
        audit.add("voicemessages", 9, "failed", "delete_unconfirmed", archive_key="d")
    again = merge_audit_parts(s3, s3_bucket, PREFIX, DAG, RUN)
    assert again["lines"] == 4
    assert sorted(x["id"] for x in read_audit(s3, s3_bucket, key)) == [1, 2, 5, 9]
    assert merge_audit_parts(s3, s3_bucket, PREFIX, DAG, RUN)["lines"] == 4


def test_unknown_actions_and_reasons_are_refused(seaweed, s3_bucket):
    with audit_part(seaweed.client(), s3_bucket, PREFIX, DAG, RUN, "x") as audit:
        with pytest.raises(ValueError):
            audit.add("monitors", 1, "removed", "archive_verified")
        with pytest.raises(ValueError):
            audit.add("monitors", 1, "deleted", "because")
        assert len(audit) == 0
