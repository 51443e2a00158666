"""From the endpoint table to request paths and query parameters, with every id checked.

Nothing here talks HTTP: it only turns the hook's arguments into what goes on the wire.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from typing import Any

from voipstudio_provider.endpoints import (
    FILTER_OPERATORS,
    MAX_URL_LENGTH,
    RESOURCES,
    Endpoint,
    Filter,
    Shape,
    endpoints_of,
)
from voipstudio_provider.layout import format_api_datetime

FilterLike = Filter | dict[str, Any]


def positive_id(value: Any, what: str = "id") -> int:
    """Return ``value`` if it is a positive ``int`` (``bool`` excluded), else raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return value


def filter_entries(filters: Iterable[FilterLike] | None) -> list[dict[str, Any]]:
    """Filters as the API's ``{"property", "operator", "value"}`` dicts, operators checked."""
    entries = []
    for item in filters or ():
        entry = item.as_dict() if isinstance(item, Filter) else dict(item)
        if set(entry) != {"property", "operator", "value"}:
            raise ValueError(f"a filter needs exactly property, operator and value: {entry!r}")
        if entry["operator"] not in FILTER_OPERATORS:
            raise ValueError(
                f"filter operator {entry['operator']!r} is not one of {FILTER_OPERATORS}"
            )
        entries.append(entry)
    return entries


def date_filters(
    resource: str, since: dt.datetime | None, until: dt.datetime | None
) -> list[dict[str, Any]]:
    """``since`` (inclusive) and ``until`` (exclusive) on the resource's own date field."""
    if since is None and until is None:
        return []
    date_field = RESOURCES[resource].date_field
    if date_field is None:
        raise ValueError(f"{resource} records have no date field to filter on")
    entries = []
    if since is not None:
        entries.append(Filter(date_field, "gte", _api_datetime(since, "since")).as_dict())
    if until is not None:
        entries.append(Filter(date_field, "lt", _api_datetime(until, "until")).as_dict())
    return entries


def _api_datetime(value: dt.datetime, name: str) -> str:
    if not isinstance(value, dt.datetime) or value.tzinfo is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {value!r}")
    return format_api_datetime(value)


def path_of(ep: Endpoint, *, id: Any = None, ids: Iterable[Any] | None = None) -> str:
    """The path of ``ep`` below the base URL, its ``{id}``/``{ids}`` filled and checked."""
    if ep.takes_id:
        return ep.path.format(id=positive_id(id))
    if ep.takes_ids:
        id_list = [positive_id(i) for i in ids or ()]
        if not id_list:
            raise ValueError(f"{ep.operation} needs at least one id")
        return ep.path.format(ids=",".join(map(str, id_list)))
    if id is not None or ids is not None:
        raise ValueError(f"{ep.operation} takes no id")
    return ep.path


def endpoint_for(resource: str, shape: Shape) -> Endpoint:
    """The endpoint of ``shape`` serving ``resource`` (its main one when there are two)."""
    if resource not in RESOURCES:
        raise ValueError(f"unknown VoIPstudio resource {resource!r}")
    candidates = endpoints_of(resource, shape)
    if len(candidates) > 1:
        main = {f"/{resource}", f"/{resource}/{{id}}", f"/{resource}/{{ids}}"}
        candidates = [e for e in candidates if e.path in main]
    if len(candidates) != 1:
        raise ValueError(f"{resource} has no single {shape.value} endpoint")
    return candidates[0]


def url_chunks(base_url: str, ep: Endpoint, id_list: list[int]) -> Iterator[list[int]]:
    """Split ids so that every ``base_url + path`` stays below ``MAX_URL_LENGTH`` characters."""
    fixed = len(base_url) + len(ep.path.format(ids=""))
    chunk: list[int] = []
    length = fixed
    for record_id in id_list:
        extra = len(str(record_id)) + (1 if chunk else 0)
        if chunk and length + extra >= MAX_URL_LENGTH:
            yield chunk
            chunk, length, extra = [], fixed, len(str(record_id))
        if length + extra >= MAX_URL_LENGTH:
            raise ValueError("the base URL is too long to delete even one id per request")
        chunk.append(record_id)
        length += extra
    if chunk:
        yield chunk
