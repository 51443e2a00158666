"""Hooks on the sandbox through ``AIRFLOW_CONN_*`` connections (no Airflow database)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from voipstudio_provider.hooks.voipstudio import VoIPstudioHook

#: Retries in tests wait milliseconds, never the production seconds.
QUICK_RETRIES = {"backoff_base": 0.01, "backoff_cap": 0.05, "retry_after_cap": 0.05}


@pytest.fixture
def make_hook(sandbox, monkeypatch) -> Callable[..., VoIPstudioHook]:
    """Build a hook on a fresh connection to the sandbox; every hook is closed afterwards.

    ``make_hook(token=..., login=..., host=..., extra={...}, conn_id=..., **hook_kwargs)``
    """
    hooks: list[VoIPstudioHook] = []

    def make(
        *,
        token: str | None = None,
        login: int | str | None = None,
        host: str | None = None,
        extra: dict[str, Any] | None = None,
        conn_id: str = "voipstudio_default",
        **hook_kwargs: Any,
    ) -> VoIPstudioHook:
        conn: dict[str, Any] = {
            "conn_type": "voipstudio",
            "host": host or sandbox.base_url,
            "password": token or sandbox.token,
        }
        if login is not None:
            conn["login"] = str(login)
        if extra:
            conn["extra"] = extra
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
        hook = VoIPstudioHook(conn_id, **{**QUICK_RETRIES, **hook_kwargs})
        hooks.append(hook)
        return hook

    yield make
    for hook in hooks:
        hook.close()


@pytest.fixture
def hook(make_hook) -> VoIPstudioHook:
    """A root-token hook on the sandbox with quick retries."""
    return make_hook()


@pytest.fixture
def s3(seaweed):
    """A boto3 client of the session's SeaweedFS."""
    return seaweed.client()


@pytest.fixture(scope="module")
def bucket(seaweed) -> str:
    """One bucket per test module (SeaweedFS gives every bucket volumes of its own)."""
    name = f"provider-{uuid.uuid4().hex[:12]}"
    seaweed.client().create_bucket(Bucket=name)
    return name


@pytest.fixture
def set_faults(sandbox) -> Callable[..., None]:
    """Replace the sandbox's fault rules: ``set_faults({"path": ..., "kind": "500"}, ...)``."""

    def put(*rules: dict[str, Any], seed: int = 7) -> None:
        sandbox.control("PUT", "faults", {"seed": seed, "rules": list(rules)})

    return put


@pytest.fixture
def api_requests(sandbox) -> Callable[..., list[dict[str, Any]]]:
    """The sandbox's request log, optionally only requests whose path ends with a suffix."""

    def log(path_suffix: str | None = None, method: str | None = None) -> list[dict[str, Any]]:
        entries = sandbox.control("GET", "requests")["data"]
        return [
            e
            for e in entries
            if (path_suffix is None or e["path"].endswith(path_suffix))
            and (method is None or e["method"] == method)
        ]

    return log


@pytest.fixture
def truth(sandbox) -> Callable[[str], list[dict[str, Any]]]:
    """Every row of a resource as the sandbox holds it, ids ascending."""

    def rows(resource: str) -> list[dict[str, Any]]:
        return sandbox.control("GET", f"records/{resource}")["data"]

    return rows


@pytest.fixture
def users(truth) -> tuple[dict[str, Any], dict[str, Any]]:
    """The account's root user and one non-root user who owns records."""
    everyone = truth("users")
    root = next(u for u in everyone if u["is_root"])
    owners = {m["user_id"] for m in truth("monitors")}
    other = next(u for u in everyone if not u["is_root"] and u["id"] in owners)
    return root, other


@pytest.fixture
def add_monitor(sandbox) -> Callable[[int], dict]:
    """Add one recording of ``size`` bytes to the sandbox; return its API record."""

    def add(size: int) -> dict:
        (new_id,) = sandbox.control(
            "POST", "records/monitors", {"count": 1, "fields": {"size": size}}
        )["ids"]
        records = sandbox.control("GET", "records/monitors")["data"]
        return next(m for m in records if m["id"] == new_id)

    return add
