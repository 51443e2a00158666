"""What a person asked a compliance purge for, as a value the engine can decide with.

:class:`PurgeRequest` is built from the purge form by
:func:`voipstudio_provider.tasks.purge.parse_purge_request`; it knows which records it
matches (exactly one E.164 number, through :mod:`~.phone_numbers`) and the criteria a plan
records (:mod:`~.plans`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from voipstudio_provider.engine.deletion import DEFAULT_MAX_DELETIONS
from voipstudio_provider.engine.phone_numbers import find_match, parse_number, record_numbers

if TYPE_CHECKING:
    from phonenumbers import PhoneNumber

    from voipstudio_provider.engine.phone_numbers import FoundNumber

PURGE_RESOURCES: tuple[str, ...] = ("monitors", "voicemessages", "chatmsgs")
CONFIRM_PHRASE = "PURGE"
#: What a masked CDR shows instead of the number.
MASKED_NUMBER = "masked"
MASK_BATCH = 100


@dataclass(frozen=True)
class PurgeRequest:
    """What a person asked for in the purge form.

    :param resources: which of :data:`PURGE_RESOURCES` to purge.
    :param older_than: purge records dated before this UTC day.
    :param phone_number: purge records involving exactly this number, in E.164.
    :param dry_run: plan and report only.
    :param confirm: must be exactly ``PURGE`` for anything to be deleted.
    :param require_archive: delete only what is verified in the archive.
    :param mask_cdrs: mask ``phone_number`` in matching CDRs.
    :param max_deletions: the most items the purge may delete; a larger plan stops the
        run before anything is deleted.
    :param plan_run_id: the dry run whose plan a confirmed purge executes.
    :param region: the region national numbers in records are read in
        (``voipstudio_default_region``); ``None`` reads international forms only.
    """

    resources: tuple[str, ...]
    older_than: dt.date | None = None
    phone_number: str | None = None
    dry_run: bool = True
    confirm: str = ""
    require_archive: bool = True
    mask_cdrs: bool = False
    max_deletions: int = DEFAULT_MAX_DELETIONS
    plan_run_id: str | None = None
    region: str | None = None

    @property
    def confirmed(self) -> bool:
        """Deleting is allowed: not a dry run, and ``confirm`` is exactly ``PURGE``."""
        return not self.dry_run and self.confirm == CONFIRM_PHRASE

    @property
    def cutoff(self) -> dt.datetime | None:
        if self.older_than is None:
            return None
        return dt.datetime.combine(self.older_than, dt.time(), tzinfo=dt.UTC)

    @property
    def regions(self) -> tuple[str, ...]:
        return (self.region,) if self.region else ()

    @cached_property
    def _number(self) -> PhoneNumber:
        return parse_number(self.phone_number, None, source="phone_number")

    def matched_text(self, numbers: Iterable[FoundNumber]) -> str | None:
        """The text of the first of ``numbers`` that is the purge's number beyond doubt."""
        match = find_match(numbers, [self._number], exact=True)
        return match[0].text if match else None

    def match(self, resource: str, record: Mapping[str, Any]) -> str | None:
        """The number text in ``record`` that is the purge's number, or ``None``."""
        if self.phone_number is None:
            return None
        return self.matched_text(record_numbers(resource, record, self.regions))

    def matches(self, resource: str, record: Mapping[str, Any]) -> bool:
        """Whether a record's own fields match (the date is filtered by the API)."""
        return self.phone_number is None or self.match(resource, record) is not None

    def criteria(self) -> dict[str, Any]:
        values = asdict(self)
        values["older_than"] = self.older_than.isoformat() if self.older_than else None
        values["resources"] = list(self.resources)
        values.pop("confirm")
        values.pop("plan_run_id")
        return values
