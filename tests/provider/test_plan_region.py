"""A purge's deleting tasks execute its approved plan only under the criteria it was made
with: ``voipstudio_default_region`` can change while the approval request waits, and the
region decides which records a number matches."""

from __future__ import annotations

import datetime as dt

import pytest
from voipstudio_provider.engine.archive.writer import ArchiveTarget
from voipstudio_provider.engine.deletion.purge import parse_purge_request
from voipstudio_provider.engine.evidence.plans import (
    check_plan_criteria,
    read_approved_plan,
    write_plan,
)
from voipstudio_provider.engine.layout import plan_key

DAG_ID, RUN_ID = "voipstudio_compliance_purge", "manual__2026-12-01T00:00:00+00:00"
FORM = {"phone_number": "+44 20 7946 0321", "resources": ["monitors"], "dry_run": False}


def approved_plan(s3, target: ArchiveTarget, region: str | None) -> dict:
    """A plan written under ``region`` and read back as the deleting task reads it."""
    request = parse_purge_request(FORM, region=region)
    plan = {
        "criteria": request.criteria(),
        "resources": {"monitors": {"count": 0, "ids": [], "held": []}},
        "dag_id": DAG_ID,
        "run_id": RUN_ID,
        "planned_at": dt.datetime.now(dt.UTC).isoformat(),
    }
    key = plan_key(target.prefix, DAG_ID, RUN_ID)
    digest = write_plan(s3, target.bucket, key, plan)
    return read_approved_plan(s3, target.bucket, key, digest)


@pytest.mark.parametrize(("planned", "executing"), [("GB", "US"), (None, "GB"), ("US", None)])
def test_a_plan_made_under_another_region_is_refused(seaweed, s3_bucket, planned, executing):
    s3, target = seaweed.client(), ArchiveTarget(bucket=s3_bucket, prefix="vs")
    plan = approved_plan(s3, target, planned)
    executing_request = parse_purge_request(FORM, region=executing)
    with pytest.raises(PermissionError, match="other region than the plan"):
        check_plan_criteria(plan, executing_request.criteria())


@pytest.mark.parametrize("region", ["GB", None])
def test_a_plan_made_under_the_same_region_is_executed(seaweed, s3_bucket, region):
    s3, target = seaweed.client(), ArchiveTarget(bucket=s3_bucket, prefix="vs")
    plan = approved_plan(s3, target, region)
    check_plan_criteria(plan, parse_purge_request(FORM, region=region).criteria())
    assert plan["criteria"]["region"] == region


def test_other_criteria_are_refused_too(seaweed, s3_bucket):
    s3, target = seaweed.client(), ArchiveTarget(bucket=s3_bucket, prefix="vs")
    plan = approved_plan(s3, target, "GB")
    wider = parse_purge_request({**FORM, "resources": ["monitors", "voicemessages"]}, "GB")
    with pytest.raises(PermissionError, match="other resources than the plan"):
        check_plan_criteria(plan, wider.criteria())
