"""Where a chat's archive is written and found, with the sandbox and SeaweedFS."""

from __future__ import annotations

import datetime as dt
import json
import uuid

from voipstudio_provider.engine.archive.targets import ArchiveTarget
from voipstudio_provider.engine.deletion.chats import ChatArchive
from voipstudio_provider.engine.layout import chat_key
from voipstudio_provider.engine.subjects.legal_hold import parse_legal_hold

DAY = dt.datetime(2025, 3, 4, 12, tzinfo=dt.UTC)


def api_time(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def add_message(sandbox, chat_id: int, moment: dt.datetime, text: str = "hello") -> dict:
    fields = {"chat_id": chat_id, "message": text, "created_at": api_time(moment)}
    (new_id,) = sandbox.control("POST", "records/chatmsgs", {"count": 1, "fields": fields})["ids"]
    return next(m for m in sandbox.control("GET", "records/chatmsgs")["data"] if m["id"] == new_id)


def archive(hook, s3, bucket, prefix: str, *, write: bool = True) -> ChatArchive:
    target = ArchiveTarget(bucket=bucket, prefix=prefix)
    return ChatArchive(hook, s3, target, parse_legal_hold(None), write=write)


def test_a_chat_is_keyed_by_its_own_record_date_not_by_its_messages(sandbox, hook, s3, bucket):
    prefix = f"chats-{uuid.uuid4().hex[:8]}"
    chat = sandbox.control("GET", "records/chats")["data"][0]
    message = add_message(sandbox, chat["id"], DAY)

    reason, _, key = archive(hook, s3, bucket, prefix).check(message, check_archive=True)

    assert reason == "archive_verified"
    assert key == chat_key(prefix, chat["id"], dt.date.fromisoformat(chat["created_at"][:10]))
    stored = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert stored["chat"] == chat and message in stored["messages"]


def test_a_gone_chat_is_found_by_listing_wherever_it_was_written(sandbox, hook, s3, bucket):
    prefix = f"chats-{uuid.uuid4().hex[:8]}"
    chat_id = max(c["id"] for c in sandbox.control("GET", "records/chats")["data"]) + 900
    first = add_message(sandbox, chat_id, DAY)
    _, _, written = archive(hook, s3, bucket, prefix).check(first, check_archive=True)
    assert written == chat_key(prefix, chat_id, DAY.date())
    later = add_message(sandbox, chat_id, DAY + dt.timedelta(days=3))
    hook.delete_records("chatmsgs", [first["id"]])

    reason, _, key = archive(hook, s3, bucket, prefix).check(later, check_archive=True)

    assert (reason, key) == ("archive_verified", written)
    stored = json.loads(s3.get_object(Bucket=bucket, Key=written)["Body"].read())
    assert [m["id"] for m in stored["messages"]] == [first["id"], later["id"]]
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/chats/")["Contents"]
    assert [o["Key"] for o in listed] == [written]


def test_a_gone_chat_whose_archive_cannot_be_read_is_kept_with_the_reason(
    sandbox, hook, s3, bucket
):
    prefix = f"chats-{uuid.uuid4().hex[:8]}"
    chat_id = max(c["id"] for c in sandbox.control("GET", "records/chats")["data"]) + 901
    first = add_message(sandbox, chat_id, DAY)
    _, _, written = archive(hook, s3, bucket, prefix).check(first, check_archive=True)
    # The listed archive no longer matches its own digest.
    s3.put_object(Bucket=bucket, Key=written, Body=b"{}", Metadata={"sha256": "0" * 64})
    later = add_message(sandbox, chat_id, DAY + dt.timedelta(days=1))

    reason, detail, key = archive(hook, s3, bucket, prefix).check(later, check_archive=True)

    assert (reason, key) == ("archive_unverified", written)
    assert detail == f"chat archive {written} does not match its sha256 metadata"
    assert s3.get_object(Bucket=bucket, Key=written)["Body"].read() == b"{}"  # not overwritten


def test_an_archived_message_is_kept_beside_a_different_one_with_its_id(sandbox, hook, s3, bucket):
    prefix = f"chats-{uuid.uuid4().hex[:8]}"
    chat = sandbox.control("GET", "records/chats")["data"][2]
    first = add_message(sandbox, chat["id"], DAY, "call me on +44 20 7946 0123")
    _, _, key = archive(hook, s3, bucket, prefix).check(first, check_archive=True)
    hook.delete_records("chatmsgs", [first["id"]])
    again = add_message(sandbox, chat["id"], DAY, "another text")
    assert again["id"] == first["id"]  # the sandbox gives the highest id again

    reason, _, same_key = archive(hook, s3, bucket, prefix).check(again, check_archive=True)

    assert (reason, same_key) == ("archive_verified", key)
    stored = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    copies = [m for m in stored["messages"] if m["id"] == first["id"]]
    assert copies == [first, again]
