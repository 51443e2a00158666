"""A confirmed purge executes only a plan made under the same default region."""

from __future__ import annotations

import datetime as dt

import pytest
from voipstudio_provider.engine.archive import ArchiveTarget
from voipstudio_provider.engine.layout import plan_key
from voipstudio_provider.engine.plans import load_reviewed_plan, write_plan
from voipstudio_provider.engine.purge import parse_purge_request

DAG_ID, DRY_RUN = "voipstudio_compliance_purge", "manual__2026-12-01T00:00:00+00:00"
FORM = {"phone_number": "+44 20 7946 0321", "resources": ["monitors"]}


def write_dry_plan(s3, target: ArchiveTarget, region: str | None) -> None:
    request = parse_purge_request({**FORM, "dry_run": True}, region=region)
    plan = {
        "criteria": request.criteria(),
        "resources": {"monitors": {"count": 0, "ids": [], "held": []}},
        "dag_id": DAG_ID,
        "run_id": DRY_RUN,
        "planned_at": dt.datetime.now(dt.UTC).isoformat(),
    }
    write_plan(s3, target.bucket, plan_key(target.prefix, DAG_ID, DRY_RUN), plan)


def confirmed(region: str | None):
    form = {**FORM, "dry_run": False, "confirm": "PURGE", "plan_run_id": DRY_RUN}
    return parse_purge_request(form, region=region)


@pytest.mark.parametrize(("planned", "executing"), [("GB", "US"), (None, "GB"), ("US", None)])
def test_a_plan_made_under_another_region_is_refused(seaweed, s3_bucket, planned, executing):
    s3, target = seaweed.client(), ArchiveTarget(bucket=s3_bucket, prefix="vs")
    write_dry_plan(s3, target, planned)
    with pytest.raises(PermissionError, match="other region than the plan"):
        load_reviewed_plan(s3, target, DAG_ID, confirmed(executing))


@pytest.mark.parametrize("region", ["GB", None])
def test_a_plan_made_under_the_same_region_is_executed(seaweed, s3_bucket, region):
    s3, target = seaweed.client(), ArchiveTarget(bucket=s3_bucket, prefix="vs")
    write_dry_plan(s3, target, region)
    plan = load_reviewed_plan(s3, target, DAG_ID, confirmed(region))
    assert plan["criteria"]["region"] == region and plan["run_id"] == DRY_RUN
