"""A purge's approval by a second person, without Airflow: who may answer, what they read,
and the record of who approved which plan.

The purge asks through Airflow's human-in-the-loop ``ApprovalOperator``. This module
decides what that request says (:func:`approval_subject`, :func:`approval_body`, rendered
from the plan itself), who may answer it (:func:`parse_approvers`, :func:`assigned_users`),
whether an answer approves (:func:`decide`), and what every audit line of the deletion
carries about it (:class:`Approval`).

Four eyes: the person who asked for the purge (the run's triggering user) may not approve
it, unless the Variable ``voipstudio_purge_approvers`` says ``"allow_self_approval": true``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from voipstudio_provider.engine.evidence.plans import plan_rows

#: Variable naming who may approve a purge, JSON such as
#: ``{"users": ["bob", {"id": "7", "name": "carol"}], "allow_self_approval": false}``.
APPROVERS_VARIABLE = "voipstudio_purge_approvers"
APPROVE, REJECT = "Approve", "Reject"
#: How long an approval request stays open unless the run says otherwise.
DEFAULT_APPROVAL_HOURS = 72
#: Rows of the plan (and of its held items) the approver reads in the request itself.
SHOWN_ROWS = 10
#: How the approver's form names each resource, singular and plural.
RESOURCE_NOUNS = {
    "monitors": ("recording", "recordings"),
    "voicemessages": ("voicemail", "voicemails"),
    "chatmsgs": ("chat message", "chat messages"),
    "cdrs": ("CDR", "CDRs"),
}
APPROVED, REJECTED, EXPIRED, SELF_APPROVAL = "approved", "rejected", "expired", "self_approval"


class ApprovalRefused(PermissionError):
    """An answer that must not delete anything (a self-approval, a missing approval)."""


@dataclass(frozen=True)
class Approvers:
    """Who may answer a purge's approval request.

    :param users: ``{"id", "name"}`` of each person who may answer; empty: anyone Airflow
        lets answer the request (its ``HITL_DETAIL`` permission).
    :param allow_self_approval: the person who asked may approve too (small teams).
    """

    users: tuple[dict[str, str], ...] = ()
    allow_self_approval: bool = False


def parse_approvers(raw: Any) -> Approvers:
    """Read the Variable ``voipstudio_purge_approvers``; unset means no list, four eyes.

    A user is a name (the simple auth manager's id and name are the same) or an object
    ``{"id", "name"}`` (auth managers whose ids are numbers).

    :raises ValueError: not a JSON object, unknown keys, a user without a name.
    """
    if raw is None or raw == "":
        return Approvers()
    value = json.loads(raw) if isinstance(raw, str) else raw
    if not isinstance(value, Mapping):
        raise ValueError(f"{APPROVERS_VARIABLE} must be a JSON object with users")
    unknown = set(value) - {"users", "allow_self_approval"}
    if unknown:
        raise ValueError(f"{APPROVERS_VARIABLE} has unknown keys: {sorted(unknown)}")
    users = []
    for index, entry in enumerate(value.get("users") or []):
        if isinstance(entry, str) and entry.strip():
            users.append({"id": entry.strip(), "name": entry.strip()})
        elif isinstance(entry, Mapping) and str(entry.get("id") or "").strip():
            user_id = str(entry["id"]).strip()
            users.append({"id": user_id, "name": str(entry.get("name") or user_id).strip()})
        else:
            raise ValueError(f"{APPROVERS_VARIABLE} users[{index}]: {entry!r} is not a user")
    allow = value.get("allow_self_approval", False)
    if not isinstance(allow, bool):
        raise ValueError(f"{APPROVERS_VARIABLE} allow_self_approval must be true or false")
    return Approvers(tuple(users), allow)


def assigned_users(approvers: Approvers, requested_by: str | None) -> list[dict] | None:
    """The ``assigned_users`` of the request: the listed approvers, the asker left out
    (unless self-approval is allowed); ``None`` when the Variable lists nobody.

    :raises ApprovalRefused: the asker is the only listed approver: nobody could approve.
    """
    if not approvers.users:
        return None
    users = [
        user
        for user in approvers.users
        if approvers.allow_self_approval or requested_by not in (user["name"], user["id"])
    ]
    if not users:
        raise ApprovalRefused(
            f"{requested_by} asked for this purge and is the only approver in "
            f"{APPROVERS_VARIABLE}: nobody else may approve it. Nothing was deleted."
        )
    return users


# -- what the approver reads --------------------------------------------------------------


def _counted(count: int, resource: str) -> str:
    singular, plural = RESOURCE_NOUNS.get(resource, (resource, resource))
    return f"{count} {singular if count == 1 else plural}"


def _listed(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _spoken_number(e164: str) -> str:
    import phonenumbers

    return phonenumbers.format_number(
        phonenumbers.parse(e164), phonenumbers.PhoneNumberFormat.INTERNATIONAL
    )


def _in_order(entries: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Resources in the order people name them (recordings, voicemail, chats, CDRs): a
    plan read back from JSON has them sorted by name."""
    order = list(RESOURCE_NOUNS)
    return sorted(entries.items(), key=lambda item: order.index(item[0]) if item[0] in order
                  else len(order))  # fmt: skip


def approval_subject(plan: Mapping[str, Any]) -> str:
    """``Purge 42 recordings, 3 voicemails and 17 chat messages of +44 20 7946 0321?``."""
    criteria = plan.get("criteria", {})
    parts = [_counted(e["count"], r) for r, e in _in_order(plan.get("resources", {}))]
    subject = f"Purge {_listed(parts or ['nothing'])}"
    if criteria.get("phone_number"):
        subject += f" of {_spoken_number(criteria['phone_number'])}"
    if criteria.get("older_than"):
        subject += f" older than {criteria['older_than']}"
    if "cdrs_to_mask" in plan:
        subject += f", and mask it in {_counted(plan['cdrs_to_mask']['count'], 'cdrs')}"
    if criteria.get("erase_archive"):
        subject += ", and erase their archived copies"
    return subject + "?"


def _cell(value: Any) -> str:
    """A Markdown table cell showing ``value`` as the text it is."""
    text = " ".join(str("" if value is None else value).split())
    for special in "\\`*_[]<>|#":
        text = text.replace(special, "\\" + special)
    return text or "-"


def _code(value: Any) -> str:
    """A name shown as code: exactly its characters, nothing read as Markdown."""
    return "`" + str(value).replace("`", "'") + "`"


def _table(header: tuple[str, ...], rows: list[tuple]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines


def _when(moment: dt.datetime | str | None) -> str:
    if moment is None:
        return "-"
    if isinstance(moment, str):
        moment = dt.datetime.fromisoformat(moment)
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def approval_body(
    plan: Mapping[str, Any],
    *,
    bucket: str,
    plan_key: str,
    plan_csv_key: str,
    plan_sha256: str,
    requested_by: str | None,
    requested_at: dt.datetime | str | None,
    expires_at: dt.datetime | None,
    shown_rows: int = SHOWN_ROWS,
) -> str:
    """The request's Markdown: criteria, counts, held items and why, the first rows, the
    plan's key and SHA-256, who asked and when, and when the request expires."""
    criteria = plan.get("criteria", {})
    number = criteria.get("phone_number")
    lines = [
        f"**Asked by** {_code(requested_by or 'unknown')} at {_when(requested_at)}, "
        f"run `{plan.get('run_id', '-')}`.",
        "",
        f"**Expires** {_when(expires_at)}: without an answer by then nothing is deleted.",
        "",
        "Approving deletes exactly the plan below, each item checked again at delete time "
        "(still matches, not held, archived copy verified, max_deletions).",
        "",
        "### Criteria",
        "",
        f"- phone number: {_spoken_number(number) + f' ({number})' if number else '-'}",
        f"- older than: {criteria.get('older_than') or '-'}",
        f"- resources: {', '.join(criteria.get('resources', []))}",
        f"- require archive: {'yes' if criteria.get('require_archive', True) else 'no'}; "
        f"mask CDRs: {'yes' if criteria.get('mask_cdrs') else 'no'}; "
        f"max deletions: {criteria.get('max_deletions', '-')}",
        f"- erase archived copies: {'yes' if criteria.get('erase_archive') else 'no'}",
        "",
        "### Counts",
        "",
    ]
    entries = dict(plan.get("resources", {}))
    if "cdrs_to_mask" in plan:
        entries["cdrs"] = plan["cdrs_to_mask"]
    lines += _table(
        ("resource", "to delete" if "cdrs" not in entries else "to delete (CDRs: to mask)", "held"),
        [(r, e["count"], len(e.get("held", []))) for r, e in _in_order(entries)],
    )
    order = [resource for resource, _ in _in_order(entries)]
    rows = sorted(plan_rows(plan), key=lambda row: order.index(row["resource"]))
    held = [r for r in rows if r["held"] == "yes"]
    planned = [r for r in rows if r["held"] == "no"]
    lines += ["", f"### Held, kept ({len(held)})", ""]
    if held:
        lines += _table(
            ("resource", "id", "why"),
            [(r["resource"], r["id"], r["hold_reason"]) for r in held[:shown_rows]],
        )
        if len(held) > shown_rows:
            lines += ["", f"... and {len(held) - shown_rows} more held items in the CSV."]
    else:
        lines.append("None.")
    lines += ["", f"### First rows of the plan ({min(len(planned), shown_rows)} of "
                  f"{len(planned)})", ""]  # fmt: skip
    if planned:
        first = planned[:shown_rows]
        lines += _table(
            ("resource", "id", "date", "matched"),
            [(r["resource"], r["id"], r["date"], r["matched_number"]) for r in first],
        )
    else:
        lines.append("Nothing to delete.")
    lines += [
        "",
        "### The plan",
        "",
        f"- key: `s3://{bucket}/{plan_key}`",
        f"- SHA-256: `{plan_sha256}`",
        f"- every row, for a spreadsheet: `s3://{bucket}/{plan_csv_key}`",
    ]
    return "\n".join(lines)


# -- the answer ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Approval:
    """Who asked for a purge and who approved which plan: on every audit line.

    :param requested_by: the run's triggering user.
    :param requested_at: when the run was asked for (ISO 8601).
    :param approved_by: ``{"id", "name"}`` of who answered Approve.
    :param approved_at: when they answered (ISO 8601).
    :param plan_key: the approved plan's key.
    :param plan_sha256: the SHA-256 of the approved plan's bytes, fixed when asked.
    :param self_approved: the asker approved, as the Variable allowed.
    """

    requested_by: str | None
    requested_at: str | None
    approved_by: dict[str, str]
    approved_at: str
    plan_key: str
    plan_sha256: str
    self_approved: bool = False

    def audit_fields(self) -> dict[str, Any]:
        """The fields every audit line of the purge carries."""
        fields = {
            "requested_by": self.requested_by,
            "approved_by": dict(self.approved_by),
            "approved_at": self.approved_at,
            "plan_sha256": self.plan_sha256,
        }
        if self.self_approved:
            fields["self_approved"] = True
        return fields

    def as_dict(self) -> dict[str, Any]:
        return {"outcome": APPROVED, **asdict(self)}

    @classmethod
    def from_dict(cls, value: Mapping[str, Any] | None) -> Approval:
        """The approval ``approve_purge`` recorded.

        :raises ApprovalRefused: there is none, or its outcome is not an approval.
        """
        if not value or value.get("outcome") != APPROVED:
            outcome = (value or {}).get("outcome", "no answer")
            raise ApprovalRefused(f"the purge was not approved ({outcome}): nothing is deleted")
        fields = {name: value[name] for name in cls.__dataclass_fields__ if name in value}
        return cls(**fields)


def _iso(moment: Any) -> str:
    return moment.isoformat() if isinstance(moment, dt.datetime) else str(moment)


def decide(
    chosen_options: list[str],
    responded_by: Mapping[str, str] | None,
    responded_at: Any,
    *,
    requested_by: str | None,
    requested_at: Any,
    plan_key: str,
    plan_sha256: str,
    approvers: Approvers,
) -> dict[str, Any]:
    """What an answer means: ``{"outcome": "approved", ...}`` (an :class:`Approval`) or
    ``{"outcome": "rejected" | "self_approval", "responded_by": ...}``.

    Only the single option Approve approves; the asker's own Approve is a
    ``self_approval`` unless ``approvers.allow_self_approval``.
    """
    responder = dict(responded_by or {})
    answered = {"responded_by": responder, "responded_at": _iso(responded_at)}
    if list(chosen_options) != [APPROVE] or not responder:
        return {"outcome": REJECTED, **answered}
    is_asker = requested_by is not None and responder.get("name") == requested_by
    if is_asker and not approvers.allow_self_approval:
        return {"outcome": SELF_APPROVAL, "requested_by": requested_by, **answered}
    approval = Approval(
        requested_by=requested_by,
        requested_at=_iso(requested_at) if requested_at is not None else None,
        approved_by={"id": str(responder.get("id")), "name": str(responder.get("name"))},
        approved_at=_iso(responded_at),
        plan_key=plan_key,
        plan_sha256=plan_sha256,
        self_approved=is_asker,
    )
    return approval.as_dict()


def check_approval(
    recorded: Mapping[str, Any] | None, requested_by: str | None, approvers: Approvers
) -> Approval:
    """The approval a deleting task may act on, checked again where it deletes.

    :raises ApprovalRefused: no approval, or the asker approved their own purge without
        the Variable allowing it (then).
    """
    approval = Approval.from_dict(recorded)
    if (
        requested_by is not None
        and approval.approved_by.get("name") == requested_by
        and not approvers.allow_self_approval
    ):
        raise ApprovalRefused(
            f"{requested_by} asked for this purge and approved it too: four eyes are "
            "required, nothing is deleted"
        )
    return approval
