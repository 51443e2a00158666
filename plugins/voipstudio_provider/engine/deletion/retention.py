"""Retention policy: how long each resource is kept at the source, and how many records
one run may delete.

The policy comes from the Airflow Variable ``voipstudio_retention_policy`` (CONTRACT.md):
the days to keep per resource and the optional ``max_deletions`` per resource. This module
only parses and answers questions; it reads no Variable and calls no API, so it is tested
without Airflow. What is held whatever the policy says is
:mod:`~voipstudio_provider.engine.subjects.legal_hold`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from voipstudio_provider.endpoints import as_utc
from voipstudio_provider.engine.subjects.legal_hold import json_object

#: The resources retention deletes at the source, and their days to keep when the
#: Variable ``voipstudio_retention_policy`` is unset.
DEFAULT_RETENTION_DAYS: dict[str, int] = {"monitors": 365, "voicemessages": 90, "chatmsgs": 365}
RETENTION_RESOURCES: tuple[str, ...] = tuple(DEFAULT_RETENTION_DAYS)

#: The key of the policy Variable that holds ``max_deletions`` per resource.
BUDGETS_KEY = "max_deletions"


def retention_policy_is_set(value: str | Mapping | None) -> bool:
    """Whether the Variable ``voipstudio_retention_policy`` holds a policy at all.

    Until it does, retention deletes nothing: a run is a dry run that says why.
    """
    return json_object(value, "voipstudio_retention_policy") is not None


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
    given = json_object(value, "voipstudio_retention_policy") or {}
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
    given = json_object(value, "voipstudio_retention_policy") or {}
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
