"""Phone numbers: read, normalised to E.164, found in text and compared, in one place.

Every comparison of phone numbers in the provider (legal hold, retention, the compliance
purge, CDR masking) goes through this module, which leaves the digits to Google's
libphonenumber (``phonenumbers``):

- a value is read as one number when it is one (``+44 (0)20 7946 0321``,
  ``0044 20 7946 0321``, ``tel:+442079460321``, ``sip:442079460321@host``, or the API's
  own notation ``442079460321``: E.164 digits without the plus);
- otherwise numbers are found in its text with libphonenumber's matcher, never by
  gluing digit runs together (``Order 123 020 7946 0000`` holds ``020 7946 0000``);
- a national form (``020 7946 0321``) is read in the regions it is given, normally the
  one of the Variable ``voipstudio_default_region``; without a region it is not read;
- two numbers are the same when libphonenumber's number match says exact or
  national/international equivalence, never because one ends like the other;
- an empty value, ``anonymous``, an internal extension (``101``) or any other text without
  a valid number is "no number": it matches nothing.

This module reads no Variable and calls no API, so it is tested without Airflow.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import phonenumbers
from phonenumbers import MatchType, NumberParseException, PhoneNumber, PhoneNumberFormat

from voipstudio_provider.endpoints import RESOURCES

#: The Airflow Variable naming the region (ISO 3166 code such as ``GB``) national numbers
#: are read in. It has no default: a national number is never guessed.
REGION_VARIABLE = "voipstudio_default_region"
#: Chat fields a visitor types in, where a phone number may appear. Other visitor fields
#: (IP address, generated visitor id, user agent) hold digit runs that are not numbers.
CHAT_VISITOR_FIELDS: tuple[str, ...] = ("visitor_name", "visitor_email")
#: CDR fields that repeat a number as a name (an outbound call's ``dst_name`` is the number).
CDR_NAME_FIELDS: tuple[str, ...] = ("src_name", "dst_name")
#: A value of this many digits or fewer, and nothing else, is an internal extension.
MAX_EXTENSION_DIGITS = 6

_SAME = (MatchType.EXACT_MATCH, MatchType.NSN_MATCH)
# A SIP or tel URI inside a value; its user part is the number.
_URI = re.compile(r"\b(?:sips?|tel):([^@;>\s,]+)", re.IGNORECASE)
_WORD = re.compile(r"\S+")


class FoundNumber(NamedTuple):
    """A number read in a record: the text as written there, and the number it denotes.

    ``ambiguous`` is true when the same text also reads as another valid number (a
    national form read in several regions, or digits that are valid with and without a
    country code).
    """

    text: str
    number: PhoneNumber
    ambiguous: bool = False

    @property
    def e164(self) -> str:
        return to_e164(self.number)


def to_e164(number: PhoneNumber) -> str:
    """The E.164 form of ``number`` (``+442079460321``), without any extension."""
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)


def parse_region(value: object) -> str | None:
    """The region of the Variable ``voipstudio_default_region``, or ``None`` when unset.

    :param value: the Variable's text, such as ``GB`` (case does not matter).
    :raises ValueError: a value that is not a region libphonenumber knows.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    region = str(value).strip().upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"{REGION_VARIABLE} must be an ISO country code such as GB, not {value!r}")
    return region


def uri_user_part(value: str) -> str:
    """The user part of a SIP or tel URI (``sip:4420...@host`` gives ``4420...``).

    Any other value is returned stripped and otherwise unchanged.
    """
    text = value.strip()
    match = _URI.match(text)
    return match.group(1) if match else text


def _parse(text: str, region: str | None) -> PhoneNumber | None:
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException:
        return None
    return number if phonenumbers.is_valid_number(number) else None


def _readings(value: str, regions: Sequence[str]) -> list[PhoneNumber]:
    """The valid numbers a value denotes when read as one number as a whole."""
    return list(_cached_readings(value, tuple(regions)))


@functools.lru_cache(maxsize=65536)  # a call history repeats its numbers: parse each once
def _cached_readings(value: str, regions: tuple[str, ...]) -> tuple[PhoneNumber, ...]:
    text = uri_user_part(value)
    if not text:
        return ()
    if text.startswith("+"):
        number = _parse(text, None)
        return (number,) if number else ()
    if text.isdigit() and len(text) <= MAX_EXTENSION_DIGITS:
        return ()  # an internal extension
    readings: list[PhoneNumber | None] = []
    api_notation = text.isdigit() and not text.startswith("0")
    if api_notation:
        # The API's notation: E.164 digits without the plus.
        readings.append(_parse("+" + text, None))
    for region in regions:
        own_code = str(phonenumbers.country_code_for_region(region))
        if not (api_notation and text.startswith(own_code)):  # else the same reading again
            readings.append(_parse(text, region))
    if not any(readings) and text.startswith("00"):
        # 00 is the international prefix of most of the world, also without a region.
        readings.append(_parse("+" + text[2:], None))
    distinct: list[PhoneNumber] = []
    for number in readings:
        if number is not None and not any(same_number(number, n) for n in distinct):
            distinct.append(number)
    return tuple(distinct)


class _Matcher(phonenumbers.PhoneNumberMatcher):
    """libphonenumber's matcher, which also tries runs of whole words of a candidate.

    The library reads ``Order 123 020 7946 0000`` as one candidate and, when that is not a
    valid number, tries single words only; this also tries consecutive words, leftmost
    and longest first, so the number next to other digits is found and nothing is glued.
    """

    def _extract_inner_match(self, candidate: str, offset: int):
        match = super()._extract_inner_match(candidate, offset)
        if match is not None:
            return match
        words = list(_WORD.finditer(candidate))
        for first in range(len(words)):
            for last in range(len(words) - 1, first, -1):
                start, end = words[first].start(), words[last].end()
                match = self._parse_and_verify(candidate[start:end], offset + start)
                if match is not None:
                    return match
        return None


def numbers_in_text(text: object, regions: Sequence[str] = ()) -> list[FoundNumber]:
    """The numbers written in free text (a chat message, a visitor field, a caller id).

    :param text: any value; non-strings are read as their text.
    :param regions: regions national forms are read in; with none, only international
        forms (``+44 ...``) and SIP/tel URIs are found.
    """
    if text is None:
        return []
    text = str(text)
    found: dict[tuple[int, str], FoundNumber] = {}  # (where, E.164) -> the number
    for region in regions or (None,):
        for match in _Matcher(text, region):
            key = (match.start, to_e164(match.number))
            found.setdefault(key, FoundNumber(match.raw_string, match.number))
    for uri in _URI.finditer(text):
        for reading in _found(uri.group(0), _readings(uri.group(0), regions)):
            found[(uri.start(1), reading.e164)] = reading  # the URI as written
    readings: dict[str, set[str]] = {}
    for number in found.values():
        readings.setdefault(number.text, set()).add(number.e164)
    return [n._replace(ambiguous=len(readings[n.text]) > 1) for n in found.values()]


def _found(text: str, readings: list[PhoneNumber]) -> Iterator[FoundNumber]:
    for number in readings:
        yield FoundNumber(text, number, ambiguous=len(readings) > 1)


def numbers_in_value(value: object, regions: Sequence[str] = ()) -> list[FoundNumber]:
    """The numbers in one field's value: the value as one number, else the numbers in it.

    :param value: a field of an API record (``442079460321``, ``anonymous``,
        ``"Ann" <+44 20 7946 0000>``, ``sip:101@pbx``...).
    :param regions: regions national forms are read in (see :func:`numbers_in_text`).
    """
    if value is None or isinstance(value, bool):
        return []
    text = str(value).strip()
    whole = list(_found(text, _readings(text, regions)))
    return whole or numbers_in_text(text, regions)


def number_fields(resource: str) -> tuple[str, ...]:
    """The fields of a ``resource`` record where its numbers are read.

    Calls, recordings and voicemail carry numbers in their resource's ``number_fields``
    (a field may hold a name and a number, e.g. ``clid``), a CDR also in
    :data:`CDR_NAME_FIELDS`; a chat message in its text; a chat in its visitor fields.
    """
    if resource == "chatmsgs":
        return ("message",)
    if resource == "chats":
        return CHAT_VISITOR_FIELDS
    if resource == "cdrs":
        return (*RESOURCES[resource].number_fields, *CDR_NAME_FIELDS)
    return RESOURCES[resource].number_fields


def numbers_by_field(
    resource: str, record: Mapping[str, Any], regions: Sequence[str] = ()
) -> list[tuple[str, list[FoundNumber]]]:
    """The numbers of each of a record's :func:`number_fields`, field by field.

    Free text (a chat message, a chat's visitor fields) is searched for numbers
    (:func:`numbers_in_text`); any other field is read as one number first
    (:func:`numbers_in_value`).

    :param resource: the record's resource name.
    :param record: the API record.
    :param regions: regions national forms are read in.
    """
    read = numbers_in_text if resource in ("chats", "chatmsgs") else numbers_in_value
    return [(name, read(record.get(name), regions)) for name in number_fields(resource)]


def record_numbers(
    resource: str, record: Mapping[str, Any], regions: Sequence[str] = ()
) -> list[FoundNumber]:
    """The numbers a record involves: those of every field of :func:`numbers_by_field`."""
    by_field = numbers_by_field(resource, record, regions)
    return [found for _, numbers in by_field for found in numbers]


def normalize_number(value: object, region: str | None = None) -> str:
    """The E.164 form of a value that is one number (``+442079460321``), else ``""``.

    :param value: a number field's value or a number as typed.
    :param region: the region a national form is read in.
    """
    if value is None or isinstance(value, bool):
        return ""
    readings = _readings(str(value), (region,) if region else ())
    return to_e164(readings[0]) if len(readings) == 1 else ""


def regions_of(numbers: Iterable[PhoneNumber]) -> tuple[str, ...]:
    """The regions (ISO codes) the given numbers belong to, sorted."""
    regions = {phonenumbers.region_code_for_number(n) for n in numbers}
    return tuple(sorted(r for r in regions if r and r != phonenumbers.UNKNOWN_REGION))


def same_number(a: PhoneNumber, b: PhoneNumber) -> bool:
    """Whether two numbers are one line: libphonenumber's exact or national match.

    An extension written after a number does not make it another line; a number that
    only ends like the other (``101`` and ``+44 20 7946 0101``) never matches.
    """
    return phonenumbers.is_number_match(_line(a), _line(b)) in _SAME


def _line(number: PhoneNumber) -> PhoneNumber:
    if not number.extension:
        return number
    line = PhoneNumber()
    line.merge_from(number)
    line.clear_extension()
    return line


def find_match(
    found: Iterable[FoundNumber], wanted: Iterable[PhoneNumber], *, exact: bool = False
) -> tuple[FoundNumber, PhoneNumber] | None:
    """The first number of ``found`` that is one of ``wanted``, with the one it is.

    :param exact: ignore found numbers whose text is ambiguous (a purge deletes only what
        is that number beyond doubt; a hold keeps whatever might be).
    """
    wanted = list(wanted)
    for number in found:
        if exact and number.ambiguous:
            continue
        for other in wanted:
            if same_number(number.number, other):
                return number, other
    return None


def parse_number(entry: object, region: str | None, *, source: str) -> PhoneNumber:
    """One number a person entered (a legal-hold entry, the purge's ``phone_number``).

    :param entry: the number as typed, in any of the forms :func:`numbers_in_value` reads.
    :param region: the region national forms are read in, ``None`` if there is none.
    :param source: what the entry is, for the error (``voipstudio_legal_hold numbers``).
    :raises ValueError: naming the entry, when it is not exactly one valid number: no
        digits, an extension, a national form without a region, or two readings.
    """
    if isinstance(entry, bool) or not isinstance(entry, str | int):
        raise ValueError(f"{source}: {entry!r} is not a phone number")
    text = str(entry).strip()
    readings = _readings(text, (region,) if region else ())
    if len(readings) == 1:
        return readings[0]
    if len(readings) > 1:
        forms = ", ".join(to_e164(n) for n in readings)
        raise ValueError(
            f"{source}: {entry!r} reads as {forms}; write it with + and its country code"
        )
    user = uri_user_part(text)
    if region is None and any(c.isdigit() for c in user) and not user.startswith(("+", "00")):
        raise ValueError(
            f"{source}: {entry!r} is not in international form and the Variable "
            f"{REGION_VARIABLE} is not set, so it cannot be read as a national number; "
            "set the Variable (e.g. GB) or write the number with + and its country code"
        )
    raise ValueError(f"{source}: {entry!r} is not a valid phone number")
