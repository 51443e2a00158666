"""Faults that act first and fail after: a delete the service performs but whose answer is
lost, and a delete the service queues and performs later."""

from __future__ import annotations

import time

import pytest
import requests

from tests.sandbox.sandbox_api import Api, records

MONITORS = "/v1.1/voipstudio/monitors/*"


def _faults(sandbox, *rules: dict) -> None:
    sandbox.control("PUT", "faults", {"seed": 7, "rules": list(rules)})


def _monitor_ids(sandbox) -> set[int]:
    return {m["id"] for m in records(sandbox, "monitors")}


def test_apply_500_deletes_then_answers_500(sandbox, api: Api):
    victim = min(_monitor_ids(sandbox))
    _faults(sandbox, {"path": MONITORS, "methods": ["DELETE"], "kind": "apply_500"})
    answer = api.request("DELETE", f"/monitors/{victim}")
    assert answer.status_code == 500
    assert victim not in _monitor_ids(sandbox)
    (entry,) = [e for e in sandbox.control("GET", "requests")["data"] if e["method"] == "DELETE"]
    assert (entry["fault"], entry["status"], entry["applied_status"]) == ("apply_500", 500, 204)


def test_apply_drop_deletes_then_drops_the_connection(sandbox, api: Api):
    victim = min(_monitor_ids(sandbox))
    _faults(sandbox, {"path": MONITORS, "methods": ["DELETE"], "kind": "apply_drop"})
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        api.request("DELETE", f"/monitors/{victim}")
    assert victim not in _monitor_ids(sandbox)


@pytest.mark.parametrize(("kind", "status"), [("late", 202), ("late_500", 500)])
def test_late_effects_land_after_the_answer(sandbox, api: Api, kind, status):
    victim = min(_monitor_ids(sandbox))
    _faults(sandbox, {"path": MONITORS, "methods": ["DELETE"], "kind": kind, "delay": 0.4})
    assert api.request("DELETE", f"/monitors/{victim}").status_code == status
    assert victim in _monitor_ids(sandbox)  # not yet
    assert sandbox.control("GET", "effects") == {"waiting": 1}
    deadline = time.monotonic() + 10
    while sandbox.control("GET", "effects")["waiting"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert victim not in _monitor_ids(sandbox)


def test_a_reset_cancels_a_late_effect(sandbox, api: Api):
    victim = min(_monitor_ids(sandbox))
    _faults(sandbox, {"path": MONITORS, "methods": ["DELETE"], "kind": "late", "delay": 0.5})
    assert api.request("DELETE", f"/monitors/{victim}").status_code == 202
    sandbox.control("POST", "reset")
    time.sleep(0.8)
    assert victim in _monitor_ids(sandbox)
    assert sandbox.control("GET", "effects") == {"waiting": 0}
