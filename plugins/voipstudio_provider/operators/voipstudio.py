"""Operators for every endpoint of the VoIPstudio History module.

One operator per endpoint shape (list, get, download, delete by ids, delete all, bulk
update). Each maps its templated arguments onto one call of
:class:`~voipstudio_provider.hooks.voipstudio.VoIPstudioHook`; which call serves which
endpoint is stated once, in :func:`hook_method`. No operator builds a URL.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException

from voipstudio_provider.endpoints import RESOURCES, Endpoint, Filter, Shape, endpoint, endpoints_of

if TYPE_CHECKING:
    from airflow.sdk import Context

    from voipstudio_provider.hooks.voipstudio import VoIPstudioHook

DEFAULT_CONN_ID = "voipstudio_default"
#: The most records a list operator pushes to XCom unless told otherwise.
DEFAULT_MAX_RECORDS = 5000


def hook_method(ep: Endpoint) -> str:
    """The :class:`VoIPstudioHook` method that serves an endpoint.

    :param ep: a row of :data:`~voipstudio_provider.endpoints.ENDPOINTS`.
    """
    if ep.operation in ("get_cdr_notes", "export_user_cdrs_csv"):  # a method of its own
        return ep.operation
    return {
        Shape.LIST: "iter_records",
        Shape.GET: "get_record",
        Shape.DICTIONARY: "get_dictionaries",
        Shape.DOWNLOAD: "download",
        Shape.DELETE_IDS: "delete_records",
        Shape.DELETE_ALL: "delete_all",
        Shape.UPDATE: "update_records",
    }[ep.shape]


def operator_for(ep: Endpoint) -> str:
    """The name of the operator class that reaches an endpoint.

    :param ep: a row of :data:`~voipstudio_provider.endpoints.ENDPOINTS`.
    """
    return {
        Shape.LIST: "VoIPstudioListOperator",
        Shape.GET: "VoIPstudioGetOperator",
        Shape.DICTIONARY: "VoIPstudioGetOperator",
        Shape.DOWNLOAD: "VoIPstudioDownloadOperator",
        Shape.DELETE_IDS: "VoIPstudioDeleteOperator",
        Shape.DELETE_ALL: "VoIPstudioDeleteAllOperator",
        Shape.UPDATE: "VoIPstudioUpdateOperator",
    }[ep.shape]


def as_datetime(value: Any) -> dt.datetime | None:
    """An aware datetime from a datetime, an ISO string or the API's date format (UTC if naive).

    :param value: ``None``, a :class:`datetime.datetime` or a string (a rendered template).
    """
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.strip())
    elif isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime.combine(value, dt.time())
    if not isinstance(value, dt.datetime):
        raise TypeError(f"not a date and time: {value!r}")
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def as_filters(value: Any) -> list[Filter | dict] | None:
    """Filters as the hook takes them, from a list or its JSON (a rendered template).

    :param value: ``None``, a list of :class:`~voipstudio_provider.endpoints.Filter` or
        ``{"property", "operator", "value"}`` dicts, or that list as JSON.
    """
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = json.loads(value)
    if isinstance(value, (dict, Filter)):
        value = [value]
    return list(value)


def as_ids(value: Any) -> list[int]:
    """Record ids from a list, a JSON list or a comma-separated string.

    :param value: the ids, possibly rendered from a template.
    """
    if isinstance(value, str):
        text = value.strip()
        value = json.loads(text) if text.startswith("[") else text.split(",")
    values = [value] if isinstance(value, int) else value
    return [int(i) for i in values if str(i).strip()]


def _checked(operation: str, shapes: tuple[Shape, ...], operator: str) -> Endpoint:
    ep = endpoint(operation)
    if ep.shape not in shapes:
        allowed = ", ".join(s.value for s in shapes)
        raise ValueError(f"{operator} serves {allowed} endpoints, not {operation} ({ep.shape})")
    return ep


def _endpoint_of(resource: str, shape: Shape, operator: str) -> Endpoint:
    if resource not in RESOURCES:
        raise ValueError(f"unknown VoIPstudio resource {resource!r}")
    found = endpoints_of(resource, shape)
    if not found:
        raise ValueError(f"{operator}: {resource} has no {shape.value} endpoint")
    return found[0]


class _VoIPstudioOperator(BaseOperator):
    """Shared by the VoIPstudio operators: the connection and the hook.

    :param voipstudio_conn_id: the ``voipstudio`` connection to use.
    """

    ui_color = "#e8f0fe"

    def __init__(self, *, voipstudio_conn_id: str = DEFAULT_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.voipstudio_conn_id = voipstudio_conn_id

    @cached_property
    def hook(self) -> VoIPstudioHook:
        from voipstudio_provider.hooks.voipstudio import VoIPstudioHook

        return VoIPstudioHook(voipstudio_conn_id=self.voipstudio_conn_id)


class VoIPstudioListOperator(_VoIPstudioOperator):
    """List the records of a collection, keyset-paged, and return them (pushed to XCom).

    :param resource: the collection, e.g. ``cdrs`` or ``monitors``; or give ``operation``.
    :param operation: a list endpoint's operation, e.g. ``list_calltracking_cdrs``.
    :param since: first date and time to include (on the resource's date field), inclusive.
    :param until: date and time to stop at, exclusive.
    :param filters: more filters, ``{"property", "operator", "value"}`` entries (ANDed).
    :param page_size: rows per request (the hook's default when omitted).
    :param max_records: fail rather than return more records than this; XCom is no place
        for a whole history (narrow ``since``/``until`` or archive in batches instead).
    """

    template_fields: Sequence[str] = (
        "resource", "operation", "since", "until", "filters", "max_records", "voipstudio_conn_id",
    )  # fmt: skip
    template_fields_renderers = {"filters": "json"}

    def __init__(
        self,
        *,
        resource: str | None = None,
        operation: str | None = None,
        since: dt.datetime | str | None = None,
        until: dt.datetime | str | None = None,
        filters: list[Filter | dict] | str | None = None,
        page_size: int | None = None,
        max_records: int = DEFAULT_MAX_RECORDS,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not resource and not operation:
            raise ValueError("give a resource or a list operation")
        self.resource = resource
        self.operation = operation
        self.since = since
        self.until = until
        self.filters = filters
        self.page_size = page_size
        self.max_records = max_records

    def execute(self, context: Context) -> list[dict]:
        resource = self.resource
        if self.operation:
            resource = _checked(self.operation, (Shape.LIST,), type(self).__name__).resource
        limit = int(self.max_records)
        records: list[dict] = []
        for record in self.hook.iter_records(
            resource,
            since=as_datetime(self.since),
            until=as_datetime(self.until),
            filters=as_filters(self.filters),
            page_size=self.page_size,
            operation=self.operation,
        ):
            if len(records) >= limit:
                raise AirflowException(
                    f"more than {limit} {resource} records match; narrow since/until or "
                    "filters, or raise max_records"
                )
            records.append(record)
        self.log.info("listed %d %s records", len(records), resource)
        return records


class VoIPstudioGetOperator(_VoIPstudioOperator):
    """Get one record, a CDR's notes, or a resource's dictionaries, and return it.

    :param operation: ``get_cdr``, ``get_monitor``, ``get_cdr_notes``,
        ``get_cdr_dictionaries`` ... (any get or dictionary endpoint).
    :param record_id: the record's id (not for dictionaries).
    """

    template_fields: Sequence[str] = ("operation", "record_id", "voipstudio_conn_id")

    def __init__(self, *, operation: str, record_id: int | str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.operation = operation
        self.record_id = record_id

    def execute(self, context: Context) -> Any:
        ep = _checked(self.operation, (Shape.GET, Shape.DICTIONARY), type(self).__name__)
        method = hook_method(ep)
        if method == "get_dictionaries":
            return self.hook.get_dictionaries(ep.resource)
        if self.record_id is None or self.record_id == "":
            raise ValueError(f"{self.operation} needs a record_id")
        if method == "get_cdr_notes":
            return self.hook.get_cdr_notes(int(self.record_id))
        return self.hook.get_record(ep.resource, int(self.record_id))


class VoIPstudioDownloadOperator(_VoIPstudioOperator):
    """Download a recording, voicemail, PCAP, trace or a user's CDR CSV to a local file.

    The body is written to ``path + ".part"`` and renamed when complete, so ``path`` never
    holds a partial file.

    ``export_user_cdrs_csv`` may be answered with an export job instead of a file (``202``,
    as the real service does): then no file is written and the operator returns
    ``{"path": None, "export_job": True, "status_code": 202, "body": ...}`` with the answer's
    JSON body. To archive a user's CDRs as CSV, use ``voipstudio_export_user_cdrs``, which
    builds the file from the CDR records.

    :param operation: a download endpoint, e.g. ``download_monitor_mp3`` or
        ``export_user_cdrs_csv``.
    :param record_id: the record's id (the user's id for ``export_user_cdrs_csv``).
    :param path: the local file to write.
    :param expected_size: the byte count the body must have (a monitor's ``size``).
    :param since: for ``export_user_cdrs_csv``: first call date, inclusive.
    :param until: for ``export_user_cdrs_csv``: call date to stop at, exclusive.
    :param filters: for ``export_user_cdrs_csv``: more CDR filters.
    :return: ``{"path", "size", "sha256", "content_type"}`` for a file.
    """

    template_fields: Sequence[str] = (
        "operation", "record_id", "path", "expected_size", "since", "until", "filters",
        "voipstudio_conn_id",
    )  # fmt: skip

    def __init__(
        self,
        *,
        operation: str,
        record_id: int | str,
        path: str | os.PathLike,
        expected_size: int | None = None,
        since: dt.datetime | str | None = None,
        until: dt.datetime | str | None = None,
        filters: list[Filter | dict] | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.operation = operation
        self.record_id = record_id
        self.path = os.fspath(path)
        self.expected_size = expected_size
        self.since = since
        self.until = until
        self.filters = filters

    def execute(self, context: Context) -> dict[str, Any]:
        from voipstudio_provider.hooks.downloads import ExportJob

        ep = _checked(self.operation, (Shape.DOWNLOAD,), type(self).__name__)
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        partial = f"{self.path}.part"
        try:
            with open(partial, "w+b") as fileobj:
                result = self._download(ep, fileobj)
            if not isinstance(result, ExportJob):
                os.replace(partial, self.path)
        finally:
            if os.path.exists(partial):
                os.remove(partial)
        if isinstance(result, ExportJob):
            self.log.info(
                "%s %s: export job accepted (status %d), no file written to %s",
                self.operation, self.record_id, result.status_code, self.path)  # fmt: skip
            return {"path": None, "export_job": True, "status_code": result.status_code,
                    "body": result.body}  # fmt: skip
        self.log.info("downloaded %s %s: %d bytes", self.operation, self.record_id, result.size)
        return {
            "path": self.path,
            "size": result.size,
            "sha256": result.sha256,
            "content_type": result.content_type,
        }

    def _download(self, ep: Endpoint, fileobj) -> Any:
        """The hook's answer for the endpoint: a download's result, or an export job."""
        if hook_method(ep) == "export_user_cdrs_csv":
            return self.hook.export_user_cdrs_csv(
                int(self.record_id), fileobj, since=as_datetime(self.since),
                until=as_datetime(self.until), filters=as_filters(self.filters),
            )  # fmt: skip
        expected = self.expected_size
        return self.hook.download(
            self.operation, int(self.record_id), fileobj,
            expected_size=None if expected in (None, "") else int(expected),
        )  # fmt: skip


class VoIPstudioDeleteOperator(_VoIPstudioOperator):
    """Delete records by id (monitors, voicemessages, chatmsgs); returns the deleted ids.

    The hook splits the ids so that no request URL grows too long.

    :param resource: the collection, e.g. ``monitors``.
    :param ids: the ids: a list, a JSON list or a comma-separated string.
    """

    template_fields: Sequence[str] = ("resource", "ids", "voipstudio_conn_id")

    def __init__(self, *, resource: str, ids: list[int] | str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.resource = resource
        self.ids = ids

    def execute(self, context: Context) -> list[int]:
        _endpoint_of(self.resource, Shape.DELETE_IDS, type(self).__name__)
        ids = as_ids(self.ids)
        if not ids:
            self.log.info("no %s to delete", self.resource)
            return []
        deleted = self.hook.delete_records(self.resource, ids)
        self.log.info("deleted %d %s", len(deleted), self.resource)
        return list(deleted)


class VoIPstudioDeleteAllOperator(_VoIPstudioOperator):
    """Delete a whole collection: an account's entire history of that resource.

    Nothing is deleted unless ``confirm`` is exactly ``DELETE ALL <resource>``.

    :param resource: ``cdrs``, ``monitors``, ``voicemessages``, ``chatmsgs`` or
        ``statements``.
    :param confirm: the phrase ``DELETE ALL <resource>``, typically from a DAG param.
    """

    template_fields: Sequence[str] = ("resource", "confirm", "voipstudio_conn_id")

    def __init__(self, *, resource: str, confirm: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.resource = resource
        self.confirm = confirm

    def execute(self, context: Context) -> int:
        _endpoint_of(self.resource, Shape.DELETE_ALL, type(self).__name__)
        status = self.hook.delete_all(self.resource, confirm=self.confirm)
        self.log.info("deleted every %s (status %s)", self.resource, status)
        return status


class VoIPstudioUpdateOperator(_VoIPstudioOperator):
    """Bulk-update records (``cdrs``, ``voicemessages``) with partial objects carrying ``id``.

    :param resource: ``cdrs`` or ``voicemessages``.
    :param rows: e.g. ``[{"id": 7, "folder": "Old"}]``, or that list as JSON.
    """

    template_fields: Sequence[str] = ("resource", "rows", "voipstudio_conn_id")
    template_fields_renderers = {"rows": "json"}

    def __init__(self, *, resource: str, rows: list[dict] | str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.resource = resource
        self.rows = rows

    def execute(self, context: Context) -> Any:
        _endpoint_of(self.resource, Shape.UPDATE, type(self).__name__)
        rows = json.loads(self.rows) if isinstance(self.rows, str) else list(self.rows)
        if not all(isinstance(row, dict) and "id" in row for row in rows):
            raise ValueError("every row needs an id")
        return self.hook.update_records(self.resource, rows)
