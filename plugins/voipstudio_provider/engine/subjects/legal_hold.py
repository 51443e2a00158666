"""Legal hold: the ids and phone numbers that are never deleted, at the source or in the
archive.

The hold comes from the Airflow Variable ``voipstudio_legal_hold`` (CONTRACT.md): the ids
per resource and the phone numbers that are never deleted. This module only parses and
answers questions; it reads no Variable and calls no API, so it is tested without Airflow.

Phone numbers are read and compared by :mod:`voipstudio_provider.engine.subjects.phone_numbers`
(E.164, with libphonenumber). Every held number must be one valid number, or the hold is
refused.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from voipstudio_provider.engine.subjects.phone_numbers import (
    FoundNumber,
    find_match,
    parse_number,
    reading_regions,
    record_numbers,
    to_e164,
)

#: Resources whose ids a legal hold may name: those retention deletes
#: (:data:`~voipstudio_provider.engine.deletion.retention.RETENTION_RESOURCES`), plus whole
#: chats.
HOLD_RESOURCES: tuple[str, ...] = ("monitors", "voicemessages", "chatmsgs", "chats")


def json_object(value: str | Mapping | None, name: str) -> Mapping | None:
    """A Variable's JSON object, ``None`` when the Variable is unset or blank.

    :param value: the Variable's JSON text, or an already decoded mapping.
    :param name: the Variable's name, for the error.
    :raises ValueError: not JSON, or not a JSON object.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as error:
            raise ValueError(f"{name} is not valid JSON: {error}") from None
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} must be a JSON object, not {type(value).__name__}")
    return value


@dataclass(frozen=True)
class LegalHold:
    """Ids and phone numbers that are never deleted, from ``voipstudio_legal_hold``.

    :param ids: held ids per resource (``monitors``, ``voicemessages``, ``chatmsgs``,
        ``chats``; a held chat holds all its messages).
    :param numbers: held numbers in E.164 (``+442079460321``).
    :param region: the Variable ``voipstudio_default_region``, ``None`` when it is not
        set: national numbers in records are read in it and in each held number's own
        country (:attr:`regions`).
    """

    ids: Mapping[str, frozenset[int]] = field(default_factory=dict)
    numbers: frozenset[str] = frozenset()
    region: str | None = None

    @cached_property
    def _held(self) -> tuple:
        return tuple(parse_number(n, None, source="held number") for n in sorted(self.numbers))

    @property
    def regions(self) -> tuple[str, ...]:
        """Regions a national number in a record is read in: each held number's own
        country and the default region, so that no region ever releases a record that may
        name a held number (``020 7946 0321`` is held for ``+44 20 7946 0321`` under ``US``
        too)."""
        return reading_regions(self.region, self._held)

    def held_id(self, resource: str, record_id: int) -> bool:
        """Whether ``record_id`` of ``resource`` is held by id."""
        return int(record_id) in self.ids.get(resource, frozenset())

    def numbers_of(self, resource: str, record: Mapping[str, Any]) -> list[FoundNumber]:
        """The numbers of a record, read as the hold reads them (see :attr:`regions`)."""
        return record_numbers(resource, record, self.regions) if self.numbers else []

    def held_number(self, numbers: Iterable[FoundNumber]) -> str | None:
        """The held number (E.164) that one of ``numbers`` is, or ``None``."""
        match = find_match(numbers, self._held)
        return to_e164(match[1]) if match else None

    def reason(self, resource: str, record: Mapping[str, Any]) -> str | None:
        """Why ``record`` is held (``legal_hold_id`` / ``legal_hold_number``), or ``None``.

        A chat message is also held through its chat; :func:`chat_hold_reason` says that.
        """
        if self.held_id(resource, record["id"]):
            return "legal_hold_id"
        if self.held_number(self.numbers_of(resource, record)):
            return "legal_hold_number"
        return None

    def chat_reason(
        self, chat_id: int, chat: Mapping[str, Any] | None, messages: Iterable[Mapping]
    ) -> str | None:
        """Why a whole chat is held: its id, or a held number in a visitor field or message.

        :param chat_id: the chat's id.
        :param chat: the chat record, ``None`` if the API no longer has it.
        :param messages: every message of the chat that is known.
        """
        if self.held_id("chats", chat_id):
            return "legal_hold_id"
        numbers = self.numbers_of("chats", chat) if chat else []
        for message in messages:
            numbers.extend(self.numbers_of("chatmsgs", message))
        if self.held_number(numbers):
            return "legal_hold_number"
        return None

    def describe(self) -> dict[str, Any]:
        """Counts only, safe to log: how many ids per resource and how many numbers."""
        return {
            "ids": {resource: len(ids) for resource, ids in self.ids.items()},
            "numbers": len(self.numbers),
        }


def parse_legal_hold(value: str | Mapping | None, region: str | None = None) -> LegalHold:
    """The legal hold from the Variable ``voipstudio_legal_hold``.

    Format: ``{"ids": {"monitors": [1, 2], "voicemessages": [], "chatmsgs": [],
    "chats": [7]}, "numbers": ["+44 20 7946 0000"]}``; both keys are optional and an
    unset Variable holds nothing.

    :param value: the Variable's JSON text, or an already decoded mapping.
    :param region: the region national numbers are read in (``voipstudio_default_region``);
        without one, a national entry such as ``020 7946 0000`` is refused.
    :raises ValueError: a malformed hold, naming the entry: every number must be one valid
        phone number. A hold that cannot be read must stop a deletion rather than be
        ignored.
    """
    given = json_object(value, "voipstudio_legal_hold") or {}
    unknown = set(given) - {"ids", "numbers"}
    if unknown:
        raise ValueError(f"voipstudio_legal_hold has unknown keys {sorted(unknown)}")
    raw_ids = given.get("ids") or {}
    if not isinstance(raw_ids, Mapping):
        raise ValueError("voipstudio_legal_hold 'ids' must map resources to lists of ids")
    ids: dict[str, frozenset[int]] = {}
    for resource, values in raw_ids.items():
        if resource not in HOLD_RESOURCES:
            raise ValueError(
                f"voipstudio_legal_hold names {resource!r}; holds apply to "
                f"{', '.join(HOLD_RESOURCES)}"
            )
        if not isinstance(values, list):
            raise ValueError(f"voipstudio_legal_hold ids of {resource} must be a list")
        try:
            ids[resource] = frozenset(_hold_id(v) for v in values)
        except ValueError:
            raise ValueError(f"voipstudio_legal_hold ids of {resource} must be integers") from None
    raw_numbers = given.get("numbers") or []
    if not isinstance(raw_numbers, list):
        raise ValueError("voipstudio_legal_hold 'numbers' must be a list")
    numbers = frozenset(
        to_e164(parse_number(entry, region, source=f"voipstudio_legal_hold numbers[{index}]"))
        for index, entry in enumerate(raw_numbers)
    )
    return LegalHold(ids=ids, numbers=numbers, region=region)


def _hold_id(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, int):
        return value
    raise ValueError(value)
