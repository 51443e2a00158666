"""The retention policy's fail-safe reading: set or not, budgets per resource, cutoff bound."""

from __future__ import annotations

import datetime as dt

import pendulum
import pytest
from voipstudio_provider.engine.deletion.purge import parse_purge_request
from voipstudio_provider.engine.deletion.retention import (
    parse_retention_budgets,
    parse_retention_policy,
    retention_cutoff,
    retention_policy_is_set,
    retention_reference,
)
from voipstudio_provider.tasks.retention import resource_budget


@pytest.mark.parametrize(
    ("value", "is_set"),
    [(None, False), ("", False), ("  ", False), ("{}", True), ('{"monitors": 30}', True)],
)
def test_only_a_written_policy_lets_retention_delete(value, is_set):
    assert retention_policy_is_set(value) is is_set


def test_the_contract_form_still_reads_and_budgets_are_optional():
    contract = '{"monitors": 365, "voicemessages": 90, "chatmsgs": 365}'
    assert parse_retention_policy(contract) == {"monitors": 365, "voicemessages": 90,
                                                "chatmsgs": 365}  # fmt: skip
    assert parse_retention_budgets(contract) == {}


def test_budgets_per_resource_sit_beside_the_days():
    text = '{"monitors": 365, "max_deletions": {"monitors": 500, "chatmsgs": 5000}}'
    assert parse_retention_policy(text) == {"monitors": 365, "voicemessages": 90,
                                            "chatmsgs": 365}  # fmt: skip
    assert parse_retention_budgets(text) == {"monitors": 500, "chatmsgs": 5000}
    window = {"resource": "monitors", "max_deletions": 500}
    assert resource_budget({"max_deletions": 10_000}, window) == 500
    assert resource_budget({"max_deletions": 20}, window) == 20  # the lower of the two
    assert resource_budget({}, {"resource": "chatmsgs", "max_deletions": None}) == 10_000


@pytest.mark.parametrize(
    "text",
    [
        '{"max_deletions": 5}',
        '{"max_deletions": {"cdrs": 5}}',
        '{"max_deletions": {"monitors": 0}}',
        '{"max_deletions": {"monitors": "5"}}',
        '{"max_deletions": {"monitors": true}}',
    ],
)
def test_bad_budgets_fail_the_policy(text):
    with pytest.raises(ValueError, match="max_deletions"):
        parse_retention_policy(text)


def test_the_cutoff_never_counts_from_the_future():
    now = dt.datetime(2026, 11, 20, 5, tzinfo=dt.UTC)
    past_end = pendulum.datetime(2026, 11, 20, 4, tz="UTC")
    assert retention_reference(past_end, now) == dt.datetime(2026, 11, 20, 4, tzinfo=dt.UTC)
    future_end = pendulum.datetime(2027, 3, 1, 4, tz="UTC")
    assert retention_reference(future_end, now) == now
    assert retention_cutoff(90, retention_reference(future_end, now)) == now - dt.timedelta(90)
    with pytest.raises(ValueError):
        retention_reference(dt.datetime(2026, 11, 20), now)


def test_a_purge_form_has_one_way_to_delete_the_approved_one():
    form = {"older_than": "2026-01-01", "dry_run": False, "approval_hours": 0.5}
    request = parse_purge_request(form)
    assert not request.dry_run and request.approval_hours == 0.5
    assert parse_purge_request({"older_than": "2026-01-01"}).approval_hours == 72
    assert not {"confirm", "plan_run_id"} & set(request.criteria())
