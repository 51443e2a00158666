"""Who is asking: the sandbox's running state, tokens, sessions and the credentials routes.

The root token sees the whole account; user ``U``'s token ``{token}-user-{U}``, a
``POST /login`` session token and an API token made with ``POST /apitokens`` see only that
user's records. HTTP Basic names the user by id or by e-mail, with any of those tokens.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from voipstudio_provider.endpoints import MAX_PAGE_SIZE, Endpoint

from voipstudio_sandbox.faults import FaultPlan, RequestLog
from voipstudio_sandbox.generate import ENUM_ENCODINGS, SANDBOX_PASSWORD
from voipstudio_sandbox.store import Store
from voipstudio_sandbox.tokens import ApiTokens

DEFAULT_TOKEN = "sandbox-token"
#: A ``POST /login`` session token expires after this long without requests.
SESSION_IDLE_SECONDS = 30 * 60


class ApiError(Exception):
    """An error answer: ``{"message": ..., "errors": [{"message": ...}, ...]}``."""

    def __init__(self, status: int, message: str, errors: list[dict] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors or [{"message": message}]


#: How ``GET /users/{id}/cdrs.csv`` answers: ``job`` (202, an export job queued, as the
#: real service does) or ``stream`` (200, the CSV itself).
CSV_EXPORT_MODES = ("job", "stream")


@dataclass
class Settings:
    """How the sandbox behaves where real services may differ; ``PUT /__sandbox__/settings``.

    :param csv_export: ``job`` or ``stream``, see :data:`CSV_EXPORT_MODES`.
    :param max_page_size: the most rows a list answer holds, whatever ``limit`` asked for
        (``None``: no cap at all; the default is the assumed cap of the service).
    :param fixed_page_size: when set, ``limit`` is ignored and every page holds this many
        rows (a service that answers more rows than asked, or fewer); ``page`` counts
        pages of this size.
    :param enums: how the account sends enumerations, see
        :data:`~voipstudio_sandbox.generate.ENUM_ENCODINGS`.
    """

    csv_export: str = "job"
    max_page_size: int | None = MAX_PAGE_SIZE
    fixed_page_size: int | None = None
    enums: str = "strings"

    def updated(self, changes: dict[str, Any]) -> Settings:
        if not isinstance(changes, dict):
            raise ValueError("settings must be an object")
        unknown = set(changes) - set(self.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown settings: {', '.join(sorted(unknown))}")
        merged = Settings(**{**self.__dict__, **changes})
        if merged.csv_export not in CSV_EXPORT_MODES:
            raise ValueError(f"csv_export must be one of {', '.join(CSV_EXPORT_MODES)}")
        for name in ("max_page_size", "fixed_page_size"):
            size = getattr(merged, name)
            if size is not None and (
                isinstance(size, bool) or not isinstance(size, int) or size < 1
            ):
                raise ValueError(f"{name} must be a positive integer or null")
        if merged.enums not in ENUM_ENCODINGS:
            raise ValueError(f"enums must be one of {', '.join(ENUM_ENCODINGS)}")
        return merged

    def page_limit(self, asked: int) -> int:
        """How many rows a list page holds when ``asked`` were asked for."""
        limit = self.fixed_page_size or asked
        return limit if self.max_page_size is None else min(limit, self.max_page_size)


@dataclass
class Sandbox:
    """Everything a running sandbox owns: the data, the tokens, the faults and the log.

    ``settings`` go back to ``default_settings`` (the command line's) on every reset.
    """

    store: Store
    token: str = DEFAULT_TOKEN
    default_settings: Settings = field(default_factory=Settings)
    settings: Settings = field(default_factory=Settings)
    faults: FaultPlan = field(default_factory=FaultPlan)
    requests: RequestLog = field(default_factory=RequestLog)
    #: session token -> [user id, monotonic time of its last request]
    sessions: dict[str, list[float]] = field(default_factory=dict)
    api_tokens: ApiTokens = field(default_factory=ApiTokens)
    timers: list[threading.Timer] = field(default_factory=list)
    #: ids of the CSV export jobs queued so far
    export_jobs: int = 0

    def __post_init__(self) -> None:
        self.use_settings(self.settings)

    def use_settings(self, settings: Settings) -> None:
        """Behave as ``settings`` say from the next request on."""
        self.settings = settings
        self.store.enums = settings.enums

    def reset(self) -> None:
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()
        self.store.reset()
        self.use_settings(self.default_settings)
        self.faults.clear()
        self.requests.clear()
        self.sessions.clear()
        self.api_tokens.clear()

    def later(self, seconds: float, action: Callable[[], Any]) -> None:
        timer = threading.Timer(seconds, action)
        timer.daemon = True
        self.timers.append(timer)
        timer.start()


@dataclass(frozen=True)
class Caller:
    """Who is asking: the user behind the token, and whether they see the whole account."""

    user: dict[str, Any]
    is_root: bool

    @property
    def owner(self) -> int | None:
        """The owner id that scopes what this caller sees (``None``: everything)."""
        return None if self.is_root else self.user["id"]


# --- requests -----------------------------------------------------------------------------


def authenticate(sandbox: Sandbox, request: Request) -> Caller:
    """The caller of ``request`` from ``X-Auth-Token`` or Basic ``user:token``; else 401.

    The Basic user is the numeric user id (the documented form) or the user's e-mail (what
    a public client sends); either must name the user the token belongs to.
    """
    token = request.headers.get("x-auth-token")
    basic_user = None
    authorization = request.headers.get("authorization", "")
    if token is None and authorization.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
            basic_user, _, token = decoded.partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise ApiError(401, "Invalid authorization header") from None
    if not token:
        raise ApiError(401, "Authentication required")
    user_id = _user_of_token(sandbox, token)
    user = sandbox.store.get("users", user_id) if user_id is not None else None
    if user is None or not user["active"]:
        raise ApiError(401, "Invalid or expired token")
    if basic_user is not None and not _names_user(basic_user, user):
        raise ApiError(401, "Token does not belong to this user")
    return Caller(user, bool(user["is_root"]))


def _names_user(basic_user: str, user: dict[str, Any]) -> bool:
    if basic_user.strip().isdigit():
        return int(basic_user) == user["id"]
    return basic_user.strip().lower() == str(user.get("email") or "").lower()


def _user_of_token(sandbox: Sandbox, token: str) -> int | None:
    if secrets.compare_digest(token, sandbox.token):
        roots = sandbox.store.find("users", "is_root", 1)
        return roots[0]["id"] if roots else None
    prefix = f"{sandbox.token}-user-"
    if token.startswith(prefix) and token[len(prefix) :].isdigit():
        return int(token[len(prefix) :])
    session = sandbox.sessions.get(token)
    if session is None:
        return sandbox.api_tokens.user_of(token)
    if time.monotonic() - session[1] > SESSION_IDLE_SECONDS:
        sandbox.sessions.pop(token, None)
        return None
    session[1] = time.monotonic()
    return int(session[0])


def auth_handler(sandbox: Sandbox, ep: Endpoint) -> Callable[[Request], Any]:
    """The route of a credentials endpoint: ``login``, ``ping``, ``me`` or an API token's."""

    async def login(request: Request) -> JSONResponse:
        try:
            payload = await request.json()
        except ValueError:
            payload = None
        if not isinstance(payload, dict) or not payload.get("email"):
            raise ApiError(400, "email and password are required")
        users = sandbox.store.find("users", "email", payload["email"])
        if not users or payload.get("password") != SANDBOX_PASSWORD:
            raise ApiError(401, "Invalid email or password")
        token = secrets.token_hex(20)
        sandbox.sessions[token] = [users[0]["id"], time.monotonic()]
        return JSONResponse(
            {"message": "Login success", "user_token": token, "user_id": users[0]["id"]}
        )

    def ping(request: Request) -> JSONResponse:
        authenticate(sandbox, request)
        return JSONResponse({"data": {"response": "Pong"}})

    def me(request: Request) -> JSONResponse:
        return JSONResponse({"data": authenticate(sandbox, request).user, "links": {}})

    async def create_api_token(request: Request) -> JSONResponse:
        caller = authenticate(sandbox, request)
        try:
            payload = await request.json()
        except ValueError:
            payload = None
        try:
            created = sandbox.api_tokens.create(caller.user["id"], payload)
        except ValueError as error:
            raise ApiError(400, "Validation failed", [{"message": str(error)}]) from None
        return JSONResponse({"data": created}, status_code=201)

    def list_api_tokens(request: Request) -> JSONResponse:
        caller = authenticate(sandbox, request)
        try:
            rows = sandbox.api_tokens.listed(caller.user["id"], request.query_params.get("filter"))
        except ValueError as error:
            raise ApiError(400, "Filtration error", [{"message": str(error)}]) from None
        return JSONResponse({"data": rows, "total": len(rows)})

    def revoke_api_token(request: Request) -> Response:
        caller = authenticate(sandbox, request)
        token = request.path_params["token"]
        if not sandbox.api_tokens.revoke(token, None if caller.is_root else caller.user["id"]):
            raise ApiError(404, "API token not found")
        return Response(status_code=204)

    return {
        "login": login,
        "ping": ping,
        "me": me,
        "create_api_token": create_api_token,
        "list_api_tokens": list_api_tokens,
        "revoke_api_token": revoke_api_token,
    }[ep.operation]
