"""The VoIPstudio hook: one authenticated HTTP session for every endpoint of the History API.

Paths come from :mod:`voipstudio_provider.endpoints`; no other module of the provider builds
a URL. The hook reuses one ``requests.Session``, puts an explicit timeout on every request,
streams downloads while hashing them, and retries (with tenacity) what may succeed later.

The class reads top to bottom: the session, the retries, the one place a request is sent
(where answers become errors), the generic entry points ``run()`` and ``call()`` and the
checks of the connection. Its reads and writes of records come from
:class:`~voipstudio_provider.hooks.records.RecordsMixin`, its downloads from
:class:`~voipstudio_provider.hooks.downloads.DownloadsMixin`. What each step decides lives
beside it: :mod:`~voipstudio_provider.hooks.session` (the connection's credentials and
extras, the session), :mod:`~voipstudio_provider.hooks.retries` (what is tried again, and
when), :mod:`~voipstudio_provider.hooks.responses` (errors from answers) and
:mod:`~voipstudio_provider.hooks.paths` (paths and queries, the guard against
whole-collection deletes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import requests
from airflow.sdk import BaseHook

from voipstudio_provider.endpoints import Endpoint, Shape, endpoint
from voipstudio_provider.exceptions import (
    VoIPstudioAuthenticationError,
    VoIPstudioError,
    VoIPstudioNotFoundError,
    VoIPstudioValidationError,
)
from voipstudio_provider.hooks.downloads import DownloadResult, DownloadsMixin, ExportJob
from voipstudio_provider.hooks.paths import (
    encoded_query,
    filter_entries,
    path_of,
    positive_id,
    request_url,
    run_request,
)
from voipstudio_provider.hooks.records import RecordsMixin
from voipstudio_provider.hooks.responses import (
    AUTHENTICATION_FAILED,
    error_from_response,
    error_from_transport,
    filter_error,
    malformed_json_error,
    request_label,
)
from voipstudio_provider.hooks.retries import with_retries
from voipstudio_provider.hooks.session import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_PAGE_SIZE,
    DEFAULT_READ_TIMEOUT,
    KEEP_ALIVE,
    new_session,
    read_connection,
)

T = TypeVar("T")


class VoIPstudioHook(DownloadsMixin, RecordsMixin, BaseHook):
    """Call the VoIPstudio History API through a ``voipstudio`` connection.

    The connection's host is the base URL (``https://l7api.com/v1.1/voipstudio``), its
    password the API token. With a login (the numeric user id or the user's e-mail) the hook
    authenticates with HTTP Basic ``login:token``, otherwise with the ``X-Auth-Token``
    header. Extras:
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
        super().__init__()
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.voipstudio_conn_id = voipstudio_conn_id
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.retry_after_cap = retry_after_cap
        #: The HTTP method :meth:`run` sends.
        self.method = "GET"
        self.base_url = ""
        self.timeout: tuple[float, float] = (DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT)
        self.page_size = DEFAULT_PAGE_SIZE
        self._timeout_arg = timeout
        self._page_size_arg = page_size
        self._session: requests.Session | None = None
        self._token = ""

    # -- the session and its credentials ----------------------------------------------

    def get_conn(self) -> requests.Session:
        """The hook's one ``requests.Session``, built from the connection on first use."""
        if self._session is None:
            settings = read_connection(
                self.get_connection(self.voipstudio_conn_id),
                self.voipstudio_conn_id,
                timeout=self._timeout_arg,
                page_size=self._page_size_arg,
            )
            self.base_url, self._token = settings.base_url, settings.token
            self.timeout, self.page_size = settings.timeout, settings.page_size
            self._session = new_session(settings)
        return self._session

    def close(self) -> None:
        """Close the HTTP session; the next call opens a new one."""
        if self._session is not None:
            self._session.close()
            self._session = None

    def __enter__(self) -> VoIPstudioHook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- retries --------------------------------------------------------------------------

    def _with_retries(
        self,
        label: str,
        attempt_once: Callable[[], T],
        may_retry: Callable[[VoIPstudioError], bool] = lambda error: True,
    ) -> T:
        """Run ``attempt_once`` with this hook's retry settings
        (:func:`~voipstudio_provider.hooks.retries.with_retries`), its token scrubbed from
        every error."""
        return with_retries(
            label,
            attempt_once,
            may_retry,
            max_attempts=self.max_attempts,
            backoff_base=self.backoff_base,
            backoff_cap=self.backoff_cap,
            token=self._token,
            log=self.log,
        )

    # -- one request, and its answer as an error -----------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        data: Any = None,
        stream: bool = False,
        headers: dict[str, str] | None = None,
        timeout: float | tuple[float, float] | None = None,
        filters: list[dict[str, Any]] | None = None,
        whole_collection: bool = False,
    ) -> requests.Response:
        """One request; a non-2xx answer or a transport failure raises a VoIPstudioError
        (a 400 to a request carrying ``filters`` names the filters the service refused).

        The URL is judged as it will be sent (:func:`~.paths.request_url`): a ``DELETE`` of
        a collection leaves only with ``whole_collection``, which :meth:`delete_all` alone
        sets after its confirmation phrase."""
        session = self.get_conn()
        url = request_url(self.base_url, method, path, whole_collection=whole_collection)
        try:
            response = session.request(
                method,
                url,
                params=params,
                json=json,
                data=data,
                stream=stream,
                headers=headers,
                timeout=timeout or self.timeout,
            )
        except requests.RequestException as exc:
            raise error_from_transport(exc, method, path) from None
        if response.status_code < 400:
            return response
        with response:
            error = error_from_response(response, method, path, self.retry_after_cap)
        if filters and isinstance(error, VoIPstudioValidationError):
            error = filter_error(error, filters)
        raise error

    def _json(
        self,
        ep: Endpoint,
        path: str,
        *,
        params=None,
        json=None,
        filters=None,
        whole_collection: bool = False,
    ) -> tuple[Any, int]:
        """Call a JSON endpoint with retries; return the decoded body (or None) and status."""

        def attempt() -> tuple[Any, int]:
            response = self._send(
                ep.method,
                path,
                params=params,
                json=json,
                filters=filters,
                whole_collection=whole_collection,
            )
            if response.status_code == 204 or not response.content.strip():
                return None, response.status_code
            try:
                return response.json(), response.status_code
            except ValueError:
                raise malformed_json_error(ep.method, path, response.status_code) from None

        return self._with_retries(request_label(ep.method, path), attempt)

    # -- generic entry points -----------------------------------------------------------

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

        Shaped like ``HttpHook.run`` and sent with this hook's retries, timeouts and error
        types: a non-2xx answer raises a
        :class:`~voipstudio_provider.exceptions.VoIPstudioError` subclass, and the token
        never appears in a message. ``data`` is the query of a ``GET``, the body of other
        methods (a dict or list goes as JSON); ``extra_options`` takes ``timeout`` only.
        A ``DELETE`` of a whole collection (``/voicemessages``) or of anything but a list
        of ids below it is refused before a request is sent: only :meth:`delete_all`
        sends one. Prefer :meth:`call`, which knows every endpoint by name.

        ``hook.run("cdrs", data={"limit": 5, "sort": "id", "dir": "ASC"}).json()["total"]``
        """
        method = (self.method or "GET").upper()
        self.get_conn()  # the path is read below the connection's base URL
        request = run_request(method, endpoint, data, json, extra_options, self.base_url)
        return self._with_retries(
            request_label(method, request.path),
            lambda: self._send(
                method,
                request.path,
                params=request.params,
                json=request.json,
                data=request.data,
                headers=headers,
                timeout=request.timeout,
            ),
        )

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

    # -- checks of the connection ------------------------------------------------------

    def ping(self) -> dict[str, Any]:
        """A cheap credentials check: ``hook.ping()`` gives ``{"response": "Pong"}``."""
        return (self.call("ping") or {}).get("data") or {}

    def me(self) -> dict[str, Any]:
        """The user the token belongs to: ``hook.me()["email"]``."""
        return (self.call("me") or {}).get("data") or {}

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


__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_PAGE_SIZE",
    "DEFAULT_READ_TIMEOUT",
    "KEEP_ALIVE",
    "DownloadResult",
    "ExportJob",
    "VoIPstudioHook",
    "filter_entries",
    "positive_id",
]
