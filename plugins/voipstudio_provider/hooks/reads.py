"""Reading records: one record, one page of a collection, a keyset walk, a count, and a
user's CDRs from the CSV export endpoint.

:class:`ReadsMixin` keeps every list request of the hook in one place, so that the page size
cap, the ``filter`` encoding and the ``total`` of an answer are read the same way by
:meth:`~ReadsMixin.list_page`, :meth:`~ReadsMixin.iter_records` and
:meth:`~ReadsMixin.count`. The small lookups by id (a record, its notes, a resource's
dictionaries) sit beside them because they are the other reads of a resource.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from voipstudio_provider.endpoints import MAX_PAGE_SIZE, Endpoint, Filter, Shape, endpoint
from voipstudio_provider.exceptions import (
    VoIPstudioError,
    VoIPstudioIncompleteDownloadError,
    VoIPstudioValidationError,
)
from voipstudio_provider.hooks.downloads import (
    DownloadResult,
    check_media_type,
    is_seekable,
    write_body,
)
from voipstudio_provider.hooks.paths import (
    FilterLike,
    date_filters,
    endpoint_for,
    filter_entries,
    path_of,
    positive_id,
)
from voipstudio_provider.hooks.responses import (
    encode_json,
    filter_error,
    malformed_json_error,
    request_label,
)
from voipstudio_provider.hooks.transport import TransportMixin


@dataclass(frozen=True)
class ExportJob:
    """A CSV export the service accepted (``202``) and queued instead of streaming a file.

    Nothing was written: the file, when the job has run, is not delivered by this API.

    :param status_code: the answer's status, ``202``.
    :param body: the answer's JSON body as sent (``None`` when it had none).
    """

    status_code: int
    body: Any


class ReadsMixin(TransportMixin):
    """Records and collections of the History API, read through the request loop."""

    # Set by VoIPstudioHook from its argument or the connection's ``page_size`` extra.
    page_size: int

    def _endpoint(self, operation: str | None, resource: str, shape: Shape) -> Endpoint:
        if operation is None:
            return endpoint_for(resource, shape)
        ep = endpoint(operation)
        if ep.shape != shape:
            raise ValueError(f"{operation} is a {ep.shape.value} endpoint, not {shape.value}")
        return ep

    def get_record(self, resource: str, record_id: int) -> dict[str, Any]:
        """One record by id, e.g. ``hook.get_record("monitors", 42)["size"]``."""
        ep = endpoint_for(resource, Shape.GET)
        return self.call(ep.operation, id=record_id)["data"]

    def list_page(
        self,
        resource: str,
        *,
        page: int = 1,
        limit: int | None = None,
        filters: Iterable[FilterLike] | None = None,
        sort: str | None = None,
        direction: str | None = None,
        operation: str | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of a collection and the ``total`` of matching rows.

        ``rows, total = hook.list_page("cdrs", page=2, limit=100, sort="id", direction="ASC")``
        """
        ep = self._endpoint(operation, resource, Shape.LIST)
        self.get_conn()
        params: dict[str, Any] = {"page": positive_id(page, "page")}
        params["limit"] = min(positive_id(limit or self.page_size, "limit"), MAX_PAGE_SIZE)
        entries = filter_entries(filters)
        if entries:
            params["filter"] = encode_json(entries)
        if sort:
            params["sort"] = sort
        if direction:
            if direction.upper() not in ("ASC", "DESC"):
                raise ValueError(f"direction must be ASC or DESC, got {direction!r}")
            params["dir"] = direction.upper()
        rows, total = self._page(ep, params)
        return rows, len(rows) if total is None else total

    def _page(
        self, ep: Endpoint, params: dict[str, Any]
    ) -> tuple[list[dict[str, Any]], int | None]:
        """One list answer's rows and its ``total`` (``None`` when the answer has none)."""
        path = path_of(ep)
        try:
            body, status = self._json(ep, path, params=params)
        except VoIPstudioValidationError as error:
            if "filter" not in params:
                raise
            raise filter_error(error, json.loads(params["filter"])) from None
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            raise malformed_json_error(ep.method, path, status)
        total = body.get("total")
        return body["data"], None if total is None else int(total)

    def iter_records(
        self,
        resource: str,
        *,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        filters: Iterable[FilterLike] | None = None,
        page_size: int | None = None,
        operation: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every matching record, ids ascending, walking the collection by keyset.

        Each page asks for ``id > last id seen`` sorted by id, so rows added or deleted while
        walking never make it skip or repeat one. The walk ends on the page that holds all
        the answer's ``total`` (the rows left), or on an empty page; a service that sends
        pages shorter than asked is still walked to the end. ``since`` is inclusive and ``until``
        exclusive, on the resource's own date field.

        ``for monitor in hook.iter_records("monitors", since=start, until=end): ...``
        """
        ep = self._endpoint(operation, resource, Shape.LIST)
        self.get_conn()
        limit = min(positive_id(page_size or self.page_size, "page_size"), MAX_PAGE_SIZE)
        fixed = filter_entries(filters) + date_filters(ep.resource, since, until)
        last_id: int | None = None
        while True:
            rows, total = self._page(ep, _keyset_params(fixed, last_id, limit))
            for row in rows:
                row_id = row.get("id")
                if last_id is not None and (not isinstance(row_id, int) or row_id <= last_id):
                    raise VoIPstudioError(
                        f"{ep.operation} did not honour sort=id ASC (id {row_id!r} after "
                        f"{last_id}); refusing to page further"
                    )
                last_id = row_id
                yield row
            # "total" counts the rows left after the keyset filter: a page holding all of them
            # is the last. A service that caps pages below ``limit`` still gets walked whole.
            last_page = len(rows) >= total if total is not None else len(rows) < limit
            if not rows or last_page:
                return

    def count(
        self,
        resource: str,
        *,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        filters: Iterable[FilterLike] | None = None,
    ) -> int:
        """How many records match, from a one-row page's ``total``: ``hook.count("sms")``."""
        entries = filter_entries(filters) + date_filters(resource, since, until)
        return self.list_page(resource, limit=1, filters=entries)[1]

    def export_user_cdrs_csv(
        self,
        user_id: int,
        fileobj: IO[bytes],
        *,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        filters: Iterable[FilterLike] | None = None,
    ) -> DownloadResult | ExportJob:
        """Ask ``/users/{id}/cdrs.csv`` for a user's CDRs; stream a CSV answer into ``fileobj``.

        The real service queues an export job and answers ``202`` with JSON: that answer is
        returned as an :class:`ExportJob` and nothing is written. A ``200`` with ``text/csv``
        is streamed like :meth:`download` (counted, hashed, checked, retried). To build a
        user's CSV that must exist, use :func:`voipstudio_provider.export.export_user_day`,
        which builds it from ``GET /cdrs``.

        ``hook.export_user_cdrs_csv(12, f, since=day_start, until=day_end)``
        """
        ep = endpoint("export_user_cdrs_csv")
        path = path_of(ep, id=user_id)
        entries = filter_entries(filters) + date_filters("cdrs", since, until)
        params = {"filter": encode_json(entries)} if entries else {}
        seekable = is_seekable(fileobj)
        start = fileobj.tell() if seekable else 0

        def attempt() -> DownloadResult | ExportJob:
            if seekable:
                fileobj.seek(start)
                fileobj.truncate()
            try:
                response = self._send(
                    ep.method,
                    path,
                    params=params,
                    stream=True,
                    headers={"Accept-Encoding": "identity"},
                )
            except VoIPstudioValidationError as error:
                raise (filter_error(error, entries) if entries else error) from None
            label = request_label(ep.method, path)
            if response.status_code == 202:
                with response:
                    try:
                        body = response.json() if response.content.strip() else None
                    except ValueError:
                        raise malformed_json_error(ep.method, path, 202) from None
                self.log.info("%s: export job accepted (202), no file delivered", label)
                return ExportJob(status_code=202, body=body)
            check_media_type(response, ep.content_type, label)
            return write_body(response, fileobj, label, None, max_size=self.max_download_size)

        def may_retry(error: VoIPstudioError) -> bool:
            # Bytes already written to a stream we cannot rewind cannot be taken back.
            return seekable or not isinstance(error, VoIPstudioIncompleteDownloadError)

        return self._with_retries(request_label(ep.method, path), attempt, may_retry)

    def get_dictionaries(self, resource: str) -> Any:
        """The labels of a resource's enumerated fields: ``hook.get_dictionaries("cdrs")``."""
        ep = endpoint_for(resource, Shape.DICTIONARY)
        return (self.call(ep.operation) or {}).get("data")

    def get_cdr_notes(self, cdr_id: int) -> Any:
        """The notes written on a CDR: ``hook.get_cdr_notes(1234)``."""
        return (self.call("get_cdr_notes", id=cdr_id) or {}).get("data")


def _keyset_params(fixed: list[dict[str, Any]], last_id: int | None, limit: int) -> dict[str, Any]:
    """The query of the next keyset page: the first page of ``id > last_id``, ids ascending."""
    keyset = [] if last_id is None else [Filter("id", "gt", last_id).as_dict()]
    params: dict[str, Any] = {"page": 1, "limit": limit}
    if fixed + keyset:
        params["filter"] = encode_json(fixed + keyset)
    return {**params, "sort": "id", "dir": "ASC"}
