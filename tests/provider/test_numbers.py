"""Phone numbers read, found and compared as E.164 with libphonenumber: no servers needed."""

from __future__ import annotations

import pytest
from voipstudio_provider.engine.subjects.legal_hold import parse_legal_hold
from voipstudio_provider.engine.subjects.phone_numbers import (
    find_match,
    normalize_number,
    numbers_in_text,
    numbers_in_value,
    parse_number,
    parse_region,
    record_numbers,
    uri_user_part,
)

HELD = "+44 20 7946 0321"
#: The same London number as people, the API, SIP and tel URIs write it.
SAME_LONDON = (
    "+44 (0)20 7946 0321",
    "0044 20 7946 0321",
    "020 7946 0321",
    "+44-20-7946-0321",
    "(020) 7946 0321",
    "tel:+442079460321",
    "sip:442079460321@host",
    "sip:+442079460321@sip.example.com;user=phone",
    "442079460321",
    "+442079460321",
    '"Ann Smith" <+44 20 7946 0321>',
)
#: Other numbers: sharing its last 8, 9 or all 10 national digits, a neighbour, an
#: extension, and values that are no number at all.
OTHERS = (
    "+1 207 946 0321",  # the same ten digits in the US
    "+44 30 7946 0321",  # the last 9 digits
    "+44 28 7946 0321",  # the last 8 digits
    "+33 1 79 46 03 21",
    "+49 30 79460321",
    "+44 20 7946 0322",
    "0321",
    "101",
    "sip:101@pbx.example.com",
    "anonymous",
    "",
)
#: Each number of another country, in forms of its own; the region reads national ones.
ABROAD = {
    "+1 212 555 0100": ("US", ("(212) 555-0100", "tel:+1-212-555-0100", "12125550100")),
    "+33 1 42 68 53 00": ("FR", ("01 42 68 53 00", "0033 1 42 68 53 00", "sip:33142685300@h")),
    "+49 30 12345678": ("DE", ("030 12345678", "0049 30 12345678", "+49 (0)30 12345678")),
}


def monitor(caller: str) -> dict:
    return {"id": 1, "caller": caller, "called": "101"}


@pytest.mark.parametrize("entry", [e for e in SAME_LONDON if "Ann" not in e])
def test_a_hold_entry_in_any_form_holds_every_form_and_nothing_else(entry):
    hold = parse_legal_hold({"numbers": [entry]}, region="GB")
    assert hold.numbers == {"+442079460321"}
    for value in SAME_LONDON:
        assert hold.reason("monitors", monitor(value)) == "legal_hold_number", value
        message = {"id": 2, "chat_id": 3, "message": f"please call me on {value} tomorrow"}
        assert hold.reason("chatmsgs", message) == "legal_hold_number", value
    for value in OTHERS:
        assert hold.reason("monitors", monitor(value)) is None, value
        assert hold.reason("chatmsgs", {"id": 2, "chat_id": 3, "message": value}) is None


@pytest.mark.parametrize("number", list(ABROAD))
def test_numbers_abroad_match_their_own_forms_only(number):
    region, forms = ABROAD[number]
    hold = parse_legal_hold({"numbers": [number]}, region=region)
    for value in forms:
        assert hold.reason("monitors", monitor(value)) == "legal_hold_number", value
    others = [n for n in ABROAD if n != number] + list(SAME_LONDON)
    for value in others:
        assert hold.reason("monitors", monitor(value)) is None, value


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("Order 123 020 7946 0000", ["020 7946 0000"]),
        ("call +44 20 7946 0000 2 times", ["+44 20 7946 0000"]),
        ("call me on +44 (0)20 7946 0321", ["+44 (0)20 7946 0321"]),
        ("ref 4471 then 020 7946 0321 or +1 212 555 0100.", ["020 7946 0321", "+1 212 555 0100"]),
        ("my sip is sip:442079460321@example.com ok", ["sip:442079460321"]),
        ("Meet at 10:30 on 2026-11-20, room 101", []),
        ("Thanks!", []),
        (None, []),
    ],
)
def test_numbers_next_to_other_digits_are_found_alone(text, found):
    assert sorted(f.text for f in numbers_in_text(text, ("GB",))) == sorted(found)


def test_digits_next_to_a_held_number_do_not_hide_it():
    hold = parse_legal_hold({"numbers": ["+44 20 7946 0000"]}, region="GB")
    for text in ("Order 123 020 7946 0000", "call +44 20 7946 0000 2 times"):
        assert hold.reason("chatmsgs", {"id": 1, "chat_id": 2, "message": text})
    other = {"id": 1, "chat_id": 2, "message": "Order 123 020 7946 0001"}
    assert not hold.reason("chatmsgs", other)


def test_without_a_region_a_hold_reads_national_forms_in_the_held_numbers_country():
    # Not knowing the region must never release a record that may name a held number.
    hold = parse_legal_hold({"numbers": ["+44 20 7946 0321", "+33 1 42 68 53 00"]})
    assert hold.regions == ("FR", "GB")
    assert hold.reason("monitors", monitor("020 7946 0321")) == "legal_hold_number"
    assert hold.reason("monitors", monitor("01 42 68 53 00")) == "legal_hold_number"
    text = {"id": 1, "chat_id": 2, "message": "Order 123 020 7946 0321"}
    assert hold.reason("chatmsgs", text) == "legal_hold_number"
    assert hold.reason("monitors", monitor("020 7946 0322")) is None


@pytest.mark.parametrize(
    ("entry", "region", "message"),
    [
        ("020 7946 0321", None, r"numbers\[1\]: '020 7946 0321' is not in international form"),
        ("anonymous", "GB", r"numbers\[1\]: 'anonymous' is not a valid phone number"),
        ("101", "GB", r"numbers\[1\]: '101' is not a valid"),
        ("+44 20 7946 032", "GB", "is not a valid phone number"),  # a digit short
        ("+44 7946 0000", None, "is not a valid phone number"),
        ("", "GB", "is not a valid phone number"),
        (True, "GB", "is not a phone number"),
        (None, "GB", "is not a phone number"),
    ],
)
def test_a_hold_fails_closed_naming_the_entry(entry, region, message):
    with pytest.raises(ValueError, match=message):
        parse_legal_hold({"numbers": ["+44 20 7946 0000", entry]}, region=region)


def test_digits_with_two_readings_are_refused_kept_and_never_purged():
    # 2039542691 is Egyptian as E.164 digits (the API's notation) and, in GB, a London
    # number written without its trunk 0.
    with pytest.raises(ValueError, match=r"reads as \+2039542691, \+442039542691"):
        parse_number("2039542691", "GB", source="phone_number")
    assert normalize_number("2039542691", "GB") == ""
    found = numbers_in_value("2039542691", ("GB",))
    assert {f.e164 for f in found} == {"+2039542691", "+442039542691"}
    assert all(f.ambiguous for f in found)
    london = [parse_number("+44 20 3954 2691", None, source="phone_number")]
    assert find_match(found, london) and not find_match(found, london, exact=True)
    hold = parse_legal_hold({"numbers": ["+44 20 3954 2691"]}, region="GB")
    assert hold.reason("monitors", monitor("2039542691")) == "legal_hold_number"
    assert normalize_number("2125550100", "US") == "+12125550100"  # one valid reading


def test_values_that_are_not_numbers():
    for value in ("anonymous", "", None, True, "101", "sip:101@pbx", "Restricted", "ext-1001"):
        assert numbers_in_value(value, ("GB",)) == [], value
    assert uri_user_part("sip:442079460321@host") == "442079460321"
    assert uri_user_part("tel:+44-20-7946-0321;ext=12") == "+44-20-7946-0321"
    assert uri_user_part("+44 20 7946 0321") == "+44 20 7946 0321"
    record = {"id": 1, "caller": "anonymous", "called": "101", "summary": "+44 20 7946 0321"}
    assert record_numbers("monitors", record, ("GB",)) == []  # summary is not a number field


def test_no_number_never_hides_a_held_number_elsewhere_in_the_record():
    hold = parse_legal_hold({"numbers": [HELD]}, region="GB")
    cdr = {"id": 1, "src": "anonymous", "dst": "101", "clid": "", "dst_name": "020 7946 0321"}
    assert hold.reason("cdrs", cdr) == "legal_hold_number"
    chat = {"id": 1, "visitor_name": "anonymous", "visitor_email": "ring +44 20 7946 0321"}
    assert hold.chat_reason(1, chat, [{"id": 2, "message": ""}]) == "legal_hold_number"


def test_national_record_values_need_the_region_to_match_exactly():
    wanted = [parse_number("+44 20 7946 0321", None, source="phone_number")]
    national = numbers_in_value("020 7946 0321")
    assert national == []  # no region: a national form is no number for a purge
    (found,) = numbers_in_value("020 7946 0321", ("GB",))
    assert found.e164 == "+442079460321" and find_match([found], wanted, exact=True)
    # Read in two regions, the same text is two numbers: never an exact match.
    both = numbers_in_value("01 42 68 53 00", ("FR", "GB"))
    assert {f.e164 for f in both} == {"+33142685300"}
    assert all(not f.ambiguous for f in both)


def test_region_variable():
    assert parse_region(None) is None and parse_region("  ") is None
    assert parse_region("gb") == "GB" and parse_region(" US ") == "US"
    for bad in ("UK", "XX", "44", "GBR"):
        with pytest.raises(ValueError, match="voipstudio_default_region"):
            parse_region(bad)


def test_normalize_number_gives_e164_or_nothing():
    assert normalize_number("+44 (0)20 7946 0321") == "+442079460321"
    assert normalize_number("442079460321") == "+442079460321"
    assert normalize_number("020 7946 0321") == ""
    assert normalize_number("020 7946 0321", "GB") == "+442079460321"
    assert normalize_number("anonymous") == "" and normalize_number(None) == ""


def test_no_provider_module_shadows_the_standard_library():
    # Airflow imports every file of plugins/ under its bare name (numbers.py would
    # become the standard library's ``numbers`` for every task).
    import sys
    from pathlib import Path

    import voipstudio_provider

    package = Path(voipstudio_provider.__file__).parent
    names = {p.stem for p in package.rglob("*.py")} - {"__init__"}
    assert not names & sys.stdlib_module_names


@pytest.mark.parametrize(
    "callerid",
    [
        "Ann <442079460321>",
        "44 20 7946 0321",
        "02079460321",
        "442079460321,442079460322",
        "011 44 20 7946 0321",
        "0044 20 7946 0321",
        "tel:+44-20-7946-0321;ext=12",
        "+44 20 7946 0321 ext. 12",
    ],
)
def test_a_held_number_is_found_in_its_own_countrys_forms_under_another_region(callerid):
    hold = parse_legal_hold({"numbers": ["+44 20 7946 0321"]}, region="US")
    assert hold.regions == ("GB", "US")
    voicemessage = {"id": 1, "caller": "101", "callerid": callerid}
    assert hold.reason("voicemessages", voicemessage) == "legal_hold_number"
    assert hold.reason("voicemessages", {**voicemessage, "callerid": "+1 207 946 0321"}) is None


@pytest.mark.parametrize("value", ["1-212-555-0147", "12125550147", "001 212 555 0147"])
def test_an_erasure_without_a_region_finds_every_unambiguous_form(value):
    from voipstudio_provider.engine.deletion.purge import parse_purge_request

    request = parse_purge_request({"phone_number": "+1 212 555 0147"}, region=None)
    assert request.match("monitors", {"id": 1, "caller": value, "called": "101"}) == value
    message = {"id": 2, "chat_id": 3, "message": f"call me on {value} please"}
    assert request.match("chatmsgs", message) == value


@pytest.mark.parametrize("region", [None, "US", "GB", "TR", "DE", "FR", "AU"])
def test_a_look_alike_is_never_the_purged_number(region):
    from voipstudio_provider.engine.deletion.purge import parse_purge_request

    request = parse_purge_request({"phone_number": "+1 212 555 0147"}, region=region)
    for value in ("0212 5550147", "02125550147", "212 555 01470", "+90 212 555 0147"):
        assert request.match("monitors", {"id": 1, "caller": value, "called": "101"}) is None
        assert request.match("chatmsgs", {"id": 2, "chat_id": 3, "message": value}) is None


def test_a_number_with_an_extension_is_compared_as_its_line():
    # libphonenumber's PhoneNumber has no clear_extension(): comparing such a number raised
    # AttributeError and stopped retention and every purge.
    hold = parse_legal_hold({"numbers": ["+44 20 7946 0321"]}, region="GB")
    assert hold.reason("monitors", monitor("+44 20 7946 0321 ext. 12")) == "legal_hold_number"
    assert hold.reason("monitors", monitor("+44 20 7946 0322 x12")) is None
    (found,) = numbers_in_value("tel:+44-20-7946-0321;ext=12")
    assert found.e164 == "+442079460321"


@pytest.mark.parametrize(
    "entry", ["+44 20 7946 0321 ext. 12", "tel:+44-20-7946-0321;ext=12", "020 7946 0321 x12"]
)
def test_an_entered_number_with_an_extension_is_refused(entry):
    with pytest.raises(ValueError, match="has an extension; write the number without it"):
        parse_number(entry, "GB", source="phone_number")
    with pytest.raises(ValueError, match=r"numbers\[0\]: .* has an extension"):
        parse_legal_hold({"numbers": [entry]}, region="GB")


def test_an_entered_list_of_numbers_is_refused():
    with pytest.raises(ValueError, match="is not a valid phone number"):
        parse_number("+44 20 7946 0321, +44 20 7946 0322", None, source="phone_number")


def test_digits_next_to_an_international_number_do_not_make_it_doubtful():
    from voipstudio_provider.engine.deletion.purge import parse_purge_request

    request = parse_purge_request({"phone_number": "+44 20 7946 0321"}, region="GB")
    said = {"id": 1, "chat_id": 2, "message": "Order 123 call me on +44 (0)20 7946 0321 2 times"}
    assert request.match("chatmsgs", said) == "+44 (0)20 7946 0321"
    # Digits after another country code are never this number beyond doubt, but held.
    other = {"id": 1, "chat_id": 2, "message": "call +999 20 7946 0321 now"}
    assert request.match("chatmsgs", other) is None
    hold = parse_legal_hold({"numbers": ["+44 20 7946 0321"]}, region="GB")
    assert hold.reason("chatmsgs", other) == "legal_hold_number"
