"""Held and purged numbers of many countries, written in every notation, under several
default regions: a hold always finds its number, a purge finds its own number wherever the
text can be no other, and never takes a text that may be another number.

Numbers are libphonenumber's example numbers (fixed line and mobile) of every region it
knows; notations are its own formats (E.164, international, national, RFC 3966) and what
people and the API write besides (``00``/``011`` prefixes, E.164 digits without the plus,
other separators), alone, in a sentence, in a caller id, a SIP URI or a list. The truth a
purge is judged by is computed here, independently, from the text that was written: its
*plausible readings* as the rule states them (with ``+``; E.164 digits; after ``00`` or
``011``; national in the number's own country and in the default region).
"""

from __future__ import annotations

import phonenumbers
from hypothesis import assume, example, given
from hypothesis import strategies as st
from phonenumbers import NumberParseException, PhoneNumberFormat, PhoneNumberType
from voipstudio_provider.engine.deletion.purge import parse_purge_request
from voipstudio_provider.engine.subjects.legal_hold import parse_legal_hold

DEFAULT_REGIONS = [None, "US", "GB", "DE", "FR", "AU", "IN", "BR", "JP", "TR", "IT", "NL"]


def _examples() -> list[str]:
    numbers = set()
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in (PhoneNumberType.FIXED_LINE, PhoneNumberType.MOBILE):
            number = phonenumbers.example_number_for_type(region, kind)
            if number is not None and phonenumbers.is_valid_number(number):
                numbers.add(phonenumbers.format_number(number, PhoneNumberFormat.E164))
    return sorted(numbers)


EXAMPLES = _examples()


def _parse(text: str, region: str | None = None):
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException:
        return None
    return number if phonenumbers.is_valid_number(number) else None


def _e164(number) -> str:
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)


def own_region(e164: str) -> str:
    return phonenumbers.region_code_for_number(phonenumbers.parse(e164))


def plausible_readings(written: str, regions: set[str]) -> set[str]:
    """What the text of one number can denote, by the rule, computed straight from
    libphonenumber: the oracle of the purge properties."""
    if written.startswith("+"):
        number = _parse(written)
        return {_e164(number)} if number else set()
    digits = "".join(c for c in written if c.isdigit())
    candidates = [] if digits.startswith("0") else [_parse("+" + digits)]
    for prefix in ("00", "011"):
        if digits.startswith(prefix):
            candidates.append(_parse("+" + digits[len(prefix) :]))
    candidates += [_parse(written, region) for region in regions]
    return {_e164(n) for n in candidates if n is not None}


@st.composite
def written(draw, e164: str) -> str:
    """``e164`` written in one of the notations people, SIP and the API use."""
    number = phonenumbers.parse(e164)
    notation = draw(
        st.sampled_from(["E164", "INTERNATIONAL", "NATIONAL", "RFC3966", "00", "011", "DIGITS"])
    )
    if notation in ("E164", "INTERNATIONAL", "NATIONAL", "RFC3966"):
        text = phonenumbers.format_number(number, getattr(PhoneNumberFormat, notation))
        text = text.removeprefix("tel:")
    else:
        international = phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL)
        prefix = {"00": "00", "011": "011", "DIGITS": ""}[notation]
        text = prefix + international[1:]
        if notation == "DIGITS":
            text = text.replace(" ", "").replace("-", "")
    separator = draw(st.sampled_from([None, " ", "-", ".", ""]))
    if separator is not None and notation != "E164":
        text = text.replace(" ", separator).replace("-", separator)
    return text


@st.composite
def placed(draw, text: str) -> tuple[str, dict]:
    """A record where ``text`` is written: a voicemail's caller id or a chat message."""
    wrapper = draw(
        st.sampled_from(
            ["{}", '"Ann Smith" <{}>', "Ann <{}>", "please call {} tomorrow", "Tel: {}.", "{},"]
        )
    )
    if text.replace("+", "").isdigit() and draw(st.booleans()):
        wrapper = "sip:{}@pbx.example.com"
    value = wrapper.format(text)
    if draw(st.booleans()):
        return "voicemessages", {"id": 1, "caller": "101", "callerid": value, "dialled": "102"}
    return "chatmsgs", {"id": 1, "chat_id": 2, "message": value}


numbers = st.sampled_from(EXAMPLES)
default_regions = st.sampled_from(DEFAULT_REGIONS)


@given(numbers, default_regions, st.data())
@example("+442079460321", "US", None)
def test_a_held_number_is_found_in_every_notation_under_every_region(held, region, data):
    hold = parse_legal_hold({"numbers": [held]}, region=region)
    if data is None:  # the case: region US, the API's digits in a caller id
        texts = ["Ann <442079460321>", "44 20 7946 0321", "02079460321", "442079460321,4420"]
        for text in texts:
            record = {"id": 1, "caller": "101", "callerid": text, "dialled": "102"}
            assert hold.reason("voicemessages", record) == "legal_hold_number", text
        return
    text = data.draw(written(held))
    resource, record = data.draw(placed(text))
    assert hold.reason(resource, record) == "legal_hold_number", (text, record)


@given(numbers, default_regions, st.data())
def test_a_purge_finds_its_number_wherever_it_can_be_no_other(purged, region, data):
    request = parse_purge_request({"phone_number": purged}, region=region)
    text = data.draw(written(purged))
    resource, record = data.draw(placed(text))
    regions = {own_region(purged), *([region] if region else [])}
    readings = plausible_readings(text, regions)
    assert purged in readings, "the rule reads every notation of a number as that number"
    if readings == {purged}:
        assert request.match(resource, record) is not None, (text, record)
    else:
        assert request.match(resource, record) is None, (text, readings)


@st.composite
def look_alikes(draw, purged: str) -> str:
    """Another valid number close to ``purged``: another example number, its national
    digits under another country code, or one digit changed."""
    number = phonenumbers.parse(purged)
    national = str(number.national_number)
    kind = draw(st.sampled_from(["other", "country", "digit"]))
    if kind == "other":
        return draw(numbers.filter(lambda other: other != purged))
    if kind == "country":
        code = draw(st.sampled_from(sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)))
        candidate = f"+{code}{national}"
    else:
        index = draw(st.integers(0, len(national) - 1))
        digit = draw(st.sampled_from("0123456789"))
        candidate = f"+{number.country_code}{national[:index]}{digit}{national[index + 1 :]}"
    other = _parse(candidate)
    assume(other is not None and _e164(other) != purged)
    return _e164(other)


@given(numbers, default_regions, st.data())
@example("+12125550147", None, "0212 5550147")
@example("+218212345678", None, "06 21 234 5678")  # a Hungarian number, found by make fuzz
@example("+12125550147", "TR", "0212 5550147")
def test_a_purge_never_takes_a_text_that_may_be_another_number(purged, region, data):
    request = parse_purge_request({"phone_number": purged}, region=region)
    if isinstance(data, str):  # a look-alike written as it is
        text = data
        record = {"id": 1, "caller": text, "called": "101"}
        assert request.match("monitors", record) is None
        return
    other = data.draw(look_alikes(purged))
    text = data.draw(written(other))
    resource, record = data.draw(placed(text))
    regions = {own_region(purged), *([region] if region else [])}
    readings = plausible_readings(text, regions)
    matched = request.match(resource, record)
    if text.startswith("+") or readings != {purged}:
        # Written with its country code, or possibly another number: never this erasure's.
        assert matched is None, (text, readings, record)


@given(numbers, default_regions, st.data())
@example("+442079460321", "US", "+1 207 946 0321")
@example("+442079460321", "US", "2079460321")
def test_a_hold_keeps_every_text_that_may_be_its_number_and_no_other(held, region, data):
    hold = parse_legal_hold({"numbers": [held]}, region=region)
    if isinstance(data, str):
        text = data
        resource, record = "monitors", {"id": 1, "caller": text, "called": "101"}
    else:
        text = data.draw(written(data.draw(look_alikes(held))))
        resource, record = data.draw(placed(text))
    readings = plausible_readings(text, {own_region(held), *([region] if region else [])})
    reason = hold.reason(resource, record)
    if held in readings:
        assert reason == "legal_hold_number", (text, readings)
    elif text.startswith("+"):
        assert reason is None, (text, readings)


@given(numbers, default_regions, st.sampled_from(sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)))
@example("+12125550147", None, 44)
def test_another_country_code_never_makes_the_purged_number(purged, region, code):
    number = phonenumbers.parse(purged)
    assume(code != number.country_code)
    international = phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL)
    text = f"+{code}" + international.removeprefix(f"+{number.country_code}")
    request = parse_purge_request({"phone_number": purged}, region=region)
    record = {"id": 1, "chat_id": 2, "message": f"call {text} please"}
    assert request.match("chatmsgs", record) is None, text
    assert request.match("monitors", {"id": 1, "caller": text, "called": "101"}) is None, text
