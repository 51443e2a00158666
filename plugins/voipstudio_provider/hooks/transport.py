"""The request loop every call of the VoIPstudio hook goes through.

:class:`TransportMixin` holds the one place where a request is sent (``_send``), the retry
policy around it (``_with_retries``) and the two generic entry points built on them:
``HttpHook``'s :meth:`~TransportMixin.run` family and the table-driven
:meth:`~TransportMixin.call`. They live together so that no request can reach the API past
the retries, the timeouts or the scrubbing of the token. The reads, writes and downloads of
the hook build on this mixin; :class:`~voipstudio_provider.hooks.voipstudio.VoIPstudioHook`
owns the connection and the session it uses.
"""

from __future__ import annotations

import posixpath
import re
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

import requests

from voipstudio_provider.endpoints import ENDPOINTS, Endpoint, Shape, endpoint
from voipstudio_provider.exceptions import VoIPstudioError
from voipstudio_provider.hooks.paths import filter_entries, path_of
from voipstudio_provider.hooks.responses import (
    backoff_seconds,
    encode_json,
    error_from_response,
    error_from_transport,
    malformed_json_error,
    request_label,
)

if TYPE_CHECKING:
    import logging

T = TypeVar("T")


class TransportMixin:
    """Send requests with the hook's timeouts, retries and error types.

    Meant to be combined with :class:`~airflow.providers.http.hooks.http.HttpHook`, ahead of
    it, by :class:`~voipstudio_provider.hooks.voipstudio.VoIPstudioHook`, which sets the
    attributes declared below and builds the session :meth:`get_conn` returns.
    """

    # Set by VoIPstudioHook from its arguments and the connection.
    base_url: str
    method: str
    timeout: tuple[float, float]
    max_attempts: int
    backoff_base: float
    backoff_cap: float
    retry_after_cap: float
    _token: str

    if TYPE_CHECKING:
        log: logging.Logger

        def get_conn(
            self, headers: dict[Any, Any] | None = None, extra_options: Any = None
        ) -> requests.Session: ...

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
        A ``DELETE`` of a whole collection (``/voicemessages``) or of anything but a list
        of ids below it is refused before a request is sent: only :meth:`delete_all`
        sends one. Prefer :meth:`call`, which knows every endpoint by name.

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
        if method == "DELETE":
            refuse_collection_delete(path)
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

    # -- the endpoint table's generic entry point ---------------------------------------

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
        path = path_of(ep, id=id, ids=ids)
        body, _ = self._json(ep, path, params=encoded_query(params), json=json)
        return body


#: Paths of whole-collection deletes, and of the collections whose rows are deleted by id.
_COLLECTION_DELETES = frozenset(e.path.lower() for e in ENDPOINTS if e.shape is Shape.DELETE_ALL)
_ID_DELETES = frozenset(
    e.path.lower().removesuffix("/{ids}") for e in ENDPOINTS if e.shape is Shape.DELETE_IDS
)
_ID_LIST = re.compile(r"[1-9][0-9]*(,[1-9][0-9]*)*")


def refuse_collection_delete(path: str) -> None:
    """Raise ``ValueError`` when a ``DELETE`` of ``path`` could erase a whole collection.

    The path is read as the server may read it (percent-decoded, dot segments and repeated
    or trailing slashes removed, any case): a collection itself, or below a collection
    anything but a comma-separated list of positive ids, is refused.
    """
    # normpath keeps a leading "//": collapse repeated slashes first.
    collapsed = re.sub(r"/+", "/", "/" + unquote(path).strip())
    normal = posixpath.normpath(collapsed).lower().rstrip("/") or "/"
    parent, _, last = normal.rpartition("/")
    if normal in _COLLECTION_DELETES or normal in _ID_DELETES:
        raise ValueError(
            f"DELETE {path} would delete a whole collection: use delete_all() with its "
            "confirmation phrase, or delete_records() with ids"
        )
    if parent in _ID_DELETES and not _ID_LIST.fullmatch(last):
        raise ValueError(f"DELETE {path}: only a comma-separated list of positive ids is deleted")


def encoded_query(params: dict[str, Any] | None) -> dict[str, Any]:
    """A copy of ``params`` whose ``filter``, when given as :class:`Filter` or dicts, is the
    JSON text the API reads; a ``filter`` already written as text goes as it is."""
    query = dict(params or {})
    if "filter" in query and not isinstance(query["filter"], str):
        query["filter"] = encode_json(filter_entries(query["filter"]))
    return query
