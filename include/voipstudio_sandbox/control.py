"""The ``/__sandbox__/`` control API: reset, faults, the request log and raw state.

No authentication and JSON in and out: tests and the demo use it to arrange the account
(add calls while a DAG pages through them, make a gigabyte recording), to switch faults on
and to compare what reached the bucket with the truth.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from voipstudio_provider.endpoints import RESOURCES

from voipstudio_sandbox.accounts import Sandbox
from voipstudio_sandbox.generate import AccountGenerator
from voipstudio_sandbox.store import ValidationError, table_fields

#: How many records one ``POST records/{resource}`` may add.
MAX_ADDED_RECORDS = 100_000


def _generator_for(sandbox: Sandbox, resource: str) -> AccountGenerator:
    """A generator that knows the account's users and numbers, seeded by what it will add."""
    store = sandbox.store
    key = f"{store.seed}:{resource}:{store.next_id(resource)}"
    rng = random.Random(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big"))
    account = AccountGenerator(store.seed, dt.datetime.now(dt.UTC), rng)
    account.set_users(store.all("users"))
    account.tracking_numbers = [row["e164"] for row in store.all("calltracking")]
    return account


def add_records(
    sandbox: Sandbox, resource: str, count: int, fields: dict[str, Any], with_recording: bool
) -> dict[str, list[int]]:
    """Add ``count`` records of ``resource`` dated now, with ``fields`` overriding generated
    values; for CDRs ``with_recording`` also adds a linked monitor, MSDR and media session.

    :return: the new ids per table, the requested resource's under ``ids``.
    """
    if resource not in RESOURCES and resource != "notes":
        raise ValidationError(f"unknown resource {resource!r}")
    unknown = set(fields) - set(table_fields(resource)) - {"id"}
    if unknown:
        raise ValidationError(f"unknown fields of {resource}: {', '.join(sorted(unknown))}")
    store = sandbox.store
    account = _generator_for(sandbox, resource)
    now = account.now.replace(microsecond=0)
    added: dict[str, list[dict[str, Any]]] = {}

    def next_id(table: str) -> int:
        return store.next_id(table) + len(added.get(table, []))

    def add(table: str, row: dict[str, Any]) -> dict[str, Any]:
        added.setdefault(table, []).append(row)
        return row

    def base_call(call_type: str | None = None) -> dict[str, Any]:
        overrides = fields if resource == "cdrs" else {}
        return account.cdr(
            next_id("cdrs"),
            now,
            call_type=overrides.get("type", call_type),
            recorded=True,
            user_id=fields.get("user_id"),
        )

    builders: dict[str, Callable[[], dict[str, Any]]] = {
        "cdrs": lambda: base_call(),
        "monitors": lambda: account.monitor(next_id("monitors"), base_call("I")),
        "voicemessages": lambda: account.voicemessage(next_id("voicemessages"), base_call("M")),
        "msdrs": lambda: account.msdr(next_id("msdrs"), base_call("I"), None),
        "mediasessions": lambda: account.mediasession(next_id("mediasessions"), base_call("I")),
        "notes": lambda: account.note(next_id("notes"), base_call("I")),
        "chats": lambda: account.chat(next_id("chats"), now),
        "chatmsgs": lambda: account.chatmsg(
            next_id("chatmsgs"), {"id": None, "created_at": _api(now)}, 0
        ),
        "sms": lambda: account.sms(next_id("sms"), now),
        "statements": lambda: account.statement(next_id("statements"), now),
        "calltracking": lambda: account.make_calltracking(1, next_id("calltracking"))[0],
    }
    if resource not in builders:
        raise ValidationError(f"records of {resource} cannot be added")
    for _ in range(count):
        row = add(resource, builders[resource]() | fields)
        if resource == "cdrs" and with_recording:
            session_id = next_id("mediasessions")
            add("monitors", account.monitor(next_id("monitors"), row))
            add("mediasessions", account.mediasession(session_id, row))
            add("msdrs", account.msdr(next_id("msdrs"), row, session_id))
    for table, rows in added.items():
        store.insert(table, rows)
    result = {table: [row["id"] for row in rows] for table, rows in added.items()}
    result["ids"] = result[resource]
    return result


def _api(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def control_router(sandbox: Sandbox) -> APIRouter:
    """The routes under ``/__sandbox__/`` for ``sandbox``."""
    router = APIRouter()

    @router.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @router.post("/reset")
    def reset() -> dict[str, Any]:
        sandbox.reset()
        return {"status": "ok", "seed": sandbox.store.seed}

    @router.get("/faults")
    def get_faults() -> dict[str, Any]:
        return sandbox.faults.as_json()

    @router.put("/faults")
    async def put_faults(request: Request) -> JSONResponse:
        try:
            sandbox.faults.replace(await request.json())
        except (ValueError, TypeError) as error:
            return _bad_request(str(error))
        return JSONResponse(sandbox.faults.as_json())

    @router.delete("/faults")
    def delete_faults() -> Response:
        sandbox.faults.clear()
        return Response(status_code=204)

    @router.get("/effects")
    def get_effects() -> dict[str, int]:
        # Deferred effects of the ``late`` and ``late_500`` faults not yet applied.
        return {"waiting": sandbox.faults.effects_waiting()}

    @router.get("/settings")
    def get_settings() -> dict[str, Any]:
        return dict(sandbox.settings.__dict__)

    @router.put("/settings")
    async def put_settings(request: Request) -> JSONResponse:
        try:
            sandbox.use_settings(sandbox.settings.updated(await request.json()))
        except (ValueError, TypeError) as error:
            return _bad_request(str(error))
        return JSONResponse(dict(sandbox.settings.__dict__))

    @router.get("/requests")
    def get_requests() -> dict[str, Any]:
        entries = sandbox.requests.as_list()
        return {"data": entries, "total": len(entries)}

    @router.delete("/requests")
    def delete_requests() -> Response:
        sandbox.requests.clear()
        return Response(status_code=204)

    @router.get("/stats")
    def stats() -> dict[str, int]:
        return sandbox.store.counts()

    @router.get("/records/{resource}")
    def get_records(resource: str) -> JSONResponse:
        if resource not in RESOURCES and resource != "notes":
            return _bad_request(f"unknown resource {resource!r}", 404)
        rows = sandbox.store.all(resource)
        return JSONResponse({"data": rows, "total": len(rows)})

    @router.post("/records/{resource}")
    async def post_records(resource: str, request: Request) -> JSONResponse:
        try:
            body = await request.json() if await request.body() else {}
        except ValueError:
            return _bad_request("body is not valid JSON")
        if not isinstance(body, dict):
            return _bad_request("body must be an object")
        count, fields = body.get("count", 1), body.get("fields") or {}
        if not isinstance(count, int) or not 0 < count <= MAX_ADDED_RECORDS:
            return _bad_request(f"count must be an integer from 1 to {MAX_ADDED_RECORDS}")
        if not isinstance(fields, dict):
            return _bad_request("fields must be an object")

        def add() -> dict[str, list[int]]:
            with sandbox.store.lock:  # ids come from MAX(id): nobody may insert in between
                return add_records(
                    sandbox, resource, count, fields, bool(body.get("with_recording"))
                )

        try:
            result = await run_in_threadpool(add)
        except ValidationError as error:
            return _bad_request(error.message)
        return JSONResponse(result, status_code=201)

    return router


def _bad_request(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"message": message, "errors": [{"message": message}]}, status_code=status)
