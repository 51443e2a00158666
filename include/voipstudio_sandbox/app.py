"""The History API over HTTP: routes made from the endpoint table, one factory per shape.

Every row of :data:`voipstudio_provider.endpoints.ENDPOINTS` becomes a route under each of
:data:`API_PREFIXES`; the shape of the row picks the factory that serves it. The state
lives in :class:`~voipstudio_sandbox.store.Store`, bodies come from
:mod:`~voipstudio_sandbox.media`, faults and the request log from
:mod:`~voipstudio_sandbox.faults`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from voipstudio_provider.endpoints import (
    API_TOKEN_ENDPOINTS,
    AUTH_ENDPOINTS,
    DEFAULT_PAGE_SIZE,
    ENDPOINTS,
    RESOURCES,
    VOICEMAIL_FOLDERS,
    Endpoint,
    Shape,
)

from voipstudio_sandbox import media
from voipstudio_sandbox.accounts import (
    DEFAULT_TOKEN,
    ApiError,
    Caller,
    Sandbox,
    auth_handler,
    authenticate,
)
from voipstudio_sandbox.control import control_router
from voipstudio_sandbox.faults import FaultMiddleware
from voipstudio_sandbox.generate import DICTIONARIES, sip_call_id, voicemessage_size
from voipstudio_sandbox.store import NotFoundError, ValidationError, table_fields

__all__ = ["DEFAULT_TOKEN", "Sandbox", "create_app"]

API_PREFIXES = ("/v1.1/voipstudio", "/v1.2/voipstudio")
CONTROL_PREFIX = "/__sandbox__"
#: Assumption: whole-collection deletes of monitors and voicemessages finish this much later.
ASYNC_DELETE_SECONDS = 1.0
_UPDATABLE = {"voicemessages": ("folder",), "cdrs": None}  # None: every field but id


# --- requests -----------------------------------------------------------------------------


def record_id(raw: str) -> int:
    value = int(raw) if raw.isascii() and raw.isdigit() else 0
    if value < 1:
        raise ApiError(400, f"Invalid id {raw!r}", [{"message": "Invalid id", "property": "id"}])
    return value


def record_ids(raw: str) -> list[int]:
    parts = raw.split(",")
    if not raw or any(not part.strip() for part in parts):
        raise ApiError(400, "ids must be comma-separated integers")
    return list(dict.fromkeys(record_id(part.strip()) for part in parts))


def _int_param(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ApiError(400, f"{name} must be a positive integer", [{"message": "Invalid value",
                                                                    "property": name}])  # fmt: skip
    return value


def sort_order(request: Request) -> tuple[str, str]:
    """``sort`` and ``dir``: ``sort=-calldate`` (a public client's form) sorts descending,
    like ``sort=calldate&dir=DESC`` (the documented one); the default is id descending."""
    sort = request.query_params.get("sort") or "id"
    if sort.startswith("-") and len(sort) > 1:
        return sort[1:], "DESC"
    return sort, request.query_params.get("dir") or "DESC"


def visible_record(sandbox: Sandbox, caller: Caller, resource: str, raw_id: str) -> dict:
    """The record ``raw_id`` of ``resource``: 400 if not an integer, 404, or 403 if not theirs."""
    row = sandbox.store.get(resource, record_id(raw_id))
    if row is None:
        raise ApiError(404, f"{resource} {raw_id} not found")
    owner_field = RESOURCES[resource].owner_field
    if caller.owner is not None and owner_field and row[owner_field] != caller.owner:
        raise ApiError(403, "Access denied")
    return row


def _single(data: Any) -> JSONResponse:
    return JSONResponse({"data": data, "links": {}})


# --- one factory per shape ------------------------------------------------------------------

Handler = Callable[[Request], Any]


def list_handler(sandbox: Sandbox, ep: Endpoint) -> Handler:
    def handle(request: Request) -> JSONResponse:
        caller = authenticate(sandbox, request)
        store = sandbox.store
        # The service's page may hold fewer rows than asked (a cap), or more (a fixed size).
        limit = sandbox.settings.page_limit(_int_param(request, "limit", DEFAULT_PAGE_SIZE))
        sort, direction = sort_order(request)
        within = None
        if ep.operation == "list_calltracking_cdrs":
            within = ("dst", [row["e164"] for row in store.all("calltracking")])
        rows, total = store.list(
            ep.resource,
            filters=store.parse_filters(ep.resource, request.query_params.get("filter")),
            sort=sort,
            direction=direction,
            page=_int_param(request, "page", 1),
            limit=limit,
            owner=caller.owner,
            within=within,
        )
        return JSONResponse({"data": rows, "total": total})

    return handle


def get_handler(sandbox: Sandbox, ep: Endpoint) -> Handler:
    def handle(request: Request) -> JSONResponse:
        caller = authenticate(sandbox, request)
        row = visible_record(sandbox, caller, ep.resource, request.path_params["id"])
        if ep.path.endswith("/notes"):
            notes = sandbox.store.find("notes", "cdr_id", row["id"])
            return JSONResponse({"data": notes, "total": len(notes)})
        return _single(row)

    return handle


def _body_of(sandbox: Sandbox, ep: Endpoint, row: dict[str, Any]) -> media.Body:
    label = f"{sandbox.store.seed}:{ep.resource}:{row['id']}"
    if ep.suffix == "mp3" and ep.resource == "monitors":
        return media.mp3_body(row["size"], row["duration"] or 1, label)
    if ep.suffix == "mp3":
        return media.mp3_body(voicemessage_size(row), row["duration"] or 1, label)
    started = row.get("calldate") or row["created_at"]
    length = row["billsec"] if ep.resource == "cdrs" else row["duration"]
    # A CDR's call_id is an integer; its SIP Call-ID is the one its MSDR carries.
    call_id = (
        sip_call_id(sandbox.store.seed, row["id"]) if ep.resource == "cdrs" else row["call_id"]
    )
    packets = media.sip_dialogue(call_id, row["src"], row["dst"], started, length, label)
    return media.pcap_body(packets) if ep.suffix == "pcap" else media.trace_body(packets)


def download_handler(sandbox: Sandbox, ep: Endpoint) -> Handler:
    def handle(request: Request) -> Response:
        caller = authenticate(sandbox, request)
        if ep.suffix == "csv":
            return _user_cdrs_csv(sandbox, ep, caller, request)
        row = visible_record(sandbox, caller, ep.resource, request.path_params["id"])
        body = _body_of(sandbox, ep, row)
        return StreamingResponse(
            body.chunks, media_type=ep.content_type, headers={"Content-Length": str(body.length)}
        )

    return handle


def _user_cdrs_csv(sandbox: Sandbox, ep: Endpoint, caller: Caller, request: Request) -> Response:
    user = visible_record(sandbox, caller, "users", request.path_params["id"])
    if caller.owner is not None and user["id"] != caller.owner:
        raise ApiError(403, "Access denied")
    store = sandbox.store
    filters = store.parse_filters("cdrs", request.query_params.get("filter"))
    if sandbox.settings.csv_export == "job":
        # The real service queues an export job (202); where the file goes is not public.
        sandbox.export_jobs += 1
        job = {"id": sandbox.export_jobs, "status": "queued", "user_id": user["id"],
               "format": "csv", "filter": filters}  # fmt: skip
        return JSONResponse({"message": "Export queued", "data": job}, status_code=202)
    # assumption: streamed with chunked transfer encoding, as the row count is open-ended.
    batches = store.iter_batches("cdrs", filters=filters, owner=user["id"])
    fields = table_fields("cdrs")
    return StreamingResponse(media.csv_chunks(fields, batches), media_type=ep.content_type)


def delete_ids_handler(sandbox: Sandbox, ep: Endpoint) -> Handler:
    def handle(request: Request) -> Response:
        caller = authenticate(sandbox, request)
        ids = record_ids(request.path_params["ids"])
        owner_field = RESOURCES[ep.resource].owner_field
        if caller.owner is not None and owner_field:
            for one_id in ids:
                row = sandbox.store.get(ep.resource, one_id)
                if row is not None and row[owner_field] != caller.owner:
                    raise ApiError(403, "Access denied")
        sandbox.store.delete(ep.resource, ids)
        return Response(status_code=ep.success_status)

    return handle


def delete_all_handler(sandbox: Sandbox, ep: Endpoint) -> Handler:
    def handle(request: Request) -> Response:
        caller = authenticate(sandbox, request)
        if not caller.is_root:  # assumption: only the account's root may erase a collection
            raise ApiError(403, "Access denied")
        store = sandbox.store
        if ep.success_status == 202:
            epoch = store.epoch
            sandbox.later(ASYNC_DELETE_SECONDS, lambda: store.delete_all(ep.resource, epoch=epoch))
            return JSONResponse({"message": "Deletion accepted"}, status_code=202)
        store.delete_all(ep.resource)
        return Response(status_code=ep.success_status)

    return handle


def _validate_update(resource: str, rows: Any) -> list[dict[str, Any]]:
    if not isinstance(rows, list) or not rows:
        raise ApiError(400, "Body must be a non-empty JSON list of objects with id")
    allowed = _UPDATABLE[resource] or tuple(f for f in table_fields(resource) if f != "id")
    errors = []
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            errors.append({"message": "Must be an object", "index": index})
            continue
        if not isinstance(row.get("id"), int) or isinstance(row.get("id"), bool):
            errors.append({"message": "id is required", "property": "id", "index": index})
        for key in sorted(set(row) - {"id"} - set(allowed)):
            errors.append({"message": f"Unknown field {key!r}", "property": key, "index": index})
        folder = row.get("folder")
        if resource == "voicemessages" and folder not in VOICEMAIL_FOLDERS:
            errors.append(
                {"message": f"folder must be one of {', '.join(VOICEMAIL_FOLDERS)}",
                 "property": "folder", "index": index}
            )  # fmt: skip
    if errors:
        raise ApiError(400, "Validation failed", errors)
    return rows


def update_handler(sandbox: Sandbox, ep: Endpoint) -> Handler:
    async def handle(request: Request) -> JSONResponse:
        caller = authenticate(sandbox, request)
        try:
            payload = await request.json()
        except ValueError:
            raise ApiError(400, "Body is not valid JSON") from None
        rows = _validate_update(ep.resource, payload)
        owner_field = RESOURCES[ep.resource].owner_field
        for row in rows:
            current = sandbox.store.get(ep.resource, row["id"])
            if current is None:
                raise ApiError(404, f"{ep.resource} {row['id']} not found")
            if caller.owner is not None and owner_field and current[owner_field] != caller.owner:
                raise ApiError(403, "Access denied")
        sandbox.store.update(ep.resource, rows)
        return JSONResponse({"data": [sandbox.store.get(ep.resource, r["id"]) for r in rows]})

    return handle


def dictionary_handler(sandbox: Sandbox, ep: Endpoint) -> Handler:
    def handle(request: Request) -> JSONResponse:
        authenticate(sandbox, request)
        return JSONResponse({"data": DICTIONARIES.get(ep.resource, {})})

    return handle


FACTORIES: dict[Shape, Callable[[Sandbox, Endpoint], Handler]] = {
    Shape.LIST: list_handler,
    Shape.GET: get_handler,
    Shape.DOWNLOAD: download_handler,
    Shape.DELETE_IDS: delete_ids_handler,
    Shape.DELETE_ALL: delete_all_handler,
    Shape.UPDATE: update_handler,
    Shape.DICTIONARY: dictionary_handler,
}


# --- the application ------------------------------------------------------------------------


def _route_order(ep: Endpoint) -> tuple[int, str]:
    # Literal paths before templates, and "{id}.mp3" before "{id}": Starlette's "{id}"
    # would otherwise swallow "dictionaries" and "12.mp3".
    if "{" not in ep.path:
        return 0, ep.path
    return (1 if ep.suffix or ep.path.endswith("/notes") else 2), ep.path


def create_app(sandbox: Sandbox):
    """The ASGI application: the API under both prefixes, the control API, the fault layer."""
    app = FastAPI(title="VoIPstudio sandbox", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return JSONResponse(
            {"message": error.message, "errors": error.errors}, status_code=error.status
        )

    @app.exception_handler(ValidationError)
    async def validation_error(request: Request, error: ValidationError) -> JSONResponse:
        return JSONResponse({"message": error.message, "errors": error.errors}, status_code=400)

    @app.exception_handler(NotFoundError)
    async def not_found(request: Request, error: NotFoundError) -> JSONResponse:
        errors = [{"message": f"{error.resource} {i} not found", "id": i} for i in error.ids]
        return JSONResponse({"message": str(error), "errors": errors}, status_code=404)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        message = str(error.detail)
        return JSONResponse(
            {"message": message, "errors": [{"message": message}]},
            status_code=error.status_code,
            headers=getattr(error, "headers", None),
        )

    for prefix in API_PREFIXES:
        for ep in sorted(ENDPOINTS, key=_route_order):
            handler = FACTORIES[ep.shape](sandbox, ep)
            app.add_api_route(
                prefix + ep.path, handler, methods=[ep.method], name=f"{prefix}:{ep.operation}"
            )
        for ep in AUTH_ENDPOINTS + API_TOKEN_ENDPOINTS:
            app.add_api_route(prefix + ep.path, auth_handler(sandbox, ep), methods=[ep.method])
    app.include_router(control_router(sandbox), prefix=CONTROL_PREFIX)
    return FaultMiddleware(app, sandbox.faults, sandbox.requests, CONTROL_PREFIX)
