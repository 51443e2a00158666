"""API tokens made with ``POST /apitokens``, as the vendor's command-line client uses them.

``auth login`` posts ``/login``, then ``/apitokens {name, expiry}`` (201 ``{data:{token}}``);
``auth logout`` revokes with ``DELETE /apitokens/{token}``, after which the token answers
401. A token's idle expiry is refreshed by every request it makes. Tokens live as long as
the sandbox process and a reset forgets them, like ``POST /login`` sessions.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import threading
import time
from typing import Any

from voipstudio_provider.endpoints import DATE_FORMAT

#: An API token expires after this long without requests (the vendor CLI: 30 days).
API_TOKEN_IDLE_SECONDS = 30 * 24 * 3600
#: What ``GET /apitokens`` may be filtered on, and how.
_FILTERABLE = ("id", "name")
_OPERATORS = ("eq", "like")


def _expiry(value: Any) -> dt.datetime | None:
    """An ``expiry`` of ``YYYY-MM-DD`` or ``YYYY-MM-DD HH:MM:SS`` (UTC), or none."""
    if value in (None, ""):
        return None
    if isinstance(value, str):
        for form in (DATE_FORMAT, "%Y-%m-%d"):
            try:
                return dt.datetime.strptime(value, form).replace(tzinfo=dt.UTC)
            except ValueError:
                continue
    raise ValueError("expiry must be a date YYYY-MM-DD or YYYY-MM-DD HH:MM:SS")


class ApiTokens:
    """The account's API tokens: who owns each, its name and expiry, when it was last used."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._tokens: dict[str, dict[str, Any]] = {}
        self._next_id = 1

    def clear(self) -> None:
        with self.lock:
            self._tokens.clear()
            self._next_id = 1

    def create(self, user_id: int, payload: Any) -> dict[str, Any]:
        """A new token of ``user_id`` from ``{"name", "expiry"}``; ``{"id", "name", "token",
        "expiry"}``. Raises ValueError for a payload without a name or with a bad expiry."""
        if not isinstance(payload, dict) or not str(payload.get("name") or "").strip():
            raise ValueError("name is required")
        expiry = _expiry(payload.get("expiry"))
        now = dt.datetime.now(dt.UTC)
        with self.lock:
            record = {
                "id": self._next_id,
                "name": str(payload["name"]),
                "token": secrets.token_hex(20),
                "expiry": expiry.strftime(DATE_FORMAT) if expiry else None,
                "created_at": now.strftime(DATE_FORMAT),
                "user_id": user_id,
            }
            self._next_id += 1
            self._tokens[record["token"]] = {**record, "_expires": expiry,
                                             "_used": time.monotonic()}  # fmt: skip
        return record

    def user_of(self, token: str) -> int | None:
        """The user a live token belongs to (its use refreshes the idle expiry), else None."""
        with self.lock:
            entry = self._tokens.get(token)
            if entry is None:
                return None
            expired = entry["_expires"] is not None and entry["_expires"] <= dt.datetime.now(dt.UTC)
            if expired or time.monotonic() - entry["_used"] > API_TOKEN_IDLE_SECONDS:
                return None
            entry["_used"] = time.monotonic()
            return int(entry["user_id"])

    def listed(self, user_id: int, raw_filter: str | None) -> list[dict[str, Any]]:
        """``user_id``'s tokens by id, matching the ``filter`` (on ``name`` or ``id``)."""
        conditions = _conditions(raw_filter)
        with self.lock:
            mine = [
                {k: v for k, v in entry.items() if not k.startswith("_")}
                for entry in self._tokens.values()
                if entry["user_id"] == user_id
            ]
        return sorted(
            (row for row in mine if all(_matches(row, c) for c in conditions)),
            key=lambda row: row["id"],
        )

    def revoke(self, token: str, owner: int | None) -> bool:
        """Revoke ``token`` if it exists and, when ``owner`` is set, is theirs."""
        with self.lock:
            entry = self._tokens.get(token)
            if entry is None or (owner is not None and entry["user_id"] != owner):
                return False
            del self._tokens[token]
            return True


def _conditions(raw: str | None) -> list[dict[str, Any]]:
    if raw in (None, ""):
        return []
    try:
        conditions = json.loads(raw)
    except ValueError:
        raise ValueError("filter is not valid JSON") from None
    if isinstance(conditions, dict):
        conditions = [conditions]
    if not isinstance(conditions, list):
        raise ValueError("filter must be a JSON list of conditions")
    for condition in conditions:
        if not isinstance(condition, dict) or condition.get("property") not in _FILTERABLE:
            raise ValueError(f"API tokens can be filtered on {', '.join(_FILTERABLE)} only")
        if condition.get("operator", "eq") not in _OPERATORS:
            raise ValueError(f"API tokens are filtered with {', '.join(_OPERATORS)} only")
    return conditions


def _matches(row: dict[str, Any], condition: dict[str, Any]) -> bool:
    value = row[condition["property"]]
    if condition.get("operator", "eq") == "like":
        return str(condition.get("value")).lower() in str(value).lower()
    return value == condition.get("value")
