"""Phone numbers: read, normalised to E.164, found in text and compared, in one place.

Every comparison of phone numbers in the provider (legal hold, retention, the compliance
purge, CDR masking) goes through this module, which leaves the digits to Google's
libphonenumber (``phonenumbers``). One rule reads every value:

- a value's *number-like texts* are its runs of digits with the separators people write
  (spaces, ``-``, ``.``, ``/``, brackets, a leading ``+``); a comma, a semicolon, a letter or
  ``<`` ends one, so ``442079460321,442079460322`` is two and ``"Ann" <442079460321>`` or
  ``sip:442079460321@host`` hold one;
- a number-like text is read in every plausible way: as written when it starts with ``+``;
  otherwise as E.164 digits without the plus (the API's own notation, ``442079460321``),
  after an international prefix ``00`` or ``011``, and as a national number in each region
  given (the held or purged number's own country and the Variable
  ``voipstudio_default_region``). Its *readings* are the distinct valid numbers that gives;
- when a number-like text has no reading as a whole, every run of its words is read
  (``Order 123 020 7946 0000`` holds ``020 7946 0000``); such a run is ambiguous unless it
  starts with the text's ``+`` and no overlapping run reads as another number (the words
  it leaves out may belong to it: ``06 21 234 5678`` is one Hungarian number);
- a text with more than one reading is *ambiguous*. A legal hold applies when any reading
  of any number-like text is a held number (fail closed); a purge matches only a reading
  that is not ambiguous (see :func:`find_match`);
- two numbers are the same when their E.164 forms are, extensions aside; a number never
  matches because it ends like another (``101`` and ``+44 20 7946 0101``).

This module reads no Variable and calls no API, so it is tested without Airflow.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumber, PhoneNumberFormat

from voipstudio_provider.endpoints import RESOURCES

#: The Airflow Variable naming the region (ISO 3166 code such as ``GB``) national numbers
#: are read in. It has no default: a national number is never guessed.
REGION_VARIABLE = "voipstudio_default_region"
#: Chat fields a visitor types in, where a phone number may appear. Other visitor fields
#: (IP address, generated visitor id, user agent) hold digit runs that are not numbers.
CHAT_VISITOR_FIELDS: tuple[str, ...] = ("visitor_name", "visitor_email")
#: CDR fields that repeat a number as a name (an outbound call's ``dst_name`` is the number).
CDR_NAME_FIELDS: tuple[str, ...] = ("src_name", "dst_name")
#: International prefixes read in any region: ``00`` (most of the world), ``011`` (NANP).
INTERNATIONAL_PREFIXES: tuple[str, ...] = ("00", "011")
#: The most digits a number-like text read as one number has: E.164's 15 after ``011``.
_MAX_DIGITS = 18

#: What people write between the digits of one number.
_SEPARATORS = " \t\u00a0./-\u2010\u2011\u2012\u2013\u2014\u2015"
# A number-like text: a digit or bracket (or +) then digits, brackets and separators.
_NUMBER_LIKE = re.compile(rf"\+?[\d(][\d(){re.escape(_SEPARATORS)}]*")
_WORD = re.compile(rf"[^{re.escape(_SEPARATORS)}]+")
# A SIP or tel URI's scheme right before a number-like text.
_SCHEME_BEFORE = re.compile(r"\b(?:sips?|tel):$", re.IGNORECASE)
# A SIP or tel URI; its user part is the number.
_URI = re.compile(r"\b(?:sips?|tel):([^@;>\s,]+)", re.IGNORECASE)


class FoundNumber(NamedTuple):
    """A number read in a record: the text as written there, and the number it denotes.

    ``ambiguous`` is true when the same text also reads as another valid number (digits
    valid with and without a country code, a national form read in several regions, or
    words that also read as another number with their neighbours).
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


def reading_regions(region: str | None, numbers: Iterable[PhoneNumber]) -> tuple[str, ...]:
    """The regions national forms are read in: ``region`` (the default region, if set) and
    the own country of each of ``numbers`` (the held or purged numbers), sorted."""
    return tuple(sorted({*regions_of(numbers), *([region] if region else [])}))


def uri_user_part(value: str) -> str:
    """The user part of a SIP or tel URI (``sip:4420...@host`` gives ``4420...``).

    Any other value is returned stripped and otherwise unchanged.
    """
    text = value.strip()
    match = _URI.match(text)
    return match.group(1) if match else text


def _valid(text: str, region: str | None) -> PhoneNumber | None:
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException:
        return None
    return number if phonenumbers.is_valid_number(number) else None


def _after_digits(text: str, count: int) -> str:
    """``text`` after its first ``count`` digits (``00 44 20`` after 2 is `` 44 20``)."""
    seen = 0
    for index, char in enumerate(text):
        seen += char.isdigit()
        if seen == count:
            return text[index + 1 :]
    return ""


def _readings(text: str, regions: Sequence[str]) -> tuple[PhoneNumber, ...]:
    """Every valid number one number-like text denotes, read in every plausible way."""
    return _cached_readings(text.strip(), tuple(regions))


@functools.lru_cache(maxsize=65536)  # a call history repeats its numbers: parse each once
def _cached_readings(text: str, regions: tuple[str, ...]) -> tuple[PhoneNumber, ...]:
    digits = "".join(c for c in text if c.isdigit())
    if not digits or len(digits) > _MAX_DIGITS:
        return ()
    if text.lstrip("(").startswith("+"):
        readings = [_valid(text, None)]
    else:
        readings = [] if digits.startswith("0") else [_valid("+" + text, None)]
        for prefix in INTERNATIONAL_PREFIXES:
            if digits.startswith(prefix):
                readings.append(_valid("+" + _after_digits(text, len(prefix)), None))
        readings += [_valid(text, region) for region in regions]
    distinct: dict[str, PhoneNumber] = {}
    for number in readings:
        if number is not None:
            distinct.setdefault(to_e164(number), number)
    return tuple(distinct.values())


def _numbers_in_words(text: str, regions: Sequence[str]) -> list[FoundNumber]:
    """The numbers in runs of a number-like text's words, when the whole reads as none.

    Every run is read, for a hold to find its number wherever it may be; a run is beyond
    doubt only when it starts with the text's ``+`` and no overlapping run reads another
    number (``+44 (0)20 7946 0321 2``)."""
    words = list(_WORD.finditer(text))
    runs = []  # (first word, last word, text, readings)
    for first in range(len(words)):
        digits = 0
        for last in range(first, len(words)):
            digits += sum(c.isdigit() for c in words[last].group(0))
            if digits > _MAX_DIGITS:  # no run this long is one number: linear, not quadratic
                break
            run = text[words[first].start() : words[last].end()]
            readings = _readings(run, regions) if (first, last) != (0, len(words) - 1) else ()
            if readings:
                runs.append((first, last, run, readings))
    runs.sort(key=lambda run: (run[0], -run[1]))  # leftmost and longest first
    # Only a run starting with the text's own + and country code is read beyond doubt: the
    # words a run leaves out may belong to it (``06 21 234 5678`` is one Hungarian number,
    # ``+44 212 555 0147`` no American one).
    international = text.lstrip("(").startswith("+")
    found: dict[str, FoundNumber] = {}
    for first, last, run, readings in runs:
        near = {
            to_e164(n)
            for other_first, other_last, _, other in runs
            if other_first <= last and first <= other_last
            for n in other
        }
        doubtful = len(near) > 1 or not (international and first == 0)
        for number in readings:
            # A number one run reads beyond doubt is not made doubtful by another run.
            known = found.get(to_e164(number))
            if known is None or (known.ambiguous and not doubtful):
                found[to_e164(number)] = FoundNumber(run, number, doubtful)
    return list(found.values())


def numbers_in_text(text: object, regions: Sequence[str] = ()) -> list[FoundNumber]:
    """The numbers written in a value or free text (a caller id, a chat message, an e-mail).

    :param text: any value; non-strings are read as their text.
    :param regions: regions national forms are read in; with none, only international
        forms (``+44 ...``, ``0044 ...``) and E.164 digits without the plus are read.
    """
    if text is None or isinstance(text, bool):
        return []
    text = str(text)
    found: list[FoundNumber] = []
    for match in _NUMBER_LIKE.finditer(text):
        number_like = match.group(0).strip(_SEPARATORS).rstrip(_SEPARATORS + "(")
        readings = _readings(number_like, regions)
        if readings:
            # A URI's scheme stays with its number, as written (``sip:442079460321``).
            scheme = _SCHEME_BEFORE.search(text, 0, match.start())
            shown = scheme.group(0) + number_like if scheme else number_like
            ambiguous = len(readings) > 1
            found += [FoundNumber(shown, number, ambiguous) for number in readings]
        elif len(_WORD.findall(number_like)) > 1:
            found += _numbers_in_words(number_like, regions)
    return found


def numbers_in_value(value: object, regions: Sequence[str] = ()) -> list[FoundNumber]:
    """The numbers in one field's value, read as :func:`numbers_in_text` reads any text;
    a field naming one number shows as the whole field.

    :param value: a field of an API record (``442079460321``, ``anonymous``,
        ``"Ann" <+44 20 7946 0000>``, ``sip:101@pbx``...).
    :param regions: regions national forms are read in.
    """
    found = numbers_in_text(value, regions)
    if found and len({f.text for f in found}) == 1:
        # One number in the field: the field as written is what names it.
        return [f._replace(text=str(value).strip()) for f in found]
    return found


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
    """The E.164 form of a value that names one number beyond doubt (``+442079460321``),
    else ``""``.

    :param value: a number field's value or a number as typed.
    :param region: the region a national form is read in.
    """
    found = numbers_in_text(value, (region,) if region else ())
    distinct = {f.e164 for f in found}
    return distinct.pop() if len(distinct) == 1 and not found[0].ambiguous else ""


def regions_of(numbers: Iterable[PhoneNumber]) -> tuple[str, ...]:
    """The regions (ISO codes) the given numbers belong to, sorted."""
    regions = {phonenumbers.region_code_for_number(n) for n in numbers}
    return tuple(sorted(r for r in regions if r and r != phonenumbers.UNKNOWN_REGION))


def same_number(a: PhoneNumber, b: PhoneNumber) -> bool:
    """Whether two numbers are one line: the same E.164 form.

    An extension written after a number does not make it another line (E.164 has no
    extension); a number that only ends like the other (``101`` and ``+44 20 7946 0101``)
    never matches.
    """
    return to_e164(a) == to_e164(b)


def find_match(
    found: Iterable[FoundNumber], wanted: Iterable[PhoneNumber], *, exact: bool = False
) -> tuple[FoundNumber, PhoneNumber] | None:
    """The first number of ``found`` that is one of ``wanted``, with the one it is.

    :param exact: ignore found numbers whose text is ambiguous: a purge deletes only a
        record naming its number beyond doubt, where a hold keeps whatever might be one.
    """
    wanted = {to_e164(n): n for n in wanted}
    for number in found:
        if exact and number.ambiguous:
            continue
        if number.e164 in wanted:
            return number, wanted[number.e164]
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
    if _extension(text, region):
        # A hold or a purge applies to the whole line: an extension would suggest less.
        raise ValueError(
            f"{source}: {entry!r} has an extension; write the number without it "
            "(holds and purges apply to the whole line, whatever extension a record shows)"
        )
    user = uri_user_part(text)
    one_text = _NUMBER_LIKE.fullmatch(user)
    readings = _readings(user, (region,) if region else ()) if one_text else ()
    if len(readings) == 1:
        return readings[0]
    if len(readings) > 1:
        forms = ", ".join(to_e164(n) for n in readings)
        raise ValueError(
            f"{source}: {entry!r} reads as {forms}; write it with + and its country code"
        )
    if region is None and one_text and not user.startswith(("+", *INTERNATIONAL_PREFIXES)):
        raise ValueError(
            f"{source}: {entry!r} is not in international form and the Variable "
            f"{REGION_VARIABLE} is not set, so it cannot be read as a national number; "
            "set the Variable (e.g. GB) or write the number with + and its country code"
        )
    raise ValueError(f"{source}: {entry!r} is not a valid phone number")


def _extension(text: str, region: str | None) -> str:
    """The extension libphonenumber reads in ``text`` (``ext. 12``, ``;ext=12``), or ``""``."""
    try:
        return phonenumbers.parse(text, region).extension or ""
    except NumberParseException:
        return ""
