"""The store without HTTP, determinism of the data and bodies, restarts and scale."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from voipstudio_devstack import SandboxServer
from voipstudio_provider.endpoints import RESOURCES
from voipstudio_sandbox import media
from voipstudio_sandbox.generate import DICTIONARIES, EXTRA_FIELDS
from voipstudio_sandbox.store import NotFoundError, Store, ValidationError, table_fields

from tests.sandbox.sandbox_api import Api

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
INCLUDE = Path(__file__).resolve().parents[2] / "include"


@pytest.fixture
def store():
    store = Store(None, seed=3, now=NOW)
    yield store
    store.close()


def test_store_relations(store: Store):
    cdrs = {c["live_id"]: c for c in store.all("cdrs")}
    monitors = store.all("monitors")
    assert len(cdrs) > len(monitors) > 0
    for monitor in monitors:
        cdr = cdrs[monitor["live_id"]]
        assert (monitor["caller"], monitor["called"]) == (cdr["src"], cdr["dst"])
        assert monitor["timestamp"] == cdr["calldate"] and monitor["user_id"] == cdr["user_id"]
    missed = ("M", list(DICTIONARIES["cdrs"]["type"]).index("M"))  # as a string or a code
    for message in store.all("voicemessages"):
        assert cdrs[message["live_id"]]["type"] in missed
    chat_ids = {c["id"] for c in store.all("chats")}
    assert {m["chat_id"] for m in store.all("chatmsgs")} <= chat_ids
    oldest = min(c["calldate"] for c in cdrs.values())
    assert oldest >= (NOW - dt.timedelta(days=181)).strftime("%Y-%m-%d")
    assert max(c["calldate"] for c in cdrs.values()) <= NOW.strftime("%Y-%m-%d %H:%M:%S")


def test_store_every_resource_has_its_fields(store: Store):
    for name, resource in RESOURCES.items():
        rows = store.all(name)
        assert rows, name
        assert tuple(rows[0]) == resource.fields + EXTRA_FIELDS.get(name, ()) == table_fields(name)


def test_an_account_sends_one_encoding_of_enumerations(store: Store):
    assert store.enums == "strings"
    strings = store.all("cdrs")
    assert all(isinstance(c[f], str) for c in strings for f in ("type", "disposition"))
    store.enums = "integers"
    codes = DICTIONARIES["cdrs"]
    for cdr, as_text in zip(store.all("cdrs"), strings, strict=True):
        for field in ("type", "disposition", "destination"):
            assert cdr[field] == list(codes[field]).index(as_text[field])
        assert cdr["context"] == as_text["context"]  # not an integer in any encoding


def test_a_mixed_account_sends_a_seeded_share_of_enumerations_as_integers(store: Store):
    store.enums = "mixed"
    cdrs = store.all("cdrs")
    coded = [c for c in cdrs if isinstance(c["type"], int)]
    assert 0 < len(coded) < len(cdrs) / 4
    codes = DICTIONARIES["cdrs"]
    for cdr in coded:
        for field in ("type", "disposition", "destination"):
            assert isinstance(cdr[field], int) and 0 <= cdr[field] < len(codes[field])
        assert isinstance(cdr["context"], str)
    assert all(isinstance(c["type"], str) for c in cdrs if c not in coded)
    again = Store(None, seed=3, now=NOW, enums="mixed")
    try:
        assert [c["id"] for c in again.all("cdrs") if isinstance(c["type"], int)] == [
            c["id"] for c in coded
        ]
    finally:
        again.close()


def test_store_list_filters_and_owner(store: Store):
    filters = store.parse_filters("cdrs", '[{"property": "type", "operator": "eq", "value": "O"}]')
    rows, total = store.list("cdrs", filters=filters, owner=1002, limit=5000)
    assert total == len(rows) > 0
    assert all(r["type"] == "O" and r["user_id"] == 1002 for r in rows)
    with pytest.raises(ValidationError):
        store.parse_filters("cdrs", '[{"property": "id", "operator": "between", "value": 1}]')


def test_store_delete_is_all_or_nothing_and_reset_restores(store: Store):
    before = store.counts()
    with pytest.raises(NotFoundError) as error:
        store.delete("monitors", [1, 2, 10**9])
    assert error.value.ids == [10**9]
    assert store.counts() == before
    store.delete("monitors", [1, 2])
    assert store.counts()["monitors"] == before["monitors"] - 2
    store.reset()
    assert store.counts() == before


def test_same_seed_same_rows_and_bytes():
    first, second = Store(None, seed=5, now=NOW), Store(None, seed=5, now=NOW)
    other = Store(None, seed=6, now=NOW)
    try:
        for table in (*RESOURCES, "notes"):
            assert first.all(table) == second.all(table), table
        assert first.all("cdrs") != other.all("cdrs")
        monitor = first.all("monitors")[0]
        bodies = [
            b"".join(media.mp3_body(monitor["size"], monitor["duration"], f"5:monitors:{i}").chunks)
            for i in (monitor["id"], monitor["id"], monitor["id"] + 1)
        ]
        assert bodies[0] == bodies[1] != bodies[2]
    finally:
        for store in (first, second, other):
            store.close()


def test_state_survives_a_restart(tmp_path: Path):
    with SandboxServer(tmp_path, seed=2) as server:
        api = Api(server, server.token)
        doomed = api.page("/monitors", limit=1)["data"][0]["id"]
        assert api.request("DELETE", f"/monitors/{doomed}").status_code == 204
        total = api.page("/monitors")["total"]
    with SandboxServer(tmp_path, seed=2) as server:
        api = Api(server, server.token)
        assert api.page("/monitors")["total"] == total
        assert api.get(f"/monitors/{doomed}").status_code == 404
        server.control("POST", "reset")
        assert api.get(f"/monitors/{doomed}").status_code == 200


def test_faults_flag_switches_faults_on_at_start(tmp_path: Path):
    rules = '{"seed": 1, "rules": [{"path": "/v1.1/voipstudio/ping", "kind": "503"}]}'
    with SandboxServer(tmp_path, seed=1, extra_args=["--faults", rules]) as server:
        assert Api(server, server.token).get("/ping").status_code == 503
        assert server.control("GET", "faults")["rules"][0]["hits"] == 1


@pytest.mark.slow
def test_scale_250_generates_a_large_account(tmp_path: Path):
    script = (
        "import json; from voipstudio_sandbox.store import Store; "
        f"print(json.dumps(Store({str(tmp_path / 'big.sqlite')!r}, seed=1, scale=250).counts()))"
    )
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(INCLUDE), str(INCLUDE.parent / "plugins")])
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    counts = json.loads(done.stdout)
    assert counts["cdrs"] == 100_000
    assert counts["monitors"] >= 20_000
    assert counts["voicemessages"] >= 10_000


@pytest.mark.slow
def test_a_gigabyte_recording_streams_with_bounded_memory(sandbox):
    size = 1024**3 + 7
    (monitor_id,) = sandbox.control("POST", "records/monitors", {"fields": {"size": size}})["ids"]
    process = psutil.Process(sandbox.process.proc.pid)
    before = process.memory_info().rss
    received, peak = 0, before
    with Api(sandbox, sandbox.token).get(f"/monitors/{monitor_id}.mp3", stream=True) as response:
        assert int(response.headers["content-length"]) == size
        for chunk in response.iter_content(chunk_size=1024 * 1024):
            received += len(chunk)
            if received % (64 * 1024 * 1024) < len(chunk):
                peak = max(peak, process.memory_info().rss)
    peak = max(peak, process.memory_info().rss)
    assert received == size
    assert peak - before < 100 * 1024 * 1024
