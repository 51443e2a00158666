"""Records and collections of the History API: one record by id, a page, a keyset walk of a
whole collection, a count, bulk updates, deletes by id and the delete of a whole collection.

:class:`RecordsMixin` gives :class:`~voipstudio_provider.hooks.voipstudio.VoIPstudioHook`
these methods. It builds each request from the endpoint table and sends it through the
hook's ``call()`` and ``_json()``, which retry and turn answers into errors; the page size
and the base URL it reads are the hook's, set from the connection by ``get_conn()``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Iterator
from typing import Any

from voipstudio_provider.endpoints import MAX_PAGE_SIZE, Endpoint, Shape, endpoint
from voipstudio_provider.exceptions import VoIPstudioError
from voipstudio_provider.hooks.paths import (
    FilterLike,
    date_filters,
    encode_json,
    endpoint_for,
    filter_entries,
    keyset_params,
    path_of,
    positive_id,
    url_chunks,
)
from voipstudio_provider.hooks.responses import malformed_json_error


class RecordsMixin:
    """Reads and writes of the History API's records, for the VoIPstudio hook."""

    # -- reads: records, pages, keyset walks, counts -------------------------------------

    def get_record(self, resource: str, record_id: int) -> dict[str, Any]:
        """One record by id, e.g. ``hook.get_record("monitors", 42)["size"]``."""
        ep = endpoint_for(resource, Shape.GET)
        return self.call(ep.operation, id=record_id)["data"]

    def get_dictionaries(self, resource: str) -> Any:
        """The labels of a resource's enumerated fields: ``hook.get_dictionaries("cdrs")``."""
        ep = endpoint_for(resource, Shape.DICTIONARY)
        return (self.call(ep.operation) or {}).get("data")

    def get_cdr_notes(self, cdr_id: int) -> Any:
        """The notes written on a CDR: ``hook.get_cdr_notes(1234)``."""
        return (self.call("get_cdr_notes", id=cdr_id) or {}).get("data")

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
        ep = self._list_endpoint(operation, resource)
        self.get_conn()  # the page size may come from the connection
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
        pages shorter or longer than asked (its own page cap or size) is walked to the end.
        ``since`` is inclusive and ``until`` exclusive, on the resource's own date field.

        ``for monitor in hook.iter_records("monitors", since=start, until=end): ...``
        """
        ep = self._list_endpoint(operation, resource)
        self.get_conn()  # the page size may come from the connection
        limit = min(positive_id(page_size or self.page_size, "page_size"), MAX_PAGE_SIZE)
        fixed = filter_entries(filters) + date_filters(ep.resource, since, until)
        last_id: int | None = None
        while True:
            rows, total = self._page(ep, keyset_params(fixed, last_id, limit))
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

    def _list_endpoint(self, operation: str | None, resource: str) -> Endpoint:
        if operation is None:
            return endpoint_for(resource, Shape.LIST)
        ep = endpoint(operation)
        if ep.shape is not Shape.LIST:
            raise ValueError(f"{operation} is a {ep.shape.value} endpoint, not {Shape.LIST.value}")
        return ep

    def _page(
        self, ep: Endpoint, params: dict[str, Any]
    ) -> tuple[list[dict[str, Any]], int | None]:
        """One list answer's rows and its ``total`` (``None`` when the answer has none)."""
        path = path_of(ep)
        filters = json.loads(params["filter"]) if "filter" in params else None
        body, status = self._json(ep, path, params=params, filters=filters)
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            raise malformed_json_error(ep.method, path, status)
        total = body.get("total")
        return body["data"], None if total is None else int(total)

    # -- writes and deletes ---------------------------------------------------------------

    def update_records(self, resource: str, rows: list[dict[str, Any]]) -> Any:
        """Bulk PATCH of partial records carrying ``id`` (cdrs, voicemessages).

        ``hook.update_records("voicemessages", [{"id": 7, "folder": "Old"}])``
        """
        ep = endpoint_for(resource, Shape.UPDATE)
        rows = list(rows)
        if not rows:
            return None
        for row in rows:
            positive_id(row.get("id") if isinstance(row, dict) else None, "each row's id")
        return self.call(ep.operation, json=rows)

    def delete_records(self, resource: str, ids: Iterable[int]) -> list[int]:
        """Delete records by id; return the ids deleted, ascending.

        The ids go in as few requests as keep each full URL below ``MAX_URL_LENGTH``; each
        request is all-or-nothing. If one fails, its error's ``deleted_ids`` lists what
        earlier requests deleted. ``hook.delete_records("monitors", [3, 1, 2])``
        """
        ep = endpoint_for(resource, Shape.DELETE_IDS)
        id_list = sorted({positive_id(i) for i in ids})
        self.get_conn()  # the URL's length depends on the connection's base URL
        deleted: list[int] = []
        for chunk in url_chunks(self.base_url, ep, id_list):
            try:
                self._json(ep, path_of(ep, ids=chunk))
            except VoIPstudioError as error:
                error.deleted_ids = list(deleted)  # type: ignore[attr-defined]
                raise
            deleted.extend(chunk)
        return deleted

    def delete_all(self, resource: str, *, confirm: str) -> int:
        """Delete a whole collection; return the status (202: the rows go shortly after).

        Only runs when ``confirm`` is exactly ``"DELETE ALL <resource>"``:
        ``hook.delete_all("chatmsgs", confirm="DELETE ALL chatmsgs")``
        """
        expected = f"DELETE ALL {resource}"
        if confirm != expected:
            raise ValueError(f"deleting every {resource} record needs confirm={expected!r}")
        ep = endpoint_for(resource, Shape.DELETE_ALL)
        _, status = self._json(ep, path_of(ep), whole_collection=True)
        return status
