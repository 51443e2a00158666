"""Binary bodies read back with independent parsers: mutagen for MP3, dpkt for PCAP."""

from __future__ import annotations

import csv
import io
import json

import dpkt
import mutagen.mp3
import pytest
from voipstudio_sandbox.generate import EXTRA_FIELDS, sip_call_id
from voipstudio_sandbox.store import table_fields

from tests.sandbox.sandbox_api import Api, records


def _mp3(api: Api, path: str) -> tuple[bytes, mutagen.mp3.MPEGInfo]:
    response = api.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/mpeg"
    assert int(response.headers["content-length"]) == len(response.content)
    return response.content, mutagen.mp3.MP3(io.BytesIO(response.content)).info


@pytest.mark.parametrize("position", [0, 1, -1])
def test_monitor_mp3_is_size_bytes_of_about_its_duration(sandbox, api: Api, position):
    monitor = records(sandbox, "monitors")[position]
    content, info = _mp3(api, f"/monitors/{monitor['id']}.mp3")
    assert len(content) == monitor["size"]
    assert info.length == pytest.approx(monitor["duration"], rel=0.1, abs=1.0)


def test_voicemessage_mp3_is_deterministic_audio(sandbox, api: Api):
    message = records(sandbox, "voicemessages")[3]
    first, info = _mp3(api, f"/voicemessages/{message['id']}.mp3")
    again, _ = _mp3(api, f"/voicemessages/{message['id']}.mp3")
    assert first == again
    assert info.length == pytest.approx(message["duration"], rel=0.1, abs=1.0)


def test_recordings_differ_from_one_another(sandbox, api: Api):
    ids = [m["id"] for m in records(sandbox, "monitors")[:2]]
    a, b = (api.get(f"/monitors/{i}.mp3").content for i in ids)
    assert a != b


def _sip_packets(content: bytes) -> list[tuple[dpkt.ip.IP, bytes]]:
    packets = []
    for _, frame in dpkt.pcap.Reader(io.BytesIO(content)):
        ip = dpkt.ethernet.Ethernet(frame).data
        assert isinstance(ip, dpkt.ip.IP) and isinstance(ip.data, dpkt.udp.UDP)
        packets.append((ip, bytes(ip.data.data)))
    return packets


@pytest.mark.parametrize("resource", ["cdrs", "msdrs"])
def test_pcap_is_the_calls_sip_dialogue(sandbox, api: Api, resource):
    record = [r for r in records(sandbox, resource) if r["src"] and r["dst"]][5]
    response = api.get(f"/{resource}/{record['id']}.pcap")
    assert response.headers["content-type"] == "application/vnd.tcpdump.pcap"
    packets = _sip_packets(response.content)
    first_lines = [payload.split(b"\r\n", 1)[0].decode() for _, payload in packets]
    assert [line.split()[0] for line in first_lines] == [
        "INVITE", "SIP/2.0", "SIP/2.0", "SIP/2.0", "ACK", "BYE", "SIP/2.0",
    ]  # fmt: skip
    assert [line.split()[1] for line in first_lines if line.startswith("SIP/2.0")] == [
        "100", "180", "200", "200",
    ]  # fmt: skip
    invite = dpkt.sip.Request(packets[0][1])
    assert record["src"] in invite.headers["from"]
    assert record["dst"] in invite.headers["to"]
    # A CDR's call_id is an integer; its SIP Call-ID is the string its MSDR carries.
    sip_id = record["call_id"] if resource == "msdrs" else sip_call_id(sandbox.seed, record["id"])
    assert isinstance(record["call_id"], int if resource == "cdrs" else str)
    assert invite.headers["call-id"] == sip_id
    assert all(dpkt.sip.Response(p).headers["call-id"] == sip_id
               for _, p in packets if p.startswith(b"SIP/2.0"))  # fmt: skip


def test_trace_is_the_same_messages_as_text(sandbox, api: Api):
    cdr = records(sandbox, "cdrs")[7]
    response = api.get(f"/cdrs/{cdr['id']}.trace")
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert text.count("Call-ID: " + sip_call_id(sandbox.seed, cdr["id"])) == 7
    assert "INVITE sip:" + cdr["dst"] in text and "BYE sip:" in text


def test_user_cdrs_csv_is_an_export_job_by_default(sandbox, api: Api):
    first = api.get("/users/1004/cdrs.csv")
    second = api.get("/users/1004/cdrs.csv")
    assert first.status_code == second.status_code == 202
    assert first.headers["content-type"] == "application/json"
    job = first.json()["data"]
    assert job["status"] == "queued" and job["user_id"] == 1004
    assert second.json()["data"]["id"] == job["id"] + 1
    assert api.get("/users/99999/cdrs.csv").status_code == 404


def _stream_csv(sandbox) -> None:
    sandbox.control("PUT", "settings", {"csv_export": "stream"})


def test_user_cdrs_csv_streams_a_header_and_the_users_rows_when_told_to(sandbox, api: Api):
    _stream_csv(sandbox)
    response = api.get("/users/1004/cdrs.csv")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    expected = [c for c in records(sandbox, "cdrs") if c["user_id"] == 1004]
    assert [int(r["id"]) for r in rows] == [c["id"] for c in expected]
    assert list(rows[0]) == list(expected[0]) == list(table_fields("cdrs"))
    assert rows[0]["src"] == expected[0]["src"]
    labelled = next(c for c in expected if c["labels"])
    row = next(r for r in rows if int(r["id"]) == labelled["id"])
    assert json.loads(row["labels"]) == labelled["labels"]


def test_a_reset_puts_the_csv_endpoint_back_to_export_jobs(sandbox, api: Api):
    started_with = sandbox.control("GET", "settings")
    assert started_with["csv_export"] == "job"
    _stream_csv(sandbox)
    assert sandbox.control("GET", "settings")["csv_export"] == "stream"
    sandbox.control("POST", "reset")
    assert sandbox.control("GET", "settings") == started_with
    assert api.get("/users/1004/cdrs.csv").status_code == 202


def test_records_carry_the_fields_the_real_service_sends(sandbox, api: Api):
    cdr = api.get("/cdrs", params={"limit": 1}).json()["data"][0]
    monitor = api.get("/monitors", params={"limit": 1}).json()["data"][0]
    me = api.get("/me").json()["data"]
    assert set(EXTRA_FIELDS["cdrs"]) <= set(cdr) and isinstance(cdr["labels"], list)
    assert isinstance(cdr["nb_notes"], int) and isinstance(cdr["metadata"], str)
    assert isinstance(cdr["call_id"], int)
    assert len(monitor) == 24 and monitor["cdr_id"] >= 1
    assert me["customer_id"] == me["customer"]
    noted = {n["cdr_id"] for n in records(sandbox, "notes")}
    assert all((c["nb_notes"] > 0) == (c["id"] in noted) for c in records(sandbox, "cdrs"))


def test_user_cdrs_csv_honours_the_filter(sandbox, api: Api):
    _stream_csv(sandbox)
    expected = [c for c in records(sandbox, "cdrs") if c["user_id"] == 1004 and c["type"] == "M"]
    response = api.get(
        "/users/1004/cdrs.csv",
        params={"filter": json.dumps([{"property": "type", "operator": "eq", "value": "M"}])},
    )
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [int(r["id"]) for r in rows] == [c["id"] for c in expected] and expected
    bad = api.get("/users/1004/cdrs.csv", params={"filter": '[{"property": "x"}]'})
    assert bad.status_code == 400
    assert api.get("/users/99999/cdrs.csv").status_code == 404
