"""Binary bodies of the sandbox: MP3 recordings, PCAP captures, SIP traces and CSV exports.

Every body is a deterministic function of the seed and the record, and every generator
yields chunks so that a recording of a gigabyte never sits in memory. The byte count of
each body is known before the first chunk is sent, because the API declares an exact
``Content-Length`` (and a monitor's ``size`` is the count the client checks).
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from voipstudio_provider.endpoints import DATE_FORMAT

CHUNK_SIZE = 64 * 1024
SIP_DOMAIN = "sip.voipstudio.sandbox"


@dataclass(frozen=True)
class Body:
    """A streamed body: its exact length and an iterator of its chunks."""

    length: int
    chunks: Iterator[bytes]


def _digest(*parts: object) -> bytes:
    return hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()


# --- MP3 -------------------------------------------------------------------------------

# (MPEG version bits, sample-rate index, sample rate, coefficient, side info, bitrates kbps)
# Layer III frame length is coefficient * bitrate / sample_rate bytes (no padding).
_MPEG_MODES = (
    (0b00, 2, 8000, 72, 9, (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)),
    (0b11, 1, 48000, 144, 17, (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)),
)


@dataclass(frozen=True)
class _FrameFormat:
    version_bits: int
    rate_index: int
    bitrate_index: int
    frame_bytes: int
    side_info: int

    def header(self) -> bytes:
        # sync, version, layer III, no CRC | bitrate, rate, no padding | mono
        word = (0x7FF << 21) | (self.version_bits << 19) | (0b01 << 17) | (1 << 16)
        word |= (self.bitrate_index << 12) | (self.rate_index << 10) | (0b11 << 6)
        return struct.pack(">I", word)


def _frame_format(size: int, duration: float) -> _FrameFormat:
    """The standard bitrate whose byte rate comes closest to ``size`` over ``duration``."""
    target_kbps = size * 8 / max(duration, 0.1) / 1000
    best = None
    for version_bits, rate_index, rate, coefficient, side_info, bitrates in _MPEG_MODES:
        for index, kbps in enumerate(bitrates, start=1):
            distance = abs(kbps - target_kbps)
            if best is None or distance < best[0]:
                frame_bytes = coefficient * kbps * 1000 // rate
                best = (distance, _FrameFormat(version_bits, rate_index, index, frame_bytes,
                                               side_info))  # fmt: skip
    assert best is not None
    return best[1]


#: Byte rate of the sandbox's voice MP3 (8 kbit/s, 8 kHz, mono): sizes follow durations.
VOICE_BYTES_PER_SECOND = 1000


def _id3_tag(length: int, label: str) -> bytes:
    """An ID3v2.4 tag of exactly ``length`` bytes (at least 10): a TXXX frame, then padding."""
    body_length = length - 10
    text = b"\x03voipstudio-sandbox\x00" + label.encode()
    frame = b""
    if body_length >= len(text) + 10:
        frame = b"TXXX" + _syncsafe(len(text)) + b"\x00\x00" + text
    body = frame + b"\x00" * (body_length - len(frame))
    return b"ID3\x04\x00\x00" + _syncsafe(body_length) + body


def _syncsafe(value: int) -> bytes:
    return bytes((value >> shift) & 0x7F for shift in (21, 14, 7, 0))


def mp3_body(size: int, duration: float, label: str) -> Body:
    """An MPEG Layer III file of exactly ``size`` bytes lasting about ``duration`` seconds.

    The frames are silent; an ID3v2 tag at the front takes up the bytes a whole frame
    cannot, so the length is exact for any ``size`` of at least a frame plus ten bytes.

    :param size: the byte count of the file.
    :param duration: the wanted playing time in seconds.
    :param label: identifies the record; it changes the bytes (and so the checksum).
    """
    fmt = _frame_format(size, duration)
    frames = max(0, (size - 10) // fmt.frame_bytes)
    tag_length = size - frames * fmt.frame_bytes
    payload_length = fmt.frame_bytes - 4 - fmt.side_info
    pattern = (_digest("mp3", label) * (payload_length // 32 + 1))[:payload_length]
    frame = fmt.header() + b"\x00" * fmt.side_info + pattern
    per_chunk = max(1, CHUNK_SIZE // fmt.frame_bytes)

    def chunks() -> Iterator[bytes]:
        if tag_length >= 10:
            yield _id3_tag(tag_length, label)
        else:  # only when size is below ten bytes: no room for anything valid
            yield b"\x00" * tag_length
        left = frames
        block = frame * per_chunk
        while left >= per_chunk:
            yield block
            left -= per_chunk
        if left:
            yield frame * left

    return Body(size, chunks())


# --- SIP dialogue, PCAP and trace ---------------------------------------------------------


@dataclass(frozen=True)
class SipPacket:
    """One SIP message of a call, with where and when it travelled."""

    timestamp: float
    src_ip: str
    dst_ip: str
    payload: bytes


def _ip_for(label: str, prefix: str) -> str:
    digest = _digest("ip", prefix, label)
    return f"{prefix}.{digest[0]}.{digest[1]}.{1 + digest[2] % 254}"


def sip_dialogue(
    call_id: str, caller: str, callee: str, started: str, duration: int, label: str
) -> list[SipPacket]:
    """The SIP messages of a connected call: INVITE, 100, 180, 200, ACK, BYE, 200.

    :param call_id: the SIP Call-ID.
    :param caller: the calling number (in ``From``).
    :param callee: the called number (in ``To``).
    :param started: when the call started, ``YYYY-MM-DD HH:MM:SS`` UTC.
    :param duration: seconds between the answer and the hang-up.
    :param label: identifies the record (tags and addresses derive from it).
    """
    start = dt.datetime.strptime(started, DATE_FORMAT).replace(tzinfo=dt.UTC)
    t0 = start.timestamp()
    a_ip, b_ip = _ip_for(label, "10"), _ip_for(label, "185")
    digest = _digest("sip", label).hex()
    from_tag, to_tag, branch = digest[:10], digest[10:20], digest[20:32]
    from_uri = f"<sip:{caller}@{SIP_DOMAIN}>;tag={from_tag}"
    to_uri = f"<sip:{callee}@{SIP_DOMAIN}>"

    def message(first_line: str, cseq: str, to_tagged: bool, via_ip: str) -> bytes:
        lines = [
            first_line,
            f"Via: SIP/2.0/UDP {via_ip}:5060;branch=z9hG4bK{branch}",
            f"From: {from_uri}",
            f"To: {to_uri}{';tag=' + to_tag if to_tagged else ''}",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq}",
            "User-Agent: VoIPstudio-Sandbox",
            "Content-Length: 0",
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    request_uri = f"sip:{callee}@{SIP_DOMAIN}"
    answered = t0 + 2.0
    hangup = answered + max(0, duration)
    steps = [
        (t0, a_ip, b_ip, message(f"INVITE {request_uri} SIP/2.0", "1 INVITE", False, a_ip)),
        (t0 + 0.05, b_ip, a_ip, message("SIP/2.0 100 Trying", "1 INVITE", False, a_ip)),
        (t0 + 0.4, b_ip, a_ip, message("SIP/2.0 180 Ringing", "1 INVITE", True, a_ip)),
        (answered, b_ip, a_ip, message("SIP/2.0 200 OK", "1 INVITE", True, a_ip)),
        (answered + 0.05, a_ip, b_ip, message(f"ACK {request_uri} SIP/2.0", "1 ACK", True, a_ip)),
        (hangup, a_ip, b_ip, message(f"BYE {request_uri} SIP/2.0", "2 BYE", True, a_ip)),
        (hangup + 0.05, b_ip, a_ip, message("SIP/2.0 200 OK", "2 BYE", True, a_ip)),
    ]
    return [SipPacket(t, src, dst, payload) for t, src, dst, payload in steps]


def _checksum(header: bytes) -> int:
    total = sum(struct.unpack(f">{len(header) // 2}H", header))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _ipv4(address: str) -> bytes:
    return bytes(int(part) for part in address.split("."))


def _frame(packet: SipPacket, ident: int) -> bytes:
    udp = struct.pack(">HHHH", 5060, 5060, 8 + len(packet.payload), 0) + packet.payload
    ip = struct.pack(
        ">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), ident, 0x4000, 64, 17, 0,
        _ipv4(packet.src_ip), _ipv4(packet.dst_ip),
    )  # fmt: skip
    ip = ip[:10] + struct.pack(">H", _checksum(ip)) + ip[12:]
    ethernet = b"\x02\x00\x00\x00\x00\x01" + b"\x02\x00\x00\x00\x00\x02" + b"\x08\x00"
    return ethernet + ip + udp


def pcap_body(packets: Iterable[SipPacket]) -> Body:
    """A libpcap file (Ethernet link type) of ``packets`` sent as UDP over IPv4."""
    parts = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for ident, packet in enumerate(packets, start=1):
        frame = _frame(packet, ident)
        seconds = int(packet.timestamp)
        micros = int(round((packet.timestamp - seconds) * 1_000_000))
        parts.append(struct.pack("<IIII", seconds, micros, len(frame), len(frame)) + frame)
    data = b"".join(parts)
    return Body(len(data), iter([data]))


def trace_body(packets: Iterable[SipPacket]) -> Body:
    """The SIP messages as text, each under a line saying when and between whom."""
    blocks = []
    for packet in packets:
        moment = dt.datetime.fromtimestamp(packet.timestamp, dt.UTC)
        stamp = moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"
        head = f"{stamp} UDP {packet.src_ip}:5060 -> {packet.dst_ip}:5060\n"
        blocks.append(head.encode() + packet.payload.replace(b"\r\n", b"\n"))
    data = b"".join(blocks)
    return Body(len(data), iter([data]))


# --- CSV -------------------------------------------------------------------------------


def csv_chunks(fields: tuple[str, ...], row_batches: Iterable[list[dict]]) -> Iterator[bytes]:
    """A CSV header of ``fields`` then one line per row, a batch of rows per chunk."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(fields)
    yield buffer.getvalue().encode()
    for batch in row_batches:
        buffer.seek(0)
        buffer.truncate()
        for row in batch:
            writer.writerow(["" if row.get(f) is None else _csv_value(row[f]) for f in fields])
        if batch:
            yield buffer.getvalue().encode()


def _csv_value(value: object) -> object:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return value
