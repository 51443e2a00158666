"""Which of an approved purge's records are erased from the archive: only those the source
(the sandbox, over HTTP) no longer lists; a chat archive only when none of its messages is."""

from __future__ import annotations

from voipstudio_provider.engine.deletion.erasure_scope import erasure_plan
from voipstudio_provider.engine.subjects.subject_index import SubjectIndex

NUMBER = "+442079460321"


def add(sandbox, resource: str, count: int = 1, **fields) -> list[int]:
    return sandbox.control("POST", f"records/{resource}", {"count": count, "fields": fields})["ids"]


def line(resource: str, record_id: int, day: str = "2026-03-02", **extra) -> dict:
    numbers = [{"number": NUMBER, "field": "caller", "ambiguous": False}]
    return {"resource": resource, "record_id": record_id, "date": day,
            "keys": [f"p/{resource}/{record_id}"], "numbers": numbers, **extra}  # fmt: skip


def index_of(*lines: dict) -> SubjectIndex:
    index = SubjectIndex()
    for entry in lines:
        index.add(entry, "p/subjects/x.jsonl")
    return index


def test_records_still_at_the_source_keep_their_copies(sandbox, hook):
    kept, gone = add(sandbox, "monitors", 2)
    hook.delete_records("monitors", [gone])
    dates = {str(kept): "2026-03-02 10:00:00", str(gone): "2026-03-02 11:00:00"}
    entry = {"ids": [kept, gone], "dates": dates}
    plan = {"criteria": {"phone_number": None}, "resources": {"monitors": entry}}

    scope = erasure_plan(hook, plan, index_of())

    assert scope.plan["resources"]["monitors"]["ids"] == [gone]
    assert scope.plan["resources"]["monitors"]["dates"] == {str(gone): "2026-03-02 11:00:00"}
    assert scope.left == {"monitors": {"still_at_source": 1}}


def test_a_chat_archive_goes_only_with_every_message_of_it(sandbox, hook):
    chats = sandbox.control("GET", "records/chats")["data"]
    whole, partly = chats[0]["id"], chats[1]["id"]
    whole_ids = add(sandbox, "chatmsgs", 2, chat_id=whole)
    partly_ids = add(sandbox, "chatmsgs", 2, chat_id=partly)
    # The purge deleted both messages of one chat, and one of the other's two.
    hook.delete_records("chatmsgs", [*whole_ids, partly_ids[0]])
    index = index_of(
        line("chats", whole, message_ids=whole_ids), line("chats", partly, message_ids=partly_ids)
    )
    planned = [*whole_ids, partly_ids[0]]
    plan = {"criteria": {}, "resources": {"chatmsgs": {"ids": planned, "dates": {}}}}

    scope = erasure_plan(hook, plan, index)

    assert scope.plan["resources"]["chatmsgs"]["ids"] == whole_ids
    assert scope.left == {"chatmsgs": {"chat_has_messages_at_source": 1}}


def test_archived_only_records_of_the_number_within_the_purge_are_added(sandbox, hook):
    earlier, still, newer, voicemail = add(sandbox, "monitors", 4)
    hook.delete_records("monitors", [earlier, newer, voicemail])
    index = index_of(
        line("monitors", earlier, "2026-01-05"),
        line("monitors", still, "2026-01-05"),
        line("monitors", newer, "2026-03-01"),  # after older_than: not the purge's
        line("voicemessages", voicemail, "2026-01-05"),  # not among its resources
        line("cdrs", 7, "2026-01-05"),  # CDRs are never purged
    )
    criteria = {"phone_number": NUMBER, "older_than": "2026-02-01", "resources": ["monitors"]}
    plan = {"criteria": criteria, "resources": {"monitors": {"ids": [], "dates": {}}}}

    scope = erasure_plan(hook, plan, index)

    assert scope.plan["criteria"]["phone_number"] is None  # the engine adds nothing more
    assert scope.plan["resources"]["monitors"]["ids"] == [earlier]
    assert scope.left == {"monitors": {"archived_only_still_at_source": 1}}
