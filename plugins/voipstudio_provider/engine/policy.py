"""Retention policy and legal hold: what may be deleted at the source, and what never.

Both come from Airflow Variables (CONTRACT.md): ``voipstudio_retention_policy`` holds the
days to keep per resource, ``voipstudio_legal_hold`` the ids per resource and the phone
numbers that are never deleted. This module only parses and answers questions; it reads
no Variable and calls no API, so it is tested without Airflow.

Phone numbers are read and compared by :mod:`voipstudio_provider.engine.phone_numbers` (E.164, with
libphonenumber). Every held number must be one valid number, or the hold is refused.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from voipstudio_provider.endpoints import as_utc

# CHAT_VISITOR_FIELDS and normalize_number are re-exported for code of earlier releases.
from voipstudio_provider.engine.phone_numbers import CHAT_VISITOR_FIELDS as CHAT_VISITOR_FIELDS
from voipstudio_provider.engine.phone_numbers import (
    FoundNumber,
    find_match,
    parse_number,
    reading_regions,
    record_numbers,
    to_e164,
)
from voipstudio_provider.engine.phone_numbers import normalize_number as normalize_number

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


#: The key of the policy Variable that holds ``max_deletions`` per resource.
BUDGETS_KEY = "max_deletions"


def retention_policy_is_set(value: str | Mapping | None) -> bool:
    """Whether the Variable ``voipstudio_retention_policy`` holds a policy at all.

    Until it does, retention deletes nothing: a run is a dry run that says why.
    """
    return _load(value, "voipstudio_retention_policy") is not None


def _whole_number(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be a whole number, not {value!r}")
    if value < 1:
        # Zero days would delete everything up to the run's end: refuse rather than guess.
        raise ValueError(f"{what} must be at least 1, not {value}")
    return value


def parse_retention_policy(value: str | Mapping | None) -> dict[str, int | None]:
    """Days to keep per resource, from the Variable ``voipstudio_retention_policy``.

    An unset or empty Variable gives :data:`DEFAULT_RETENTION_DAYS` (which retention then
    only reports on: see :func:`retention_policy_is_set`). A Variable overrides the
    defaults resource by resource; ``null`` keeps a resource forever. Its optional key
    ``max_deletions`` is read by :func:`parse_retention_budgets`.

    :param value: the Variable's JSON text, or an already decoded mapping.
    :return: ``{"monitors": 365, "voicemessages": 90, "chatmsgs": 365}`` or overrides.
    :raises ValueError: unknown resource, or days that are not a whole number of at least 1.
    """
    policy: dict[str, int | None] = dict(DEFAULT_RETENTION_DAYS)
    given = _load(value, "voipstudio_retention_policy") or {}
    parse_retention_budgets(given)
    for resource, days in given.items():
        if resource == BUDGETS_KEY:
            continue
        if resource not in DEFAULT_RETENTION_DAYS:
            raise ValueError(
                f"voipstudio_retention_policy names {resource!r}; "
                f"retention applies to {', '.join(RETENTION_RESOURCES)}"
            )
        policy[resource] = None if days is None else _whole_number(days, f"days to keep {resource}")
    return policy


def parse_retention_budgets(value: str | Mapping | None) -> dict[str, int]:
    """``max_deletions`` per resource, from the policy's ``max_deletions`` key.

    ``{"monitors": 365, "max_deletions": {"monitors": 500, "chatmsgs": 5000}}`` lets one run
    delete at most 500 recordings and 5,000 chat messages; a resource not named there gets
    the run's ``max_deletions`` param alone.

    :raises ValueError: not a mapping of known resources to whole numbers of at least 1.
    """
    given = _load(value, "voipstudio_retention_policy") or {}
    budgets = given.get(BUDGETS_KEY) or {}
    if not isinstance(budgets, Mapping):
        raise ValueError(
            f"voipstudio_retention_policy {BUDGETS_KEY!r} must map resources to numbers, "
            f'e.g. {{"monitors": 500}}, not {budgets!r}'
        )
    unknown = set(budgets) - set(RETENTION_RESOURCES)
    if unknown:
        raise ValueError(
            f"voipstudio_retention_policy {BUDGETS_KEY!r} names {sorted(unknown)}; "
            f"retention applies to {', '.join(RETENTION_RESOURCES)}"
        )
    return {r: _whole_number(n, f"{BUDGETS_KEY} of {r}") for r, n in budgets.items()}


def retention_reference(
    data_interval_end: dt.datetime, now: dt.datetime | None = None
) -> dt.datetime:
    """The moment retention counts back from: ``min(data_interval_end, now)``, plain UTC.

    :param data_interval_end: the run's end (aware).
    :param now: the wall clock (default: now).
    """
    if data_interval_end.tzinfo is None:
        raise ValueError("the run's data_interval_end must be timezone-aware")
    return min(as_utc(data_interval_end), now or dt.datetime.now(dt.UTC))


def retention_cutoff(days: int, reference: dt.datetime) -> dt.datetime:
    """The moment before which a record is older than ``days``, counted from ``reference``.

    Retention counts from the earlier of the run's ``data_interval_end`` and now (see
    :func:`retention_reference`), so a re-run of the same run deletes up to the same
    moment and a run dated in the future deletes nothing newer than it would today.

    :param days: days to keep.
    :param reference: an aware datetime, normally :func:`retention_reference`'s answer.
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
