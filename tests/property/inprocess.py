"""The sandbox served from this process, and the faults a deleting process can meet.

The deleter talks HTTP to the sandbox (the faults live in its HTTP layer); the scenario
arranges and reads the sandbox's store directly, where HTTP would add only time.
:class:`Steps` counts every call the deleter makes to the API and to S3: at a generated
step an S3 call fails (before or after it took effect) or the process "dies": a
:class:`Killed` that nothing catches is raised, and every later call of that process raises
it too, so no ``finally`` of the dead process reaches the API or the bucket.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn
from botocore.exceptions import ClientError
from voipstudio_devstack import free_port
from voipstudio_sandbox.accounts import Sandbox
from voipstudio_sandbox.app import DEFAULT_TOKEN, create_app
from voipstudio_sandbox.store import Store


class InProcessSandbox:
    """The sandbox app on a loopback port, served by a thread of this process."""

    def __init__(self, workdir: Path, seed: int = 1) -> None:
        self.sandbox = Sandbox(Store(workdir / "sandbox.sqlite", seed=seed), token=DEFAULT_TOKEN)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1.1/voipstudio"
        config = uvicorn.Config(
            create_app(self.sandbox), host="127.0.0.1", port=self.port,
            log_level="warning", access_log=False,
        )  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> InProcessSandbox:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the in-process sandbox did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    @property
    def store(self) -> Store:
        return self.sandbox.store

    def ids(self, resource: str) -> set[int]:
        return {row["id"] for row in self.store.all(resource)}

    def wait_for_late_effects(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.sandbox.faults.effects_waiting() and time.monotonic() < deadline:
            time.sleep(0.02)


class Killed(BaseException):
    """The deleting process died here (nothing in the provider catches a BaseException)."""


class Steps:
    """The calls of one deleting process, numbered; what happens at which step.

    :param kill_at: the step at which the process dies (``None``: it lives).
    :param kill_after_effect: die after that step's call took effect, not before it.
    :param s3_failures: S3 steps that fail; ``s3_fail_after_effect``: after taking effect.
    :param interlude: step -> an action run there (another run, a record added ...).
    """

    def __init__(
        self,
        kill_at: int | None = None,
        kill_after_effect: bool = False,
        s3_failures: frozenset[int] = frozenset(),
        s3_fail_after_effect: bool = False,
        interlude: dict[int, Callable[[], None]] | None = None,
    ) -> None:
        self.n = 0
        self.dead = False
        self.kill_at = kill_at
        self.kill_after_effect = kill_after_effect
        self.s3_failures = s3_failures
        self.s3_fail_after_effect = s3_fail_after_effect
        self.interlude = dict(interlude or {})
        self.s3_keys_written: list[tuple[str, str]] = []

    def call(self, fn: Callable[..., Any], *args: Any, s3: bool = False, **kwargs: Any) -> Any:
        if self.dead:
            raise Killed
        self.n += 1
        step = self.n
        if step in self.interlude:
            self.interlude.pop(step)()
        if step == self.kill_at and not self.kill_after_effect:
            self.dead = True
            raise Killed
        failing = s3 and step in self.s3_failures
        if failing and not self.s3_fail_after_effect:
            raise _s3_error(fn)
        result = fn(*args, **kwargs)
        if step == self.kill_at:
            self.dead = True
            raise Killed
        if failing:
            raise _s3_error(fn)
        return result


def _s3_error(fn) -> ClientError:
    name = getattr(fn, "__name__", "call")
    return ClientError({"Error": {"Code": "InternalError", "Message": "injected"}}, name)


class StepHook:
    """The real hook; every call (and every record a listing yields) is a step."""

    def __init__(self, hook, steps: Steps) -> None:
        self._hook = hook
        self._steps = steps

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._hook, name)
        if not callable(attr):
            return attr
        steps = self._steps

        def call(*args: Any, **kwargs: Any) -> Any:
            if name == "iter_records":
                return self._walk(attr, *args, **kwargs)
            return steps.call(attr, *args, **kwargs)

        return call

    def _walk(self, iter_records, *args: Any, **kwargs: Any):
        records = self._steps.call(iter_records, *args, **kwargs)
        while True:
            try:
                record = self._steps.call(next, records)
            except StopIteration:
                return
            yield record


class StepS3:
    """The boto3 client of SeaweedFS; its calls are steps that may fail or die.

    A fault, not a mock: every call that is not failed goes to SeaweedFS as it is.
    """

    _PAGED = ("list_objects_v2",)

    def __init__(self, client, steps: Steps) -> None:
        self._client = client
        self._steps = steps

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name.startswith("_") or not callable(attr) or name in ("get_paginator", "meta"):
            if name == "get_paginator":
                return self._paginator
            return attr
        steps = self._steps

        def call(*args: Any, **kwargs: Any) -> Any:
            if name in ("put_object", "delete_object", "copy_object"):
                steps.s3_keys_written.append((name, kwargs.get("Key", "")))
            return steps.call(attr, *args, s3=True, **kwargs)

        call.__name__ = name
        return call

    def _paginator(self, operation: str):
        paginator = self._client.get_paginator(operation)
        steps = self._steps

        class Paginator:
            def paginate(self, **kwargs: Any):
                pages = steps.call(paginator.paginate, s3=True, **kwargs)
                yield from steps.call(list, pages)

        return Paginator()
