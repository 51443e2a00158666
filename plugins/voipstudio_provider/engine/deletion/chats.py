"""Each chat with all its messages archived before any of its messages is deleted.

:class:`ChatArchive` keeps ``{p}/chats/date=YYYY-MM-DD/{chat_id}.json`` and answers, for one
chat message, whether it may go: its chat is not held and its exact copy is archived.
A chat's key is dated by the chat record's own ``created_at``, never by its remaining
messages (which deletion removes). When the chat record is gone, its archive is found where
it was written, by listing ``{p}/chats/``; one that cannot be read there keeps the chat.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from botocore.exceptions import ClientError

from voipstudio_provider.endpoints import Filter
from voipstudio_provider.engine.layout import chat_key, record_day
from voipstudio_provider.engine.s3objects import ChangedObjectError, is_not_found, read_checked_json
from voipstudio_provider.engine.subjects.legal_hold import LegalHold
from voipstudio_provider.exceptions import VoIPstudioNotFoundError

#: A chat archive's key below the prefix: its day and its chat id.
_CHAT_KEY = re.compile(r"/chats/date=\d{4}-\d{2}-\d{2}/(\d+)\.json$")


def _fingerprint(record: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


def _every_copy(stored: list[dict], messages: list[dict]) -> list[dict]:
    """Every distinct copy of every message, archived first, ids ascending.

    An archived copy is never dropped: a message that differs at the source now (changed,
    or an id given again) is added beside it, so what an earlier run proved stays.
    """
    copies: dict[str, dict] = {}
    for message in [*(m for d in stored for m in d.get("messages", [])), *messages]:
        copies.setdefault(_fingerprint(message), message)
    return sorted(copies.values(), key=lambda m: m["id"])


class _ChatState:
    """What one chat's archive holds: its key, why it is held, the archived messages."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.hold_reason: str | None = None
        self.archived: dict[int, set[str]] = {}  # message id -> fingerprints of its copies
        self.problem: str | None = None  # why the archive cannot be trusted


class ChatArchive:
    """Each chat with all its messages in ``{p}/chats/date=YYYY-MM-DD/{chat_id}.json``.

    The object is ``{"chat": {...}, "messages": [...], "archived_at": ...}`` with the body's
    SHA-256 in its ``sha256`` metadata. Messages archived by an earlier run (and since
    deleted or changed at the source) stay in it: a new copy merges the old one with what
    the API has now, and a message that differs from its archived copy is kept in both
    versions. An object that does not match its own ``sha256`` is never overwritten; its chat's
    messages are kept. A chat is held as a whole when its id is held or a held number is
    in a visitor field or in any of its messages.

    The key is dated by the chat record's ``created_at``. When the chat record is gone
    from the source, the archive is looked up among the keys listed under
    ``{p}/chats/`` (one listing per instance, only when needed), wherever an earlier run
    wrote it; several found are read together and the first is written to. A listed
    archive that cannot be read where it was written keeps the chat's messages
    (``archive_unverified``): an earlier run may have deleted a message that holds the
    chat. A chat never archived before its record went is archived under its first
    message's day, the only date left.

    :param write: archive chats (off for dry runs, which only say what they would do).
    """

    def __init__(self, hook, s3_client, target, hold: LegalHold, *, write: bool) -> None:
        self.hook = hook
        self.s3_client = s3_client
        self.target = target
        self.hold = hold
        self.write = write
        self._chats: dict[int, _ChatState] = {}
        self._listed: dict[int, list[str]] | None = None

    def key_of(self, message: dict) -> str:
        return self._state(int(message["chat_id"]), message).key

    def check(self, message: dict, *, check_archive: bool) -> tuple[str, str | None, str]:
        """``(reason, detail, key)`` for one message; a reason in :data:`GO_REASONS` lets
        it go."""
        state = self._state(int(message["chat_id"]), message)
        if state.hold_reason:
            return state.hold_reason, f"chat {message['chat_id']} is held", state.key
        if self.hold.held_id("chatmsgs", message["id"]):
            return "legal_hold_id", None, state.key
        if not check_archive:
            return "archive_not_required", None, state.key
        if state.problem:
            return "archive_unverified", state.problem, state.key
        if _fingerprint(message) in state.archived.get(message["id"], ()):
            return "archive_verified", "verified in the chat archive", state.key
        if not self.write:
            return "archive_pending", None, state.key
        return "archive_unverified", "message not in the chat archive", state.key

    def _state(self, chat_id: int, message: dict) -> _ChatState:
        if chat_id not in self._chats:
            self._chats[chat_id] = self._load(chat_id, message)
        return self._chats[chat_id]

    def _load(self, chat_id: int, message: dict) -> _ChatState:
        try:
            chat = self.hook.get_record("chats", chat_id)
        except VoIPstudioNotFoundError:
            chat = None
        messages = list(
            self.hook.iter_records("chatmsgs", filters=[Filter("chat_id", "eq", chat_id)])
        )
        if chat is not None:
            keys = [chat_key(self.target.prefix, chat_id, record_day("chats", chat))]
        else:
            keys = self._archived_keys().get(chat_id, [])
        first = min(messages or [message], key=lambda m: m["id"])
        # A chat whose record was gone before it was ever archived: its first message's
        # day is the only date left. Later runs find that key by listing, never by
        # recomputing it from the messages that remain.
        state = _ChatState(keys[0] if keys else chat_key(
            self.target.prefix, chat_id, record_day("chatmsgs", first)
        ))  # fmt: skip
        # The archive first: a message naming a held number may have been deleted at the
        # source by an earlier run, and still holds the rest of its chat.
        stored = self._read_all(state, keys)
        state.hold_reason = self._hold_reason(chat_id, chat, stored, messages)
        if chat is None and keys and not stored and not state.problem:
            state.problem = (
                f"chat {chat_id}: its record is gone from the source and its archive "
                f"{', '.join(keys)} cannot be read where it was written"
            )
        if state.hold_reason or state.problem:
            return state
        current = {m["id"]: m for m in messages}
        if self.write and any(
            _fingerprint(m) not in state.archived.get(i, ()) for i, m in current.items()
        ):
            known_chat = chat or next((d["chat"] for d in stored if d.get("chat")), None)
            self._put(state, known_chat, _every_copy(stored, messages))
            if chat is None and not keys:
                self._archived_keys()[chat_id] = keys = [state.key]
            self._read_all(state, keys or [state.key])
        return state

    def _archived_keys(self) -> dict[int, list[str]]:
        """Every chat archive under ``{p}/chats/``, by chat id, keys in date order."""
        if self._listed is None:
            found: dict[int, list[str]] = {}
            pages = self.s3_client.get_paginator("list_objects_v2").paginate(
                Bucket=self.target.bucket, Prefix=f"{self.target.prefix}/chats/"
            )
            for page in pages:
                for entry in page.get("Contents", []):
                    match = _CHAT_KEY.search(entry["Key"])
                    if match:
                        found.setdefault(int(match.group(1)), []).append(entry["Key"])
            self._listed = {chat_id: sorted(keys) for chat_id, keys in found.items()}
        return self._listed

    def _hold_reason(
        self, chat_id: int, chat: dict | None, stored: list[dict], messages: list[dict]
    ) -> str | None:
        """Why the chat is held, from the chat and messages at the source and archived."""
        known = [*(m for d in stored for m in d.get("messages", [])), *messages]
        reason = self.hold.chat_reason(chat_id, chat, known)
        for document in stored:
            reason = reason or self.hold.chat_reason(chat_id, document.get("chat"), [])
        return reason

    def _read_all(self, state: _ChatState, keys: list[str]) -> list[dict]:
        """Read the chat's archives at ``keys``; note what they hold in ``state``."""
        state.archived = {}
        documents = []
        for key in keys:
            try:
                stored, _ = read_checked_json(self.s3_client, self.target.bucket, key)
            except ClientError as error:
                if not is_not_found(error):
                    raise
                continue
            except ChangedObjectError:
                state.problem = f"chat archive {key} does not match its sha256 metadata"
                continue
            documents.append(stored)
            for m in stored.get("messages", []):
                state.archived.setdefault(m["id"], set()).add(_fingerprint(m))
        return documents

    def _put(self, state: _ChatState, chat: dict | None, messages: list[dict]) -> None:
        document = {
            "chat": chat,
            "messages": messages,
            "archived_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        from voipstudio_provider.engine.archive.writer import put_json

        put_json(self.s3_client, self.target, state.key, document, sha256_metadata=True)
