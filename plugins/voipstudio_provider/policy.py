"""Retention policy and legal hold: what may be deleted at the source, and what never.

Both come from Airflow Variables (CONTRACT.md): ``voipstudio_retention_policy`` holds the
days to keep per resource, ``voipstudio_legal_hold`` the ids per resource and the phone
numbers that are never deleted. This module only parses and answers questions; it reads
no Variable and calls no API, so it is tested without Airflow.

Phone numbers are read and compared by :mod:`voipstudio_provider.phone_numbers` (E.164, with
libphonenumber). Every held number must be one valid number, or the hold is refused.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from voipstudio_provider.layout import as_utc

# CHAT_VISITOR_FIELDS and normalize_number are re-exported for code of earlier releases.
from voipstudio_provider.phone_numbers import CHAT_VISITOR_FIELDS as CHAT_VISITOR_FIELDS
from voipstudio_provider.phone_numbers import (
    FoundNumber,
    find_match,
    parse_number,
    record_numbers,
    regions_of,
    to_e164,
)
from voipstudio_provider.phone_numbers import normalize_number as normalize_number

#: The resources retention deletes at the source, and their days to keep when the
#: Variable ``voipstudio_retention_policy`` is unset.
DEFAULT_RETENTION_DAYS: dict[str, int] = {"monitors": 365, "voicemessages": 90, "chatmsgs": 365}
RETENTION_RESOURCES: tuple[str, ...] = tuple(DEFAULT_RETENTION_DAYS)
#: Resources whose ids a legal hold may name: the deletable ones, plus whole chats.
HOLD_RESOURCES: tuple[str, ...] = (*RETENTION_RESOURCES, "chats")


def _load(value: str | Mapping | None, name: str) -> Mapping | None:
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


def parse_retention_policy(value: str | Mapping | None) -> dict[str, int | None]:
    """Days to keep per resource, from the Variable ``voipstudio_retention_policy``.

    An unset or empty Variable gives :data:`DEFAULT_RETENTION_DAYS`. A Variable overrides
    the defaults resource by resource; ``null`` keeps a resource forever.

    :param value: the Variable's JSON text, or an already decoded mapping.
    :return: ``{"monitors": 365, "voicemessages": 90, "chatmsgs": 365}`` or overrides.
    :raises ValueError: unknown resource, or days that are not a whole number of at least 1.
    """
    policy: dict[str, int | None] = dict(DEFAULT_RETENTION_DAYS)
    given = _load(value, "voipstudio_retention_policy")
    for resource, days in (given or {}).items():
        if resource not in DEFAULT_RETENTION_DAYS:
            raise ValueError(
                f"voipstudio_retention_policy names {resource!r}; "
                f"retention applies to {', '.join(RETENTION_RESOURCES)}"
            )
        if days is not None and (isinstance(days, bool) or not isinstance(days, int)):
            raise ValueError(f"days to keep {resource} must be a whole number, not {days!r}")
        if days is not None and days < 1:
            # Zero would delete everything up to the run's end: refuse rather than guess.
            raise ValueError(f"days to keep {resource} must be at least 1, not {days}")
        policy[resource] = days
    return policy


def retention_cutoff(days: int, reference: dt.datetime) -> dt.datetime:
    """The moment before which a record is older than ``days``, counted from ``reference``.

    Retention counts from the run's ``data_interval_end``, not from the wall clock, so a
    re-run of the same run deletes up to the same moment.

    :param days: days to keep.
    :param reference: an aware datetime, normally the run's ``data_interval_end``.
    """
    if reference.tzinfo is None:
        raise ValueError("the retention reference time must be timezone-aware")
    # Plain UTC: the hook refuses a naive cutoff, which pendulum's astimezone() would give.
    return as_utc(reference) - dt.timedelta(days=days)


@dataclass(frozen=True)
class LegalHold:
    """Ids and phone numbers that are never deleted, from ``voipstudio_legal_hold``.

    :param ids: held ids per resource (``monitors``, ``voicemessages``, ``chatmsgs``,
        ``chats``; a held chat holds all its messages).
    :param numbers: held numbers in E.164 (``+442079460321``).
    :param region: the region national numbers in records are read in (the Variable
        ``voipstudio_default_region``); ``None`` when it is not set.
    """

    ids: Mapping[str, frozenset[int]] = field(default_factory=dict)
    numbers: frozenset[str] = frozenset()
    region: str | None = None

    @cached_property
    def _held(self) -> tuple:
        return tuple(parse_number(n, None, source="held number") for n in sorted(self.numbers))

    @property
    def regions(self) -> tuple[str, ...]:
        """Regions a national number in a record is read in: the default region, or
        without one each held number's own country, so that a missing region never
        releases a record that may name a held number."""
        return (self.region,) if self.region else regions_of(self._held)

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
    given = _load(value, "voipstudio_legal_hold") or {}
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
