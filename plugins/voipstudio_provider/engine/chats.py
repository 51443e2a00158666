"""Each chat with all its messages archived before any of its messages is deleted.

:class:`ChatArchive` keeps ``{p}/chats/date=YYYY-MM-DD/{chat_id}.json`` and answers, for one
chat message, whether it may go: its chat is not held and its exact copy is archived.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from botocore.exceptions import ClientError

from voipstudio_provider.endpoints import Filter
from voipstudio_provider.engine.layout import chat_key, record_day
from voipstudio_provider.engine.policy import LegalHold
from voipstudio_provider.engine.s3objects import ChangedObjectError, is_not_found, read_checked_json
from voipstudio_provider.exceptions import VoIPstudioNotFoundError


def _fingerprint(record: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


class _ChatState:
    """What one chat's archive holds: its key, why it is held, the archived messages."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.hold_reason: str | None = None
        self.archived: dict[int, str] = {}  # message id -> fingerprint of the archived copy
        self.problem: str | None = None  # why the archive cannot be trusted


class ChatArchive:
    """Each chat with all its messages in ``{p}/chats/date=YYYY-MM-DD/{chat_id}.json``.

    The object is ``{"chat": {...}, "messages": [...], "archived_at": ...}`` with the body's
    SHA-256 in its ``sha256`` metadata. Messages archived by an earlier run (and since
    deleted at the source) stay in it: a new copy merges the old one with what the API has
    now. An object that does not match its own ``sha256`` is never overwritten; its chat's
    messages are kept. A chat is held as a whole when its id is held or a held number is
    in a visitor field or in any of its messages.

    :param write: archive chats (off for dry runs, which only say what they would do).
    """

    def __init__(self, hook, s3_client, target, hold: LegalHold, *, write: bool) -> None:
        self.hook = hook
        self.s3_client = s3_client
        self.target = target
        self.hold = hold
        self.write = write
        self._chats: dict[int, _ChatState] = {}

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
        if state.archived.get(message["id"]) == _fingerprint(message):
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
        first = min(messages or [message], key=lambda m: m["id"])
        day = record_day("chats", chat) if chat else record_day("chatmsgs", first)
        state = _ChatState(chat_key(self.target.prefix, chat_id, day))
        # The archive first: a message naming a held number may have been deleted at the
        # source by an earlier run, and still holds the rest of its chat.
        stored = self._read(state)
        state.hold_reason = self._hold_reason(chat_id, chat, stored, messages)
        if state.hold_reason or state.problem:
            return state
        current = {m["id"]: m for m in messages}
        if self.write and any(state.archived.get(i) != _fingerprint(m) for i, m in current.items()):
            merged = {m["id"]: m for m in (stored or {}).get("messages", [])} | current
            self._put(state, chat or (stored or {}).get("chat"), merged)
            self._read(state)
        return state

    def _hold_reason(
        self, chat_id: int, chat: dict | None, stored: dict | None, messages: list[dict]
    ) -> str | None:
        """Why the chat is held, from the chat and messages at the source and archived."""
        stored = stored or {}
        known = [*stored.get("messages", []), *messages]
        return self.hold.chat_reason(chat_id, chat, known) or self.hold.chat_reason(
            chat_id, stored.get("chat"), []
        )

    def _read(self, state: _ChatState) -> dict | None:
        try:
            stored, _ = read_checked_json(self.s3_client, self.target.bucket, state.key)
        except ClientError as error:
            if not is_not_found(error):
                raise
            state.archived = {}
            return None
        except ChangedObjectError:
            state.problem = "chat archive does not match its sha256 metadata"
            return None
        state.archived = {m["id"]: _fingerprint(m) for m in stored.get("messages", [])}
        return stored

    def _put(self, state: _ChatState, chat: dict | None, messages: dict[int, dict]) -> None:
        document = {
            "chat": chat,
            "messages": [messages[i] for i in sorted(messages)],
            "archived_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        from voipstudio_provider.engine.archive import put_json

        put_json(self.s3_client, self.target, state.key, document, sha256_metadata=True)
