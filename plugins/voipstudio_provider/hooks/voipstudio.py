"""The VoIPstudio hook: one authenticated HTTP session for every endpoint of the History API.

Paths come from :mod:`voipstudio_provider.endpoints`; no other module of the provider builds
a URL. The hook reuses one ``requests.Session``, puts an explicit timeout on every request,
streams downloads while hashing them, and retries what may succeed later.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import requests
from airflow.providers.http.hooks.http import HttpHook

from voipstudio_provider.endpoints import MAX_PAGE_SIZE, Endpoint, Filter, Shape, endpoint
from voipstudio_provider.exceptions import (
    VoIPstudioAuthenticationError,
    VoIPstudioError,
    VoIPstudioIncompleteDownloadError,
    VoIPstudioNotFoundError,
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
    url_chunks,
)
from voipstudio_provider.hooks.responses import (
    AUTHENTICATION_FAILED,
    backoff_seconds,
    encode_json,
    error_from_response,
    error_from_transport,
    malformed_json_error,
    request_label,
)

try:
    from airflow.sdk.log import mask_secret
except ImportError:  # pragma: no cover - older task SDK layouts
    from airflow.sdk.execution_time.secrets_masker import mask_secret

T = TypeVar("T")

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 300.0
DEFAULT_PAGE_SIZE = 1000


class VoIPstudioHook(HttpHook):
    """Call the VoIPstudio History API through a ``voipstudio`` connection.

    The connection's host is the base URL (``https://l7api.com/v1.1/voipstudio``), its
    password the API token. With a login (the numeric user id) the hook authenticates with
    HTTP Basic ``user_id:token``, otherwise with the ``X-Auth-Token`` header. Extras:
    ``page_size``, ``timeout`` (read timeout in seconds) and ``verify_ssl``.

    A hook holds one HTTP session: use one hook per thread.

    :param voipstudio_conn_id: the connection id.
    :param max_attempts: tries per request, the first included.
    :param backoff_base: seconds of the first wait between tries; it doubles each time.
    :param backoff_cap: longest wait between tries, in seconds.
    :param retry_after_cap: longest ``Retry-After`` honoured, in seconds.
    :param timeout: ``(connect, read)`` seconds, or one number for both; defaults to the
        connection's ``timeout`` extra for reading and 10 seconds for connecting.
    :param page_size: rows per page when walking collections; defaults to the connection's
        ``page_size`` extra, then 1000; never above ``MAX_PAGE_SIZE``.
    """

    conn_name_attr = "voipstudio_conn_id"
    default_conn_name = "voipstudio_default"
    conn_type = "voipstudio"
    hook_name = "VoIPstudio"

    def __init__(
        self,
        voipstudio_conn_id: str = default_conn_name,
        *,
        max_attempts: int = 5,
        backoff_base: float = 1.0,
        backoff_cap: float = 30.0,
        retry_after_cap: float = 60.0,
        timeout: float | tuple[float, float] | None = None,
        page_size: int | None = None,
    ) -> None:
        super().__init__(method="GET", http_conn_id=voipstudio_conn_id)
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.voipstudio_conn_id = voipstudio_conn_id
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.retry_after_cap = retry_after_cap
        self._timeout_arg = timeout
        self._page_size_arg = page_size
        self._session: requests.Session | None = None
        self._token: str = ""
        self.timeout: tuple[float, float] = (DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT)
        self.page_size: int = 1000

    # -- connection and session -------------------------------------------------------

    def get_conn(self, headers: dict[Any, Any] | None = None, extra_options: Any = None):
        """The hook's one ``requests.Session``, built from the connection on first use."""
        if self._session is None:
            self._session = self._new_session()
        if headers:
            self._session.headers.update(headers)
        return self._session

    def _new_session(self) -> requests.Session:
        conn = self.get_connection(self.voipstudio_conn_id)
        host = (conn.host or "").strip()
        if "://" not in host:
            raise ValueError(
                f"connection {self.voipstudio_conn_id!r} needs the base URL as host, "
                "e.g. https://l7api.com/v1.1/voipstudio"
            )
        self.base_url = host.rstrip("/")
        self._token = conn.password or ""
        if not self._token:
            raise ValueError(f"connection {self.voipstudio_conn_id!r} has no API token")
        mask_secret(self._token)
        extra = conn.extra_dejson or {}
        self.timeout = self._resolve_timeout(extra.get("timeout"))
        self.page_size = self._resolve_page_size(extra.get("page_size"))

        session = requests.Session()
        session.headers.update({"Accept": "application/json", "User-Agent": "airflow-voipstudio"})
        login = (conn.login or "").strip()
        if login:
            if not login.isdigit():
                raise ValueError("the connection's login must be the numeric VoIPstudio user id")
            session.auth = (login, self._token)
        else:
            session.headers["X-Auth-Token"] = self._token
        session.verify = _as_bool(extra.get("verify_ssl", extra.get("verify", True)))
        session.trust_env = True
        if self.keep_alive_adapter is not None:
            session.mount("http://", self.keep_alive_adapter)
            session.mount("https://", self.keep_alive_adapter)
        return session

    def _resolve_timeout(self, extra_timeout: Any) -> tuple[float, float]:
        value = self._timeout_arg if self._timeout_arg is not None else extra_timeout
        if value in (None, ""):
            return (DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT)
        if isinstance(value, list | tuple):
            connect, read = (float(v) for v in value)
            return (connect, read)
        read = float(value)
        return (min(DEFAULT_CONNECT_TIMEOUT, read), read)

    def _resolve_page_size(self, extra_page_size: Any) -> int:
        value = self._page_size_arg if self._page_size_arg is not None else extra_page_size
        size = int(value) if value not in (None, "") else DEFAULT_PAGE_SIZE
        if size < 1:
            raise ValueError(f"page_size must be at least 1, got {size}")
        return min(size, MAX_PAGE_SIZE)

    def close(self) -> None:
        """Close the HTTP session; the next call opens a new one."""
        if self._session is not None:
            self._session.close()
            self._session = None

    def __enter__(self) -> VoIPstudioHook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the request loop -------------------------------------------------------------

    def _scrub(self, error: VoIPstudioError) -> VoIPstudioError:
        # The API may echo a header back in a message; the token must never leave the hook.
        if self._token and self._token in str(error):
            error.args = (str(error).replace(self._token, "***"),)
        if error.api_message and self._token:
            error.api_message = error.api_message.replace(self._token, "***")
        return error

    def _with_retries(
        self,
        label: str,
        attempt_once: Callable[[], T],
        may_retry: Callable[[VoIPstudioError], bool] = lambda error: True,
    ) -> T:
        """Run ``attempt_once`` until it succeeds, a non-retryable error, or the last try."""
        for attempt in range(1, self.max_attempts + 1):
            try:
                return attempt_once()
            except VoIPstudioError as error:
                self._scrub(error)
                if attempt > 1:
                    error.after_retry = True
                if not error.retryable or attempt >= self.max_attempts or not may_retry(error):
                    raise
                wait = backoff_seconds(attempt, self.backoff_base, self.backoff_cap, error)
                self.log.warning(
                    "VoIPstudio %s failed (%s); attempt %d of %d, retrying in %.2f s",
                    label,
                    error,
                    attempt,
                    self.max_attempts,
                    wait,
                )
                time.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        stream: bool = False,
        headers: dict[str, str] | None = None,
        data: Any = None,
        timeout: float | tuple[float, float] | None = None,
    ) -> requests.Response:
        """One request; a non-2xx answer or a transport failure raises a VoIPstudioError."""
        session = self.get_conn()
        try:
            response = session.request(
                method,
                self.base_url + path,
                params=params,
                json=json,
                data=data,
                stream=stream,
                headers=headers,
                timeout=timeout or self.timeout,
            )
        except requests.RequestException as exc:
            raise error_from_transport(exc, method, path) from None
        if response.status_code >= 400:
            try:
                raise error_from_response(response, method, path, self.retry_after_cap)
            finally:
                response.close()
        return response

    def _json(self, ep: Endpoint, path: str, *, params=None, json=None) -> tuple[Any, int]:
        """Call a JSON endpoint with retries; return the decoded body (or None) and status."""

        def attempt() -> tuple[Any, int]:
            response = self._send(ep.method, path, params=params, json=json)
            if response.status_code == 204 or not response.content.strip():
                return None, response.status_code
            try:
                return response.json(), response.status_code
            except ValueError:
                raise malformed_json_error(ep.method, path, response.status_code) from None

        return self._with_retries(request_label(ep.method, path), attempt)

    # -- HttpHook's generic entry points ------------------------------------------------

    def run(
        self,
        endpoint: str | None = None,
        data: Any = None,
        headers: dict[str, Any] | None = None,
        extra_options: dict[str, Any] | None = None,
        *,
        json: Any = None,
    ) -> requests.Response:
        """Send ``self.method`` (``GET`` unless set) to a path under the base URL.

        ``run(endpoint, data=None, headers=None, extra_options=None) -> requests.Response``
        with this hook's retries, timeouts and error types: a non-2xx answer raises a
        :class:`~voipstudio_provider.exceptions.VoIPstudioError` subclass, and the token
        never appears in a message. ``data`` is the query of a ``GET``, the body of other
        methods (a dict or list goes as JSON); ``extra_options`` takes ``timeout`` only.
        Prefer :meth:`call`, which knows every endpoint by name.

        ``hook.run("cdrs", data={"limit": 5, "sort": "id", "dir": "ASC"}).json()["total"]``
        """
        parts = urlsplit(endpoint or "")
        if parts.scheme or parts.netloc or not parts.path.strip("/"):
            raise ValueError("run() takes a path under the connection's base URL, e.g. 'cdrs'")
        options = dict(extra_options or {})
        timeout = options.pop("timeout", None)
        options.pop("check_response", None)  # a non-2xx answer always raises
        if options:
            raise ValueError(f"run() does not support extra_options {sorted(options)}")
        method = (self.method or "GET").upper()
        path = "/" + parts.path.lstrip("/")
        params: dict[str, Any] = dict(parse_qsl(parts.query))
        body: dict[str, Any] = {"json": json}
        if method == "GET" and data is not None:
            params.update(parse_qsl(data) if isinstance(data, str) else data)
        elif isinstance(data, dict | list) and json is None:
            body["json"] = data
        elif data is not None:
            body["data"] = data
        self.get_conn()
        return self._with_retries(
            request_label(method, path),
            lambda: self._send(
                method, path, params=params, headers=headers, timeout=timeout, **body
            ),
        )

    def run_and_check(self, *args: Any, **kwargs: Any) -> Any:
        """Not available: it would send a prepared request past the retry policy."""
        raise NotImplementedError("VoIPstudioHook sends every request itself: use run() or call()")

    def run_with_advanced_retry(self, *args: Any, **kwargs: Any) -> Any:
        """Not available: the hook already retries every request (see ``max_attempts``)."""
        raise NotImplementedError(
            "VoIPstudioHook retries every request itself (max_attempts, backoff_base, "
            "backoff_cap): use run() or call()"
        )

    # -- paths ------------------------------------------------------------------------

    def _endpoint(self, operation: str | None, resource: str, shape: Shape) -> Endpoint:
        if operation is None:
            return endpoint_for(resource, shape)
        ep = endpoint(operation)
        if ep.shape != shape:
            raise ValueError(f"{operation} is a {ep.shape.value} endpoint, not {shape.value}")
        return ep

    # -- JSON endpoints ---------------------------------------------------------------

    def call(
        self,
        operation: str,
        *,
        id: int | None = None,
        ids: Iterable[int] | None = None,
        params: dict[str, Any] | None = None,
        json: Any = None,
    ) -> Any:
        """Call any JSON endpoint of the table by its operation name; return the decoded body.

        A ``filter`` in ``params`` may be a list of :class:`Filter` or dicts. Downloads go
        through :meth:`download`; whole-collection deletes only through :meth:`delete_all`.

        ``hook.call("list_cdrs", params={"limit": 10, "sort": "id", "dir": "ASC"})``
        """
        ep = endpoint(operation)
        if ep.shape is Shape.DOWNLOAD:
            raise ValueError(f"{operation} returns a file: use download()")
        if ep.shape is Shape.DELETE_ALL:
            raise ValueError(f"{operation} deletes a whole collection: use delete_all()")
        query = dict(params or {})
        if "filter" in query and not isinstance(query["filter"], str):
            query["filter"] = encode_json(filter_entries(query["filter"]))
        body, _ = self._json(ep, path_of(ep, id=id, ids=ids), params=query, json=json)
        return body

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
        body, status = self._json(ep, path, params=params)
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
            keyset = [] if last_id is None else [Filter("id", "gt", last_id).as_dict()]
            params = {
                "page": 1,
                "limit": limit,
                "filter": encode_json(fixed + keyset),
                "sort": "id",
                "dir": "ASC",
            }
            if not fixed + keyset:
                del params["filter"]
            rows, total = self._page(ep, params)
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

    def get_dictionaries(self, resource: str) -> Any:
        """The labels of a resource's enumerated fields: ``hook.get_dictionaries("cdrs")``."""
        ep = endpoint_for(resource, Shape.DICTIONARY)
        return (self.call(ep.operation) or {}).get("data")

    def get_cdr_notes(self, cdr_id: int) -> Any:
        """The notes written on a CDR: ``hook.get_cdr_notes(1234)``."""
        return (self.call("get_cdr_notes", id=cdr_id) or {}).get("data")

    def ping(self) -> dict[str, Any]:
        """A cheap credentials check: ``hook.ping()`` gives ``{"response": "Pong"}``."""
        return (self.call("ping") or {}).get("data") or {}

    def me(self) -> dict[str, Any]:
        """The user the token belongs to: ``hook.me()["email"]``."""
        return (self.call("me") or {}).get("data") or {}

    # -- writes -----------------------------------------------------------------------

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
        request is all-or-nothing. ``hook.delete_records("monitors", [3, 1, 2])``
        """
        ep = endpoint_for(resource, Shape.DELETE_IDS)
        id_list = sorted({positive_id(i) for i in ids})
        self.get_conn()
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
        self.get_conn()
        _, status = self._json(ep, path_of(ep))
        return status

    # -- downloads --------------------------------------------------------------------

    def download(
        self,
        operation: str,
        record_id: int,
        fileobj: IO[bytes],
        *,
        expected_size: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> DownloadResult:
        """Stream a file endpoint into ``fileobj``, counting and hashing what is written.

        Raises :class:`VoIPstudioUnexpectedContentError` when the answer's media type is not
        the endpoint's (a JSON or HTML page instead of the file; nothing is written), and
        :class:`VoIPstudioIncompleteDownloadError` when the body is empty or the bytes
        written differ from ``Content-Length`` or ``expected_size``. Both are tried again;
        a broken body only if ``fileobj`` is seekable (it is rewound and truncated first).

        ``hook.download("download_monitor_mp3", 42, f, expected_size=monitor["size"])``
        """
        ep = endpoint(operation)
        if ep.shape is not Shape.DOWNLOAD:
            raise ValueError(f"{operation} is not a file endpoint")
        path = path_of(ep, id=record_id)
        query = dict(params or {})
        if "filter" in query and not isinstance(query["filter"], str):
            query["filter"] = encode_json(filter_entries(query["filter"]))
        seekable = is_seekable(fileobj)
        start = fileobj.tell() if seekable else 0

        def attempt() -> DownloadResult:
            if seekable:
                fileobj.seek(start)
                fileobj.truncate()
            return self._stream_once(ep, path, query, fileobj, expected_size)

        def may_retry(error: VoIPstudioError) -> bool:
            # Bytes already written to a stream we cannot rewind cannot be taken back.
            return seekable or not isinstance(error, VoIPstudioIncompleteDownloadError)

        return self._with_retries(request_label(ep.method, path), attempt, may_retry)

    def _stream_once(
        self,
        ep: Endpoint,
        path: str,
        params: dict[str, Any],
        fileobj: IO[bytes],
        expected_size: int | None,
    ) -> DownloadResult:
        # identity: Content-Length then counts the very bytes written to the file.
        response = self._send(
            ep.method, path, params=params, stream=True, headers={"Accept-Encoding": "identity"}
        )
        label = request_label(ep.method, path)
        check_media_type(response, ep.content_type, label)
        return write_body(response, fileobj, label, expected_size)

    def export_user_cdrs_csv(
        self,
        user_id: int,
        fileobj: IO[bytes],
        *,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        filters: Iterable[FilterLike] | None = None,
    ) -> DownloadResult:
        """Stream a user's CDRs as CSV (header row first) into ``fileobj``.

        ``hook.export_user_cdrs_csv(12, f, since=day_start, until=day_end)``
        """
        entries = filter_entries(filters) + date_filters("cdrs", since, until)
        params = {"filter": encode_json(entries)} if entries else None
        return self.download("export_user_cdrs_csv", user_id, fileobj, params=params)

    # -- connection test --------------------------------------------------------------

    def test_connection(self) -> tuple[bool, str]:
        """Check the base URL and the token with one ``GET /ping``; never raises."""
        attempts, self.max_attempts = self.max_attempts, 1
        try:
            answer = self.ping()
        except VoIPstudioAuthenticationError:
            return False, AUTHENTICATION_FAILED
        except VoIPstudioNotFoundError:
            return False, "not found: check the base URL, e.g. https://l7api.com/v1.1/voipstudio"
        except VoIPstudioError as error:
            return False, f"cannot use {self.base_url or 'the base URL'}: {error}"
        except ValueError as error:
            return False, str(error)
        finally:
            self.max_attempts = attempts
        return True, f"Connected to {self.base_url}: {answer.get('response', 'ok')}"


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "0", "no", "off", "")
    return bool(value)


__all__ = ["DownloadResult", "VoIPstudioHook", "filter_entries", "positive_id"]
