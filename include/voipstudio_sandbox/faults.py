"""Faults on demand and the request log, as an ASGI layer in front of the API.

A fault rule names request paths (an ``fnmatch`` glob), methods, a kind and a rate. Whether a
request is hit is drawn from a random source seeded by the rule set's ``seed``, so the same
sequence of requests meets the same faults. Every API request is logged with the status
and the number of body bytes that really left the server.

Most kinds stop a request before the service acts on it. Four act first and fail after,
as a service does whose answer is lost or whose work is queued:

- ``apply_500``: the request takes effect, then the answer is a 500;
- ``apply_drop``: the request takes effect, then the connection drops before any answer;
- ``late``: 202 at once, the request takes effect ``delay`` seconds later;
- ``late_500``: a 500 at once, the request still takes effect ``delay`` seconds later.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from voipstudio_sandbox.rawanswer import invalid_token_answer, write_raw_answer

log = logging.getLogger(__name__)

FAULT_KINDS = (
    "429", "500", "502", "503", "slow", "drop", "truncate", "malformed", "malformed_headers",
    "apply_500", "apply_drop", "late", "late_500",
)  # fmt: skip
#: Kinds whose request still takes effect: at once (``apply_*``) or ``delay`` s later.
APPLYING_KINDS = ("apply_500", "apply_drop", "late", "late_500")
#: A header line longer than HTTP clients parse: Python's http.client refuses lines over
#: 64 KiB (LineTooLong), Node's parser headers over 16 KiB (HPE_HEADER_OVERFLOW).
_UNPARSEABLE_HEADER = (b"x-ratelimit-debug", b"x" * (80 * 1024))
_MALFORMED_BODY = b'{"data": [{"id": 1, "calldate": "2024-01-'
#: The forms of ``malformed_headers``: a header line too long to parse (``overflow``), or a
#: header line that is not a header (``invalid_token``, what Node calls
#: HPE_INVALID_HEADER_TOKEN), written on the raw connection by :mod:`.rawanswer`.
MALFORMED_HEADER_FORMS = ("overflow", "invalid_token")
_REASONS = {
    "429": "Too many requests",
    "500": "Internal server error",
    "502": "Bad gateway",
    "503": "Service unavailable",
}


@dataclass
class FaultRule:
    """One fault: which requests it hits, how often, and what they get instead."""

    path: str = "*"
    kind: str = "500"
    methods: list[str] | None = None
    rate: float = 1.0
    retry_after: float | None = 1
    delay: float = 0.5
    times: int | None = None
    form: str = "overflow"
    hits: int = field(default=0)

    @classmethod
    def from_json(cls, spec: dict[str, Any]) -> FaultRule:
        if not isinstance(spec, dict):
            raise ValueError("each fault rule must be an object")
        unknown = set(spec) - {f for f in cls.__dataclass_fields__ if f != "hits"}
        if unknown:
            raise ValueError(f"unknown fault rule fields: {', '.join(sorted(unknown))}")
        rule = cls(**spec)
        rule.kind = str(rule.kind)
        if rule.kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {', '.join(FAULT_KINDS)}")
        if rule.form not in MALFORMED_HEADER_FORMS:
            raise ValueError(f"fault form must be one of {', '.join(MALFORMED_HEADER_FORMS)}")
        if not 0 <= float(rule.rate) <= 1:
            raise ValueError("fault rate must be between 0 and 1")
        if rule.methods is not None:
            rule.methods = [m.upper() for m in rule.methods]
        return rule

    def matches(self, method: str, path: str) -> bool:
        if self.methods and method.upper() not in self.methods:
            return False
        if self.times is not None and self.hits >= self.times:
            return False
        return fnmatch.fnmatchcase(path, self.path)


class FaultPlan:
    """The current fault rules; :meth:`pick` decides which one, if any, hits a request."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seed = 0
        self.rules: list[FaultRule] = []
        self.rng = random.Random(0)
        #: Deferred effects not yet run (``late``, ``late_500``); :meth:`clear` cancels them.
        self.timers: list[threading.Timer] = []

    def replace(self, spec: dict[str, Any] | list | None) -> None:
        """Install ``{"seed": N, "rules": [...]}`` (a bare list of rules is accepted too)."""
        if spec is None:
            spec = {}
        if isinstance(spec, list):
            spec = {"rules": spec}
        if not isinstance(spec, dict):
            raise ValueError("faults must be an object with seed and rules")
        rules = [FaultRule.from_json(rule) for rule in spec.get("rules") or []]
        seed = int(spec.get("seed") or 0)
        with self.lock:
            self.seed, self.rules, self.rng = seed, rules, random.Random(seed)

    def clear(self) -> None:
        """No rules, and the deferred effects still waiting are cancelled (a reset)."""
        self.replace(None)
        with self.lock:
            timers, self.timers = self.timers, []
        for timer in timers:
            timer.cancel()

    def later(self, seconds: float, action: Callable[[], Any]) -> None:
        """Run ``action`` in ``seconds`` unless the plan is cleared first."""
        timer = threading.Timer(seconds, action)
        timer.daemon = True
        with self.lock:
            self.timers = [t for t in self.timers if t.is_alive()] + [timer]
        timer.start()

    def effects_waiting(self) -> int:
        """Deferred effects that have not run yet."""
        with self.lock:
            return sum(t.is_alive() for t in self.timers)

    def pick(self, method: str, path: str) -> FaultRule | None:
        with self.lock:
            for rule in self.rules:
                if rule.matches(method, path) and self.rng.random() < rule.rate:
                    rule.hits += 1
                    return rule
        return None

    def as_json(self) -> dict[str, Any]:
        with self.lock:
            return {"seed": self.seed, "rules": [asdict(rule) for rule in self.rules],
                    "effects_waiting": sum(t.is_alive() for t in self.timers)}  # fmt: skip


class RequestLog:
    """Every API request in arrival order."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: list[dict[str, Any]] = []

    def add(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.entries.append(entry)

    def clear(self) -> None:
        with self.lock:
            self.entries.clear()

    def as_list(self) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(entry) for entry in self.entries]


class _Effect:
    """One request run through the application with its answer thrown away."""

    def __init__(self, app, scope, body: bytes) -> None:
        self.app = app
        self.scope = scope
        self.body = body
        self.status: int | None = None

    async def run(self) -> None:
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": self.body, "more_body": False}

        async def discard(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.status = message["status"]

        await self.app(self.scope, receive, discard)
        log.info("%s %s took effect: %s", self.scope["method"], self.scope["path"], self.status)


class _BrokenBody(Exception):
    """Raised inside the wrapped ``send`` to stop the application mid-body."""


class FaultMiddleware:
    """Applies the fault plan to API requests and logs them; control paths pass untouched.

    :param app: the API application.
    :param plan: the fault rules.
    :param requests: the request log.
    :param control_prefix: the path prefix that is neither faulted nor logged.
    """

    def __init__(self, app, plan: FaultPlan, requests: RequestLog, control_prefix: str) -> None:
        self.app = app
        self.plan = plan
        self.requests = requests
        self.control_prefix = control_prefix

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.control_prefix):
            await self.app(scope, receive, send)
            return
        rule = self.plan.pick(scope["method"], scope["path"])
        entry: dict[str, Any] = {
            "method": scope["method"],
            "path": scope["path"],
            "query": scope.get("query_string", b"").decode("latin-1"),
            "status": None,
            "bytes": 0,
            "fault": rule.kind if rule else None,
        }
        self.requests.add(entry)

        async def counting_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                entry["status"] = message["status"]
            elif message["type"] == "http.response.body":
                entry["bytes"] += len(message.get("body", b""))
            await send(message)

        kind = rule.kind if rule else None
        if kind in APPLYING_KINDS:
            await self._apply_then_fail(rule, scope, receive, counting_send, entry)
        elif kind in _REASONS:
            await self._error(rule, counting_send)
        elif kind == "malformed":
            await self._answer(counting_send, 200, _MALFORMED_BODY, [])
        elif kind == "malformed_headers" and rule.form == "invalid_token":
            answer = invalid_token_answer(429, _REASONS["429"], rule.retry_after)
            if await write_raw_answer(send, receive, answer):
                entry["status"], entry["bytes"] = 429, len(answer.partition(b"\r\n\r\n")[2])
            else:  # a server that hides its connection: the other form at least
                await self._error(FaultRule(kind="429"), counting_send, [_UNPARSEABLE_HEADER])
        elif kind == "malformed_headers":
            # A rate-limit page whose headers no client can read (seen from the real service).
            await self._error(FaultRule(kind="429"), counting_send, [_UNPARSEABLE_HEADER])
        elif kind in ("drop", "truncate"):
            try:
                await self.app(scope, receive, self._breaking_send(kind, counting_send))
            except _BrokenBody:
                # Returning without completing the response makes the server close the
                # connection: the client sees fewer bytes than Content-Length promised.
                log.info("%s %s: %s fault, connection closed", scope["method"], scope["path"], kind)
        else:
            if kind == "slow":
                await asyncio.sleep(float(rule.delay))
            await self.app(scope, receive, counting_send)

    async def _apply_then_fail(self, rule: FaultRule, scope, receive, send, entry) -> None:
        """Let the request take effect (now or ``rule.delay`` s later), answer otherwise."""
        body = b""
        more = True
        while more:  # read the whole request now: a deferred effect replays it
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False) and message["type"] == "http.request"
        effect = _Effect(self.app, scope, body)
        if rule.kind in ("late", "late_500"):
            loop = asyncio.get_running_loop()
            self.plan.later(
                float(rule.delay),
                lambda: asyncio.run_coroutine_threadsafe(effect.run(), loop).result(30),
            )
        else:
            await effect.run()
            entry["applied_status"] = effect.status
        if rule.kind == "late":
            await self._answer(send, 202, b'{"message": "Accepted"}', [])
        elif rule.kind == "apply_drop":
            # Headers promise a body that never comes: the client sees the connection drop.
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", b"64")]})  # fmt: skip
            await send({"type": "http.response.body", "body": b"{", "more_body": True})
        else:
            await self._error(FaultRule(kind="500"), send)

    @staticmethod
    async def _answer(send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *headers,
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _error(self, rule: FaultRule, send, headers: list | None = None) -> None:
        message = _REASONS[rule.kind]
        body = json.dumps({"message": message, "errors": [{"message": message}]}).encode()
        headers = list(headers or [])
        if rule.kind == "429" and rule.retry_after is not None:
            retry_after = rule.retry_after
            value = str(int(retry_after)) if float(retry_after).is_integer() else str(retry_after)
            headers.append((b"retry-after", value.encode()))
        await self._answer(send, int(rule.kind), body, headers)

    @staticmethod
    def _breaking_send(kind: str, send):
        """A ``send`` that lets part of the body through, then breaks the response.

        ``drop`` lets the headers and half of the first body chunk through; ``truncate``
        lets everything through except the last tenth of the declared length.
        """
        state = {"declared": None, "sent": 0}

        async def breaking_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers") or [])
                declared = headers.get(b"content-length")
                state["declared"] = int(declared) if declared is not None else None
                await send(message)
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            body = message.get("body", b"")
            if kind == "drop":
                await send({"type": "http.response.body", "body": body[: len(body) // 2],
                            "more_body": True})  # fmt: skip
                raise _BrokenBody
            declared = state["declared"]
            keep_total = (
                declared - max(1, declared // 10) if declared else state["sent"] + len(body) // 2
            )
            room = keep_total - state["sent"]
            if len(body) < room and message.get("more_body"):
                state["sent"] += len(body)
                await send(message)
                return
            part = body[: max(0, room)]
            if part:
                await send({"type": "http.response.body", "body": part, "more_body": True})
            raise _BrokenBody

        return breaking_send
