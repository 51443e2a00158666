"""The rules of a purge's approval: who may answer, what an answer means, what is audited."""

from __future__ import annotations

import datetime as dt

import pytest
from voipstudio_provider.engine.deletion.approval import (
    Approval,
    ApprovalRefused,
    Approvers,
    approval_subject,
    assigned_users,
    check_approval,
    decide,
    parse_approvers,
)

ASKED = dt.datetime(2026, 12, 7, 9, 30, tzinfo=dt.UTC)
ANSWERED = dt.datetime(2026, 12, 7, 10, 0, tzinfo=dt.UTC)


def answer(options, user="bob", approvers=None):
    return decide(
        options, {"id": user, "name": user} if user else None, ANSWERED,
        requested_by="alice", requested_at=ASKED, plan_key="k.plan.json", plan_sha256="ab" * 32,
        approvers=approvers or Approvers(),
    )  # fmt: skip


def test_the_approvers_variable_reads_names_and_users_and_refuses_anything_else():
    assert parse_approvers(None) == Approvers()
    assert parse_approvers('{"users": ["bob", {"id": "7", "name": "carol"}]}') == Approvers(
        ({"id": "bob", "name": "bob"}, {"id": "7", "name": "carol"}), False
    )
    assert parse_approvers({"users": [], "allow_self_approval": True}).allow_self_approval
    for bad in ('["bob"]', '{"user": ["bob"]}', '{"users": [""]}', '{"users": [{"name": "x"}]}',
                '{"allow_self_approval": "yes"}'):  # fmt: skip
        with pytest.raises(ValueError, match="voipstudio_purge_approvers"):
            parse_approvers(bad)


def test_the_asker_is_never_assigned_unless_self_approval_is_allowed():
    listed = parse_approvers({"users": ["alice", "bob"]})
    assert assigned_users(listed, "alice") == [{"id": "bob", "name": "bob"}]
    assert assigned_users(Approvers(), "alice") is None  # no list: the check after the answer
    allowed = Approvers(listed.users, allow_self_approval=True)
    assert assigned_users(allowed, "alice") == list(listed.users)
    with pytest.raises(ApprovalRefused, match="only approver"):
        assigned_users(parse_approvers({"users": ["alice"]}), "alice")


def test_only_an_approve_by_someone_else_approves():
    approved = answer(["Approve"])
    assert approved["outcome"] == "approved"
    approval = Approval.from_dict(approved)
    assert approval.audit_fields() == {
        "requested_by": "alice",
        "approved_by": {"id": "bob", "name": "bob"},
        "approved_at": ANSWERED.isoformat(),
        "plan_sha256": "ab" * 32,
    }
    assert answer(["Reject"])["outcome"] == "rejected"
    assert answer(["Approve", "Reject"])["outcome"] == "rejected"
    assert answer([])["outcome"] == "rejected"
    assert answer(["Approve"], user=None)["outcome"] == "rejected"  # a default, never an approval
    assert answer(["Approve"], user="alice")["outcome"] == "self_approval"
    own = answer(["Approve"], user="alice", approvers=Approvers((), allow_self_approval=True))
    assert own["outcome"] == "approved" and own["self_approved"] is True
    assert Approval.from_dict(own).audit_fields()["self_approved"] is True


def test_the_deleting_task_checks_the_approval_again():
    approved = answer(["Approve"])
    assert check_approval(approved, "alice", Approvers()).approved_by["name"] == "bob"
    for recorded in (None, answer(["Reject"]), answer(["Approve"], user="alice")):
        with pytest.raises(ApprovalRefused, match="not approved"):
            check_approval(recorded, "alice", Approvers())
    # An approval by the asker, recorded while the Variable allowed it, once it no longer does.
    own = answer(["Approve"], user="alice", approvers=Approvers((), allow_self_approval=True))
    with pytest.raises(ApprovalRefused, match="four eyes"):
        check_approval(own, "alice", Approvers())


def test_the_subject_says_what_goes():
    plan = {
        "criteria": {"phone_number": "+442079460321", "older_than": None},
        "resources": {"monitors": {"count": 42}, "voicemessages": {"count": 3},
                      "chatmsgs": {"count": 17}},
    }  # fmt: skip
    assert approval_subject(plan) == (
        "Purge 42 recordings, 3 voicemails and 17 chat messages of +44 20 7946 0321?"
    )
    older = {"criteria": {"older_than": "2026-01-01"}, "resources": {"monitors": {"count": 1}}}
    assert approval_subject(older) == "Purge 1 recording older than 2026-01-01?"
    masked = {**plan, "cdrs_to_mask": {"count": 5}}
    assert approval_subject(masked).endswith("of +44 20 7946 0321, and mask it in 5 CDRs?")
    erased = {**masked, "criteria": {**plan["criteria"], "erase_archive": True}}
    assert approval_subject(erased).endswith(
        "and mask it in 5 CDRs, and erase their archived copies?"
    )


@pytest.mark.parametrize("value", [True, False])
def test_erase_archive_is_a_criterion_of_the_plan(value):
    from voipstudio_provider.engine.deletion.purge import parse_purge_request

    request = parse_purge_request({"older_than": "2026-01-01", "erase_archive": value})
    assert request.erase_archive is value and request.criteria()["erase_archive"] is value
    assert parse_purge_request({"older_than": "2026-01-01"}).erase_archive is False


@pytest.mark.parametrize("value", ["yes", 1, None, "true"])
def test_erase_archive_is_true_or_false_and_nothing_else(value):
    from voipstudio_provider.engine.deletion.purge import parse_purge_request

    with pytest.raises(ValueError, match="erase_archive must be true or false"):
        parse_purge_request({"older_than": "2026-01-01", "erase_archive": value})
