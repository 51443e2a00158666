"""From the endpoint table to request paths and query parameters, with every id checked.

Nothing here talks HTTP: it only turns the hook's arguments into what goes on the wire, and
refuses (before anything is sent) a ``DELETE`` that could erase a whole collection.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, unquote, urlsplit

from voipstudio_provider.endpoints import (
    ENDPOINTS,
    FILTER_OPERATORS,
    MAX_URL_LENGTH,
    RESOURCES,
    Endpoint,
    Filter,
    Shape,
    endpoints_of,
    format_api_datetime,
)

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


def encode_json(value: Any) -> str:
    """Compact JSON, as the ``filter`` query parameter carries it."""
    return json.dumps(value, separators=(",", ":"), default=str)


def encoded_query(params: dict[str, Any] | None) -> dict[str, Any]:
    """A copy of ``params`` whose ``filter``, when given as :class:`Filter` or dicts, is the
    JSON text the API reads; a ``filter`` already written as text goes as it is."""
    query = dict(params or {})
    if "filter" in query and not isinstance(query["filter"], str):
        query["filter"] = encode_json(filter_entries(query["filter"]))
    return query


def keyset_params(fixed: list[dict[str, Any]], last_id: int | None, limit: int) -> dict[str, Any]:
    """The query of the next keyset page: the first page of ``id > last_id``, ids ascending."""
    keyset = [] if last_id is None else [Filter("id", "gt", last_id).as_dict()]
    params: dict[str, Any] = {"page": 1, "limit": limit}
    if fixed + keyset:
        params["filter"] = encode_json(fixed + keyset)
    return {**params, "sort": "id", "dir": "ASC"}


class RunRequest(NamedTuple):
    """What :meth:`VoIPstudioHook.run` sends: the path, its query, its body and timeout."""

    path: str
    params: dict[str, Any]
    json: Any
    data: Any
    timeout: Any


def run_request(
    method: str,
    endpoint: str | None,
    data: Any,
    json: Any,
    extra_options: dict[str, Any] | None,
    base_url: str,
) -> RunRequest:
    """Read ``run()``'s arguments: a path under the base URL (its query kept), ``data`` as the
    query of a ``GET`` or the body of other methods (a dict or list goes as JSON), and of
    ``extra_options`` only ``timeout``. Raises ``ValueError`` for anything else.

    The path is returned as :func:`resolve_path` reads it below ``base_url``, so what is
    judged is what is sent; a ``DELETE`` of a collection is refused here already.
    """
    options = dict(extra_options or {})
    timeout = options.pop("timeout", None)
    options.pop("check_response", None)  # a non-2xx answer always raises
    if options:
        raise ValueError(f"run() does not support extra_options {sorted(options)}")
    path, query = resolve_path(base_url, endpoint)
    if method == "DELETE":
        refuse_collection_delete(path)
    params: dict[str, Any] = dict(parse_qsl(query))
    body = None
    if method == "GET" and data is not None:
        params.update(parse_qsl(data) if isinstance(data, str) else data)
    elif isinstance(data, dict | list) and json is None:
        json = data
    elif data is not None:
        body = data
    return RunRequest(path, params, json, body, timeout)


# -- the URL that is sent ----------------------------------------------------------------

_UNDER_BASE = "run() takes a path under the connection's base URL, e.g. 'cdrs'"
#: What a path may still hold once read: the History API's paths are ids, names and commas.
_PATH_CHARACTERS = re.compile(r"[A-Za-z0-9._~,/-]*")
_VISIBLE_ASCII = re.compile(r"[\x21-\x7e]*")


def base_url_of(host: str) -> str:
    """The connection's base URL as requests are sent to it: ``http(s)://host[:port]/path``
    with repeated slashes and dot segments of its path resolved and no trailing slash.

    :raises ValueError: not an ``http``/``https`` URL, or one with a query or fragment.
    """
    parts = urlsplit(host.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise ValueError("the base URL must be http(s)://host/path")
    if parts.query or parts.fragment or not _VISIBLE_ASCII.fullmatch(host.strip()):
        raise ValueError("the base URL must be a plain http(s)://host/path")
    path = _without_dot_segments(re.sub(r"/+", "/", "/" + parts.path)).rstrip("/")
    return f"{parts.scheme.lower()}://{parts.netloc}{path}"


def resolve_path(base_url: str, endpoint: str | None) -> tuple[str, str]:
    """Where a request for ``endpoint`` lands below ``base_url``, read as leniently as any
    server or proxy on the way may read it; return ``(path, query)``.

    The path is percent-decoded until nothing changes (``%252E`` is a dot too), backslashes
    are slashes, a ``?`` or ``#`` that decoding reveals ends it, ``;params`` are dropped
    from every segment, repeated slashes collapse, dot segments are removed (RFC 3986) and
    a trailing slash goes. The answer holds only letters, digits, ``.-_~,`` and slashes, so
    the URL sent (``base_url + path``) is exactly the URL judged: no client, proxy or server
    can read it otherwise. ``query`` is the endpoint's own query, as written.

    :raises ValueError: an absolute or scheme-relative URL, a path that leaves the base
        URL's path (``../v1.2/voipstudio/cdrs``) or is the base URL itself, or characters
        no History API path has.
    """
    text = (endpoint or "").strip()
    if not _VISIBLE_ASCII.fullmatch(text):
        raise ValueError(f"{_UNDER_BASE}: {endpoint!r} holds spaces or control characters")
    parts = urlsplit(text)
    if parts.scheme or parts.netloc:
        raise ValueError(_UNDER_BASE)
    path = _decoded(parts.path).replace("\\", "/")
    path = re.split(r"[?#]", path, maxsplit=1)[0]
    if path.startswith("//"):  # scheme-relative once decoded: another host
        raise ValueError(_UNDER_BASE)
    path = "/".join(segment.split(";", 1)[0] for segment in path.split("/"))
    if not _PATH_CHARACTERS.fullmatch(path):
        raise ValueError(f"{_UNDER_BASE}: {endpoint!r} holds characters no API path has")
    base_path = urlsplit(base_url).path.rstrip("/")
    full = re.sub(r"/+", "/", f"{base_path}/{path}")
    full = _without_dot_segments(full).rstrip("/")
    if not full.startswith(base_path + "/"):
        raise ValueError(f"{_UNDER_BASE}: {endpoint!r} leaves the base URL's path {base_path}")
    return full[len(base_path) :], parts.query


def request_url(base_url: str, method: str, path: str, *, whole_collection: bool = False) -> str:
    """The absolute URL a request for ``path`` is sent to, judged as :func:`resolve_path`
    reads it; a ``DELETE`` of a collection is refused unless ``whole_collection`` (only
    :meth:`~voipstudio_provider.hooks.voipstudio.VoIPstudioHook.delete_all` says so, after
    its confirmation phrase).

    :raises ValueError: see :func:`resolve_path` and :func:`refuse_collection_delete`; a
        query in ``path`` (queries go as ``params``).
    """
    resolved, query = resolve_path(base_url, path)
    if query:
        raise ValueError(f"{path!r}: a query goes in params, not in the path")
    if method.upper() == "DELETE" and not whole_collection:
        refuse_collection_delete(resolved)
    return base_url + resolved


def _decoded(path: str) -> str:
    """``path`` percent-decoded again and again until it no longer changes."""
    while True:
        decoded = unquote(path, errors="replace")
        if decoded == path:
            return path
        path = decoded


def _without_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4 for an absolute path: ``/a/./b/../c`` is ``/a/c``; a ``..``
    above the root stays at the root."""
    output: list[str] = []
    segments = path.split("/")[1:]
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == ".":
            if last:
                output.append("")
        elif segment == "..":
            if output:
                output.pop()
            if last:
                output.append("")
        else:
            output.append(segment)
    return "/" + "/".join(output)


#: Paths of whole-collection deletes, and of the collections whose rows are deleted by id.
_COLLECTION_DELETES = frozenset(e.path.lower() for e in ENDPOINTS if e.shape is Shape.DELETE_ALL)
_ID_DELETES = frozenset(
    e.path.lower().removesuffix("/{ids}") for e in ENDPOINTS if e.shape is Shape.DELETE_IDS
)
_ID_LIST = re.compile(r"[1-9][0-9]*(,[1-9][0-9]*)*")


def refuse_collection_delete(path: str) -> None:
    """Raise ``ValueError`` when a ``DELETE`` of ``path`` (below the base URL) could erase a
    whole collection.

    The path is read as a lenient server may read it (percent-decoded until stable,
    backslashes as slashes, ``;params`` dropped, repeated or trailing slashes and dot
    segments removed, any case): a collection itself, or below a collection anything but a
    comma-separated list of positive ids, is refused.
    """
    decoded = re.split(r"[?#]", _decoded(path).replace("\\", "/"), maxsplit=1)[0]
    decoded = "/".join(segment.split(";", 1)[0] for segment in decoded.split("/"))
    collapsed = re.sub(r"/+", "/", "/" + decoded.strip())
    normal = _without_dot_segments(collapsed).lower().rstrip("/") or "/"
    parent, _, last = normal.rpartition("/")
    if normal in _COLLECTION_DELETES or normal in _ID_DELETES:
        raise ValueError(
            f"DELETE {path} would delete a whole collection: use delete_all() with its "
            "confirmation phrase, or delete_records() with ids"
        )
    if parent in _ID_DELETES and not _ID_LIST.fullmatch(last):
        raise ValueError(f"DELETE {path}: only a comma-separated list of positive ids is deleted")
