"""Which records an approved purge erases from the archive: only those gone from the source.

A purge deletes at the source what passes its checks; a planned record it kept (its
archive did not verify, the budget ran out, it no longer matched) keeps its archived
copies too. :func:`erasure_plan` asks the source which records are still there and
returns the plan :func:`~voipstudio_provider.tasks.erasure.erase_archived_copies` is
given: the planned records gone from the source, and, for a purge by number, the indexed
records of that number the source no longer has (deleted earlier, e.g. by retention)
within the purge's resources and date. A chat archive holds the whole chat: it is erased
only when none of its archived messages is still at the source.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from voipstudio_provider.engine.evidence.intents import present_ids

#: The index resource holding a purged resource's archived copies.
INDEXED_AS = {"monitors": "monitors", "voicemessages": "voicemessages", "chatmsgs": "chats"}


@dataclass
class ErasureScope:
    """The plan to erase and what was left out, per resource, and why.

    :param plan: ``{"criteria", "resources": {res: {"ids", "dates"}}}`` without a
        ``phone_number``, so that exactly its records are erased.
    :param left: ``{resource: {reason: count}}`` of records whose copies stay.
    """

    plan: dict[str, Any]
    left: dict[str, dict[str, int]] = field(default_factory=dict)

    def leave(self, resource: str, reason: str, count: int) -> None:
        if count:
            reasons = self.left.setdefault(resource, {})
            reasons[reason] = reasons.get(reason, 0) + count

    def add(self, resource: str, record_id: int, day: str | None) -> None:
        entry = self.plan["resources"].setdefault(resource, {"ids": [], "dates": {}})
        if record_id not in entry["ids"]:
            entry["ids"].append(record_id)
            if day is not None:
                entry["dates"][str(record_id)] = day


def _chat_lines(index, message_ids) -> list[dict[str, Any]]:
    lines = {}
    for message_id in message_ids:
        line = index.of_record("chatmsgs", message_id)
        if line is not None:
            lines[int(line["record_id"])] = line
    return list(lines.values())


def _archived_only(index, number: str, resources, older_than: str | None) -> list[dict]:
    """Index lines of ``number`` (beyond doubt) in the purge's resources and before its day.

    A chat archive is dated by the chat, not by its messages: with ``older_than`` it is
    left to the planned messages, since the messages' own dates are not in the index.
    """
    wanted = {INDEXED_AS[r] for r in resources if r in INDEXED_AS}
    lines = []
    for line in index.of_number(number, exact=True):
        if line["resource"] not in wanted:
            continue
        if older_than is not None and (line["resource"] == "chats" or line["date"] >= older_than):
            continue
        lines.append(line)
    return lines


def erasure_plan(hook, plan: Mapping[str, Any], index) -> ErasureScope:
    """The approved ``plan`` narrowed to what the source no longer has.

    :param hook: asks the source which ids it still lists (one request per batch of ids).
    :param index: the subject index (:class:`~.subject_index.SubjectIndex`).
    """
    criteria = dict(plan.get("criteria") or {})
    scope = ErasureScope({"criteria": {**criteria, "phone_number": None}, "resources": {}})
    entries = plan.get("resources", {})
    for resource, entry in sorted(entries.items()):
        ids = [int(i) for i in entry.get("ids", [])]
        dates = entry.get("dates", {})
        if resource == "chatmsgs":
            _chat_messages(hook, index, scope, ids, dates)
            continue
        still = present_ids(hook, resource, ids) if ids else set()
        scope.leave(resource, "still_at_source", len(still))
        for record_id in ids:
            if record_id not in still:
                scope.add(resource, record_id, dates.get(str(record_id)))
    number = criteria.get("phone_number")
    if number:
        older = criteria.get("older_than")
        planned = {(r, int(i)) for r, e in scope.plan["resources"].items() for i in e["ids"]}
        lines = _archived_only(index, number, criteria.get("resources") or entries, older)
        for line in lines:
            ref = (line["resource"], int(line["record_id"]))
            if ref in planned:
                continue
            if line["resource"] == "chats":
                ids = [int(i) for i in line.get("message_ids", [])]
                still = present_ids(hook, "chatmsgs", ids) if ids else set()
            else:
                still = present_ids(hook, line["resource"], [ref[1]])
            if still:
                scope.leave(line["resource"], "archived_only_still_at_source", 1)
            else:
                scope.add(*ref, line["date"])
    return scope


def _chat_messages(hook, index, scope: ErasureScope, ids: list[int], dates) -> None:
    """Planned messages whose chat archive may go: every archived message of the chat, and
    every planned one, is gone from the source."""
    chats = _chat_lines(index, ids)
    archived = {int(m) for line in chats for m in line.get("message_ids", [])}
    still = present_ids(hook, "chatmsgs", sorted(archived | set(ids))) if ids else set()
    kept_chats = {
        int(line["record_id"]) for line in chats if still & set(line.get("message_ids", []))
    }
    for record_id in ids:
        line = index.of_record("chatmsgs", record_id)
        if record_id in still:
            scope.leave("chatmsgs", "still_at_source", 1)
        elif line is not None and int(line["record_id"]) in kept_chats:
            scope.leave("chatmsgs", "chat_has_messages_at_source", 1)
        else:
            scope.add("chatmsgs", record_id, dates.get(str(record_id)))
