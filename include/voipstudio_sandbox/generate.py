"""Deterministic data for a seed: one small VoIPstudio account with 180 days of history.

Records are related as in the real service: a recorded call has a CDR, a monitor with the
same ``live_id`` (caller and called are the CDR's src and dst, timestamp is its calldate),
a media-server record (MSDR) and a media session; a missed call that reached voicemail has
a voicemessage; chats have messages. Ids grow with time, as they do in the service.

It is a little over 400 lines because :class:`AccountGenerator` makes one day of related
records in one pass; split, the relations between a call's records would span modules.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from typing import Any

from voipstudio_provider.endpoints import DATE_FORMAT

from voipstudio_sandbox.media import VOICE_BYTES_PER_SECOND

HISTORY_DAYS = 180
CUSTOMER_ID = 7490
#: The password every seeded user logs in with (``POST /login``).
SANDBOX_PASSWORD = "sandbox-password"

# Numbers of records for scale 1; ``--scale`` multiplies them.
CDRS_PER_SCALE = 400
CHATS_PER_SCALE = 40
SMS_PER_SCALE = 80
RECORDED_SHARE = 0.375  # of answered calls
NOTED_SHARE = 0.15  # of CDRs

_FIRST_NAMES = ("Alice", "Bruno", "Chloe", "Dmitri", "Emma", "Farid", "Grace", "Hugo")
_LAST_NAMES = ("Martin", "Kowalski", "Nguyen", "Schmidt", "Rossi", "Dubois", "Okafor", "Berg")
_CODECS = ("PCMA", "PCMU", "G722", "opus")
_AGENTS = ("VoIPstudio Desktop 3.1", "Yealink SIP-T46U", "VoIPstudio iOS 5.2", "WebRTC")
#: Prefixes of external numbers and their length in digits: every number generated is a
#: valid one (GB, US, BE, DE, FR), in the API's notation (E.164 digits without the plus).
_EXTERNAL_NUMBERS = (
    ("44797", 12), ("44207", 12), ("12125", 11), ("13105", 11), ("3227", 10), ("4930", 12),
    ("3314", 11),
)  # fmt: skip
_SENTIMENTS = ("positive", "neutral", "negative")
_CONTEXTS_WEIGHTED = ("PSTN_CALL",) * 8 + ("USER_LOCAL", "IVR", "FOLLOW_ME")
_LABELS = ("sales", "support", "billing", "vip", "follow-up")
#: Fields the real records carry beyond the reference's lists (see API-NOTES and README).
EXTRA_FIELDS: dict[str, tuple[str, ...]] = {
    "cdrs": ("labels", "metadata", "nb_notes"),
    "monitors": ("bitrate", "cdr_id", "channels", "created_at", "format", "labels", "language"),
    "users": ("customer_id",),
}
#: How an account sends its enumerations: ``strings`` (``"I"``, ``"CONNECTED"``: every public
#: client sees these), ``integers`` (the position in the dictionary, as the reference's
#: examples show) or ``mixed`` (strings, but one record in :data:`INTEGER_ENUM_ONE_IN` as
#: integers: not an account the service has, kept to prove clients cope with either).
ENUM_ENCODINGS = ("strings", "integers", "mixed")
#: In a ``mixed`` account, one record in this many (by a hash of its id) sends integers.
INTEGER_ENUM_ONE_IN = 8
#: The enumerated fields sent as integers, per resource; see :func:`served_enumeration`.
INTEGER_ENUM_FIELDS = {"cdrs": ("type", "disposition", "destination"), "monitors": ("type",)}


def api_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime(DATE_FORMAT)


def voicemessage_size(voicemessage: dict[str, Any]) -> int:
    """The byte count of a voicemessage's MP3 (voicemessages carry no ``size`` field)."""
    return (
        max(1, voicemessage.get("duration") or 1) * VOICE_BYTES_PER_SECOND
        + 200
        + (voicemessage["id"] * 37) % 400
    )


def _hex(*parts: object) -> str:
    return hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()


def cdr_call_id(seed: int, cdr_id: int) -> int:
    """A CDR's ``call_id``: an integer, as in the reference's examples and the tap's schema."""
    return 10_000_000 + int(_hex(seed, "call_id", cdr_id)[:8], 16) % 90_000_000


def sip_call_id(seed: int, cdr_id: int) -> str:
    """The SIP Call-ID of a CDR's call (its PCAP, trace, MSDR and media session carry it)."""
    return f"{_hex(seed, 'call', cdr_id)[:32]}@sip.voipstudio.sandbox"


def sends_integers(seed: int, encoding: str, resource: str, record_id: int) -> bool:
    """Whether record ``record_id`` of ``resource`` sends its enumerations as integers."""
    if encoding == "integers":
        return True
    if encoding != "mixed":
        return False
    return int(_hex(seed, "enum", resource, record_id)[:6], 16) % INTEGER_ENUM_ONE_IN == 0


def served_enumeration(
    seed: int, encoding: str, resource: str, record_id: int, field: str, value: Any
) -> Any:
    """``value`` of an enumerated ``field`` as the account sends it.

    The integer is the value's position in ``GET /cdrs/dictionaries`` (0-based); a value
    the dictionary does not know is sent as it is.
    """
    if encoding == "strings" and isinstance(value, str):
        return value  # the common case, once per enumerated field of every row served
    codes = _CODES[field]
    text = codes[value] if isinstance(value, int) and 0 <= value < len(codes) else value
    if (
        isinstance(text, str)
        and text in codes
        and sends_integers(seed, encoding, resource, record_id)
    ):
        return codes.index(text)
    return text


def stored_enumeration(field: str, value: Any) -> Any:
    """``value`` of an enumerated ``field`` as stored: its string, whichever way it came."""
    codes = _CODES[field]
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(codes):
        return codes[value]
    return value


class AccountGenerator:
    """Makes the records of one account; the same seed makes the same records.

    :param seed: the data seed.
    :param now: the end of the generated history.
    :param rng: the random source (a fresh one from ``seed`` by default).
    """

    def __init__(self, seed: int, now: dt.datetime, rng: random.Random | None = None) -> None:
        self.seed = seed
        self.now = now
        self.rng = rng or random.Random(seed)
        self.users: list[dict[str, Any]] = []
        self.user_numbers: dict[int, str] = {}
        self.tracking_numbers: list[str] = []

    # --- people and numbers -------------------------------------------------------------

    def external_number(self) -> str:
        prefix, length = self.rng.choice(_EXTERNAL_NUMBERS)
        return prefix + "".join(str(self.rng.randrange(10)) for _ in range(length - len(prefix)))

    def make_users(self, count: int = 6) -> list[dict[str, Any]]:
        created = self.now - dt.timedelta(days=HISTORY_DAYS + 200)
        for index in range(count):
            user_id = 1001 + index
            first, last = _FIRST_NAMES[index % 8], _LAST_NAMES[(index * 3) % 8]
            self.users.append(
                {
                    "id": user_id, "active": True, "created_at": api_time(created),
                    "customer": CUSTOMER_ID,
                    "email": f"{first.lower()}.{last.lower()}@sandbox.voipstudio.test",
                    "first_name": first, "is_initial": index == 0, "is_root": index == 0,
                    "last_name": last, "roles": "admin" if index == 0 else "user",
                    "two_factor_auth": 0, "visited_apps": "web", "customer_id": CUSTOMER_ID,
                }
            )  # fmt: skip
            self.user_numbers[user_id] = f"4420380{40000 + index * 111:05d}"
        return self.users

    def set_users(self, users: list[dict[str, Any]]) -> None:
        self.users = users
        for index, user in enumerate(users):
            self.user_numbers[user["id"]] = f"4420380{40000 + index * 111:05d}"

    def make_calltracking(self, count: int, first_id: int = 1) -> list[dict[str, Any]]:
        rows = []
        for offset in range(count):
            number = f"4420399{10000 + offset * 7:05d}"
            self.tracking_numbers.append(number)
            target = self.rng.choice(self.users)
            created = self.now - dt.timedelta(days=HISTORY_DAYS + 30 - offset)
            rows.append(
                {
                    "id": first_id + offset, "channels": 4, "cli_hide": False, "cli_prefix": 0,
                    "created_at": api_time(created), "e164": number, "esc_enabled": False,
                    "fax_email": "", "fax_enabled": False, "flag": 0, "has_fax_password": False,
                    "info": f"Campaign {offset + 1}", "name": f"Tracking {offset + 1}",
                    "rate": 0.01, "sms_email": "", "sms_enabled": False, "status": 1,
                    "target_id": target["id"], "target_type": 1, "tel_verified": True,
                    "uri": f"sip:{number}@sip.voipstudio.sandbox",
                }
            )  # fmt: skip
        return rows

    # --- calls --------------------------------------------------------------------------

    def cdr(
        self,
        cdr_id: int,
        when: dt.datetime,
        *,
        call_type: str | None = None,
        recorded: bool = False,
        user_id: int | None = None,
    ) -> dict[str, Any]:
        """One call detail record; ``recorded`` keeps the call short enough for a small MP3."""
        rng = self.rng
        call_type = call_type or rng.choices("OIM", (40, 40, 20))[0]
        user = next((u for u in self.users if u["id"] == user_id), None) or rng.choice(self.users)
        own = self.user_numbers[user["id"]]
        other = self.external_number()
        if call_type == "O":
            src, dst, destination = own, other, "out"
        else:
            src = other
            tracked = self.tracking_numbers and rng.random() < 0.1
            dst = rng.choice(self.tracking_numbers) if tracked else own
            destination = rng.choice(("in",) * 12 + ("webcall", "callmeback"))
        if call_type == "M":
            billsec, disposition = 0, rng.choice(("VM", "VM", "VM", "RINGING"))
        else:
            billsec = rng.randint(5, 80) if recorded else rng.randint(5, 1800)
            disposition = "CONNECTED"
        rate = round(rng.choice((0.01, 0.02, 0.05, 0.12)), 4) if call_type == "O" else 0.0
        ring = rng.randint(2, 25)
        return {
            "id": cdr_id, "billsec": billsec, "call_id": cdr_call_id(self.seed, cdr_id),
            "calldate": api_time(when),
            "charge": round(rate * billsec / 60, 4), "clid": src,
            "context": rng.choice(_CONTEXTS_WEIGHTED), "destination": destination,
            "disposition": disposition, "dst": dst, "dst_codec": rng.choice(_CODECS),
            "dst_id": f"ext-{user['id']}" if call_type != "O" else None,
            "dst_name": f"{user['first_name']} {user['last_name']}" if call_type != "O" else dst,
            "dst_ua": rng.choice(_AGENTS), "duration": billsec + ring, "info": "",
            "live_id": 5_000_000 + cdr_id * 3, "parent_live_id": None,
            "rate": rate, "server_id": rng.randint(1, 4),
            "sip_endpoint_id": 2000 + user["id"] % 100, "src": src,
            "src_codec": rng.choice(_CODECS),
            "src_id": f"ext-{user['id']}" if call_type == "O" else None,
            "src_name": f"{user['first_name']} {user['last_name']}" if call_type == "O" else src,
            "src_ua": rng.choice(_AGENTS), "t_cause": "16" if call_type != "M" else "19",
            "type": call_type, "user_id": user["id"],
            "labels": self._labels("cdrs", cdr_id),
            "metadata": "" if cdr_id % 3 else f"crm:{_hex(self.seed, 'crm', cdr_id)[:10]}",
            "nb_notes": 0,
        }  # fmt: skip

    def _labels(self, resource: str, record_id: int) -> list[str]:
        # From a hash, not from ``rng``: the rest of the account stays as it was generated.
        code = int(_hex(self.seed, "labels", resource, record_id)[:4], 16)
        return [label for bit, label in enumerate(_LABELS) if code >> (bit * 3) & 7 == 0]

    def monitor(self, monitor_id: int, cdr: dict[str, Any], size: int | None = None) -> dict:
        duration = cdr["billsec"] or 1
        if size is None:
            size = duration * VOICE_BYTES_PER_SECOND + self.rng.randint(100, 900)
        return {
            "id": monitor_id, "called": cdr["dst"], "caller": cdr["src"],
            "context": cdr["context"], "dst_id": cdr["dst_id"], "dst_name": cdr["dst_name"],
            "duration": duration, "live_id": cdr["live_id"],
            "sentiment": self.rng.choice(_SENTIMENTS),
            "sip_endpoint_id": cdr["sip_endpoint_id"], "size": size, "src_id": cdr["src_id"],
            "summary": f"Call between {cdr['src']} and {cdr['dst']}.",
            "timestamp": cdr["calldate"], "transcript": "Hello, thank you for calling.",
            "type": cdr["type"], "user_id": cdr["user_id"],
            "bitrate": 8000, "cdr_id": cdr["id"], "channels": 1, "created_at": cdr["calldate"],
            "format": "mp3", "labels": self._labels("monitors", monitor_id), "language": "en-GB",
        }  # fmt: skip

    def mediasession(self, session_id: int, cdr: dict[str, Any]) -> dict[str, Any]:
        started = dt.datetime.strptime(cdr["calldate"], DATE_FORMAT)
        ended = started + dt.timedelta(seconds=cdr["duration"])
        return {
            "id": session_id, "call_id": sip_call_id(self.seed, cdr["id"]),
            "created_at": cdr["calldate"],
            "dst_id": cdr["dst_id"], "dst_ua": cdr["dst_ua"], "duration": cdr["billsec"],
            "src_id": cdr["src_id"], "src_ua": cdr["src_ua"], "status": "closed",
            "type": "recording", "updated_at": ended.strftime(DATE_FORMAT),
            "user": cdr["user_id"],
        }  # fmt: skip

    def msdr(self, msdr_id: int, cdr: dict[str, Any], session_id: int) -> dict[str, Any]:
        return {
            "id": msdr_id, "call_id": sip_call_id(self.seed, cdr["id"]),
            "created_at": cdr["calldate"],
            "dst": cdr["dst"], "dst_id": cdr["dst_id"], "dst_ua": cdr["dst_ua"],
            "duration": cdr["billsec"], "media_session_id": session_id, "src": cdr["src"],
            "src_id": cdr["src_id"], "src_ua": cdr["src_ua"], "t_cause": cdr["t_cause"],
            "type": "recording", "user_id": cdr["user_id"],
        }  # fmt: skip

    def voicemessage(self, message_id: int, cdr: dict[str, Any]) -> dict[str, Any]:
        origtime = dt.datetime.strptime(cdr["calldate"], DATE_FORMAT) + dt.timedelta(
            seconds=cdr["duration"]
        )
        old = (self.now.replace(tzinfo=None) - origtime).days > 30
        return {
            "id": message_id, "caller": cdr["src"], "callerid": cdr["clid"],
            "dialled": cdr["dst"], "duration": self.rng.randint(5, 60),
            "extension_id": 3000 + cdr["user_id"] % 100,
            "folder": "Old" if old or self.rng.random() < 0.3 else "INBOX",
            "is_new": not old and self.rng.random() < 0.6, "live_id": cdr["live_id"],
            "origtime": origtime.strftime(DATE_FORMAT), "parent_live_id": None,
            "transcript": "Please call me back.",
        }  # fmt: skip

    def note(self, note_id: int, cdr: dict[str, Any]) -> dict[str, Any]:
        created = dt.datetime.strptime(cdr["calldate"], DATE_FORMAT) + dt.timedelta(minutes=5)
        return {
            "id": note_id, "cdr_id": cdr["id"], "created_at": created.strftime(DATE_FORMAT),
            "note": self.rng.choice(("Follow up", "Sent quote", "Wrong number", "VIP")),
            "user_id": cdr["user_id"],
        }  # fmt: skip

    # --- other history ------------------------------------------------------------------

    def chat(self, chat_id: int, when: dt.datetime) -> dict[str, Any]:
        rng = self.rng
        return {
            "id": chat_id, "created_at": api_time(when), "customer_id": CUSTOMER_ID,
            "duration": rng.randint(30, 1200), "operator_id": rng.choice(self.users)["id"],
            "operator_ua": rng.choice(_AGENTS), "state": rng.randint(1, 3),
            "visitor_city": rng.choice(("London", "Brussels", "Berlin", "New York")),
            "visitor_country": rng.choice(("GB", "BE", "DE", "US")),
            "visitor_email": f"visitor{chat_id}@example.com", "visitor_geo": "",
            "visitor_id": _hex(self.seed, "visitor", chat_id)[:12],
            "visitor_ip": f"203.0.113.{chat_id % 250 + 1}",
            "visitor_name": f"Visitor {chat_id}", "visitor_referer": "https://example.com/",
            "visitor_ua": "Mozilla/5.0", "website_id": 5977,
        }  # fmt: skip

    def chatmsg(self, message_id: int, chat: dict[str, Any], offset: int) -> dict[str, Any]:
        created = dt.datetime.strptime(chat["created_at"], DATE_FORMAT) + dt.timedelta(
            seconds=offset
        )
        text = self.rng.choice(("Hello", "How can I help?", "I need an invoice", "Thanks!"))
        return {
            "id": message_id, "chat_id": chat["id"],
            "created_at": created.strftime(DATE_FORMAT), "message": text,
        }  # fmt: skip

    def sms(self, sms_id: int, when: dt.datetime) -> dict[str, Any]:
        rng = self.rng
        user = rng.choice(self.users)
        outbound = rng.random() < 0.5
        own, other = self.user_numbers[user["id"]], self.external_number()
        return {
            "id": sms_id, "created_at": api_time(when), "from": own if outbound else other,
            "message": rng.choice(("See you at 3", "Your code is 1234", "Call me")),
            "result": rng.choice(("delivered",) * 6 + ("failed", "queued")),
            "to": other if outbound else own, "type": "O" if outbound else "I",
            "user_id": user["id"],
        }  # fmt: skip

    def statement(self, statement_id: int, month_start: dt.datetime) -> dict[str, Any]:
        return {
            "id": statement_id,
            "created_at": api_time(month_start),
            "amount": round(self.rng.uniform(20, 400), 2),
            "description": f"Statement {month_start:%B %Y}",
        }

    def moment(self) -> dt.datetime:
        """A random moment within the history window."""
        return self.now - dt.timedelta(seconds=self.rng.randint(60, HISTORY_DAYS * 86400))


def generate(
    seed: int, scale: float = 1, now: dt.datetime | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Every table's rows for ``seed``: the same seed and ``now`` give the same rows."""
    now = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    account = AccountGenerator(seed, now)
    rng = account.rng
    data: dict[str, list[dict[str, Any]]] = {
        "users": account.make_users(),
        "calltracking": [],
    }
    data["calltracking"] = account.make_calltracking(5 + int(scale) // 50)
    for table in ("cdrs", "monitors", "msdrs", "mediasessions", "voicemessages", "notes"):
        data[table] = []
    call_times = sorted(account.moment() for _ in range(max(1, int(CDRS_PER_SCALE * scale))))
    for cdr_id, when in enumerate(call_times, start=1):
        call_type = rng.choices("OIM", (40, 40, 20))[0]
        recorded = call_type != "M" and rng.random() < RECORDED_SHARE
        cdr = account.cdr(cdr_id, when, call_type=call_type, recorded=recorded)
        data["cdrs"].append(cdr)
        if recorded:
            session_id = len(data["mediasessions"]) + 1
            data["monitors"].append(account.monitor(len(data["monitors"]) + 1, cdr))
            data["mediasessions"].append(account.mediasession(session_id, cdr))
            data["msdrs"].append(account.msdr(len(data["msdrs"]) + 1, cdr, session_id))
        if cdr["disposition"] == "VM":  # the caller reached voicemail
            data["voicemessages"].append(account.voicemessage(len(data["voicemessages"]) + 1, cdr))
        if rng.random() < NOTED_SHARE:
            data["notes"].append(account.note(len(data["notes"]) + 1, cdr))
            cdr["nb_notes"] = 1
    data["chats"], data["chatmsgs"] = [], []
    for chat_id, when in enumerate(
        sorted(account.moment() for _ in range(max(1, int(CHATS_PER_SCALE * scale)))), start=1
    ):
        chat = account.chat(chat_id, when)
        data["chats"].append(chat)
        for offset in sorted(rng.sample(range(5, 900), rng.randint(2, 8))):
            data["chatmsgs"].append(account.chatmsg(len(data["chatmsgs"]) + 1, chat, offset))
    data["sms"] = [
        account.sms(sms_id, when)
        for sms_id, when in enumerate(
            sorted(account.moment() for _ in range(max(1, int(SMS_PER_SCALE * scale)))), start=1
        )
    ]
    first_month = (now - dt.timedelta(days=HISTORY_DAYS)).replace(day=1, hour=0, minute=0, second=0)
    months, month = [], first_month
    while month < now:
        months.append(month)
        month = (month + dt.timedelta(days=32)).replace(day=1)
    data["statements"] = [account.statement(i, m) for i, m in enumerate(months, start=1)]
    return data


#: Enumerated fields per resource, as ``GET /<resource>/dictionaries`` answers them.
DICTIONARIES: dict[str, dict[str, dict[str, str]]] = {
    "cdrs": {
        "type": {"O": "Outbound", "I": "Inbound", "M": "Missed"},
        "disposition": {
            "INITIAL": "Initial",
            "RINGING": "Ringing",
            "CONNECTED": "Connected",
            "ON_HOLD": "On hold",
            "VM": "Voicemail",
        },  # fmt: skip
        "destination": {
            "in": "Inbound",
            "out": "Outbound",
            "webcall": "Web call",
            "callmeback": "Call me back",
        },  # fmt: skip
        "context": {
            "PSTN_CALL": "PSTN call",
            "USER_LOCAL": "Local call",
            "IVR": "IVR",
            "FOLLOW_ME": "Follow me",
            "TEST_CALL": "Test call",
        },  # fmt: skip
    },
    "msdrs": {
        "type": {"recording": "Call recording", "conference": "Conference", "ivr": "IVR"},
        "t_cause": {"16": "Normal clearing", "17": "User busy", "19": "No answer"},
    },
    "sms": {
        "type": {"O": "Outbound", "I": "Inbound"},
        "result": {"delivered": "Delivered", "failed": "Failed", "queued": "Queued"},
    },
    "mediasessions": {
        "type": {"recording": "Call recording", "conference": "Conference", "ivr": "IVR"},
        "status": {"open": "Open", "closed": "Closed"},
    },
}
#: Each enumerated field's values in dictionary order: an integer is a position in it.
_CODES = {name: list(values) for name, values in DICTIONARIES["cdrs"].items()}
