"""Retention policy and legal hold parsing, number matching, cutoffs: no servers needed."""

from __future__ import annotations

import datetime as dt

import pendulum
import pytest
from voipstudio_provider.engine.deletion.purge import parse_purge_request
from voipstudio_provider.engine.deletion.retention import (
    DEFAULT_RETENTION_DAYS,
    parse_retention_policy,
    retention_cutoff,
)
from voipstudio_provider.engine.subjects.legal_hold import parse_legal_hold
from voipstudio_provider.engine.subjects.phone_numbers import record_numbers


@pytest.mark.parametrize("unset", [None, "", "  "])
def test_unset_policy_gives_the_defaults(unset):
    assert parse_retention_policy(unset) == {"monitors": 365, "voicemessages": 90, "chatmsgs": 365}
    assert parse_retention_policy(unset) == DEFAULT_RETENTION_DAYS


def test_policy_overrides_resource_by_resource_and_null_keeps_forever():
    policy = parse_retention_policy('{"voicemessages": 30, "chatmsgs": null}')
    assert policy == {"monitors": 365, "voicemessages": 30, "chatmsgs": None}


@pytest.mark.parametrize(
    "text",
    [
        '{"cdrs": 30}',  # not deletable by retention
        '{"monitors": 0}',  # would delete everything up to the run's end
        '{"monitors": -5}',
        '{"monitors": "30"}',
        '{"monitors": true}',
        '{"monitors": 1.5}',
        "[1, 2]",
        "{not json",
    ],
)
def test_bad_policies_are_refused(text):
    with pytest.raises(ValueError):
        parse_retention_policy(text)


def test_cutoff_counts_from_the_reference_not_the_clock():
    end = pendulum.datetime(2026, 11, 20, 4, tz="UTC")  # Airflow's context gives pendulum
    cutoff = retention_cutoff(90, end)
    assert cutoff == dt.datetime(2026, 8, 22, 4, tzinfo=dt.UTC)
    assert cutoff.tzinfo is not None
    assert retention_cutoff(90, end) == cutoff  # the same run, the same cutoff
    with pytest.raises(ValueError):
        retention_cutoff(90, dt.datetime(2026, 11, 20))


def test_record_numbers_read_the_resource_number_fields():
    monitor = {"id": 1, "caller": "442079460000", "called": "101", "summary": "+1 212 555 0100"}
    assert [n.e164 for n in record_numbers("monitors", monitor)] == ["+442079460000"]
    cdr = {"id": 2, "src": "101", "dst": "anonymous", "clid": '"Ann" <+44 20 7946 0000>'}
    assert [n.e164 for n in record_numbers("cdrs", cdr)] == ["+442079460000"]
    chat = {"id": 3, "visitor_name": "Bob 020 7946 0123", "visitor_ip": "203.0.113.45"}
    assert record_numbers("chats", chat) == []  # a national form needs a region
    assert [n.e164 for n in record_numbers("chats", chat, ("GB",))] == ["+442079460123"]


def test_legal_hold_by_id_number_and_chat():
    hold = parse_legal_hold(
        {
            "ids": {"monitors": [7, "8"], "chats": [3]},
            "numbers": ["+44 20 7946 0123"],
        },
        region="GB",
    )
    assert hold.numbers == {"+442079460123"} and hold.region == "GB"
    assert hold.reason("monitors", {"id": 7, "caller": "1", "called": "2"}) == "legal_hold_id"
    assert hold.reason("monitors", {"id": 8, "caller": "1", "called": "2"}) == "legal_hold_id"
    by_number = {"id": 9, "caller": "020 7946 0123", "called": "101"}
    assert hold.reason("monitors", by_number) == "legal_hold_number"
    assert hold.reason("monitors", {"id": 10, "caller": "442079460124", "called": "1"}) is None
    assert hold.chat_reason(3, None, []) == "legal_hold_id"
    message = {"id": 1, "chat_id": 4, "message": "ring 0044 20 7946 0123 please"}
    assert hold.chat_reason(4, {"id": 4}, [message]) == "legal_hold_number"
    assert hold.chat_reason(5, {"id": 5, "visitor_name": "Eve"}, [{"message": "hi"}]) is None
    assert hold.describe() == {"ids": {"monitors": 2, "chats": 1}, "numbers": 1}


@pytest.mark.parametrize(
    "text",
    [
        '{"ids": {"cdrs": [1]}}',
        '{"ids": {"monitors": [1.5]}}',
        '{"ids": {"monitors": [true]}}',
        '{"ids": {"monitors": 1}}',
        '{"numbers": "+44"}',
        '{"numbers": ["no digits"]}',
        '{"number": []}',
        "[]",
    ],
)
def test_malformed_legal_hold_is_refused(text):
    with pytest.raises(ValueError):
        parse_legal_hold(text)


def test_unset_legal_hold_holds_nothing():
    hold = parse_legal_hold(None)
    assert hold.reason("monitors", {"id": 1, "caller": "447700900123", "called": "1"}) is None


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, r"set older_than \(a date\), phone_number, or both"),
        ({"older_than": "2026-13-01"}, "older_than must be a date"),
        ({"phone_number": "call me"}, "phone_number: 'call me' is not a valid phone number"),
        ({"phone_number": "7946 0000"}, "not in international form"),
        ({"phone_number": "+44 20 7946 000"}, "is not a valid phone number"),
        ({"older_than": "2026-01-01", "resources": ["cdrs"]}, "resources must be among"),
        ({"older_than": "2026-01-01", "mask_cdrs": True}, "mask_cdrs needs a phone_number"),
    ],
)
def test_purge_form_is_checked(params, message):
    with pytest.raises(ValueError, match=message):
        parse_purge_request(params)


@pytest.mark.parametrize("hours", [0, -1, "72", True, None])
def test_approval_hours_must_be_a_number_above_zero(hours):
    with pytest.raises(ValueError, match="approval_hours must be a number of hours above 0"):
        parse_purge_request({"older_than": "2026-01-01", "approval_hours": hours})


def test_purge_defaults_are_safe():
    request = parse_purge_request({"phone_number": "+44 20 7946 0000"})
    assert request.dry_run is True and request.require_archive is True
    assert request.mask_cdrs is False and request.phone_number == "+442079460000"


def test_purge_number_is_one_e164_number_and_matches_it_exactly():
    request = parse_purge_request({"phone_number": "020 7946 0000"}, region="GB")
    assert request.phone_number == "+442079460000" and request.criteria()["region"] == "GB"
    same = ("442079460000", "+44 (0)20 7946 0000", "sip:442079460000@h", "020 7946 0000")
    for value in same:
        assert request.match("monitors", {"id": 1, "caller": value, "called": "101"}) == value
    # The old rule matched all of these on their last 8 digits: one request, one person.
    for value in ("+1 207 946 0000", "+44 161 7946 0000", "+33 1 79 46 00 00", "79460000"):
        assert not request.matches("monitors", {"id": 1, "caller": value, "called": "101"})
    without_region = parse_purge_request({"phone_number": "+44 20 7946 0000"}, region=None)
    assert without_region.region is None and without_region.regions == ("GB",)
    # A national form is read in the purged number's own country, where it is no other.
    assert without_region.matches("monitors", {"id": 1, "caller": "020 7946 0000"})
    assert not without_region.matches("monitors", {"id": 1, "caller": "020 7946 0001"})
