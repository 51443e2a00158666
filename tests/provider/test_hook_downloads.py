"""Downloads: streamed, counted, hashed, checked against Content-Length and the record."""

from __future__ import annotations

import csv
import hashlib
import io
import socketserver
import threading

import pytest
from voipstudio_provider.endpoints import RESOURCES, parse_api_datetime
from voipstudio_provider.exceptions import (
    VoIPstudioIncompleteDownloadError,
    VoIPstudioUnexpectedContentError,
)

MP3_PATHS = "/v1.1/voipstudio/monitors/*.mp3"


class _OneWayStream(io.RawIOBase):
    """A writable stream that cannot be rewound, like a pipe."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, chunk) -> int:
        self.data += chunk
        return len(chunk)


@pytest.fixture
def monitor(truth) -> dict:
    return truth("monitors")[0]


def test_monitor_download_matches_its_size(hook, monitor):
    sink = io.BytesIO()
    result = hook.download(
        "download_monitor_mp3", monitor["id"], sink, expected_size=monitor["size"]
    )
    assert result.size == monitor["size"] == len(sink.getvalue())
    assert result.sha256 == hashlib.sha256(sink.getvalue()).hexdigest()
    assert result.content_type == "audio/mpeg"


def test_a_body_of_several_chunks_is_hashed_whole(hook, sandbox):
    size = 3 * 1024 * 1024 + 17
    (monitor_id,) = sandbox.control(
        "POST", "records/monitors", {"count": 1, "fields": {"size": size}}
    )["ids"]
    sink = io.BytesIO()
    result = hook.download("download_monitor_mp3", monitor_id, sink, expected_size=size)
    assert result.size == size == len(sink.getvalue())
    assert result.sha256 == hashlib.sha256(sink.getvalue()).hexdigest()


def test_size_mismatch_with_the_record_raises(hook, monitor, api_requests):
    with pytest.raises(VoIPstudioIncompleteDownloadError) as raised:
        hook.download(
            "download_monitor_mp3", monitor["id"], io.BytesIO(), expected_size=monitor["size"] + 1
        )
    assert raised.value.received == monitor["size"]
    assert raised.value.expected == monitor["size"] + 1
    # The server sent all it announced: asking again would not help.
    assert len(api_requests(".mp3")) == 1


@pytest.mark.parametrize("kind", ["truncate", "drop"])
def test_broken_body_into_a_seekable_file_is_retried(hook, monitor, set_faults, api_requests, kind):
    clean = io.BytesIO()
    hook.download("download_monitor_mp3", monitor["id"], clean)
    set_faults({"path": MP3_PATHS, "kind": kind, "rate": 1, "times": 2})
    sink = io.BytesIO(b"leftover bytes that must go")
    sink.seek(0)
    result = hook.download(
        "download_monitor_mp3", monitor["id"], sink, expected_size=monitor["size"]
    )
    assert sink.getvalue() == clean.getvalue()
    assert result.size == monitor["size"]
    faults = [e["fault"] for e in api_requests(".mp3")]
    assert faults[1:] == [kind, kind, None]


def test_broken_body_into_a_one_way_stream_is_not_retried(hook, monitor, set_faults, api_requests):
    set_faults({"path": MP3_PATHS, "kind": "truncate", "rate": 1})
    with pytest.raises(VoIPstudioIncompleteDownloadError) as raised:
        hook.download("download_monitor_mp3", monitor["id"], _OneWayStream())
    assert raised.value.retryable is True  # a caller that can start over may try again
    assert raised.value.received < monitor["size"]
    assert len(api_requests(".mp3")) == 1


def test_download_gives_up_after_max_attempts(make_hook, monitor, set_faults, api_requests):
    set_faults({"path": MP3_PATHS, "kind": "drop", "rate": 1})
    with pytest.raises(VoIPstudioIncompleteDownloadError):
        make_hook(max_attempts=3).download("download_monitor_mp3", monitor["id"], io.BytesIO())
    assert len(api_requests(".mp3")) == 3


def test_server_error_before_the_body_is_retried_even_for_one_way_streams(
    hook, monitor, set_faults, api_requests
):
    set_faults({"path": MP3_PATHS, "kind": "503", "rate": 1, "times": 1})
    sink = _OneWayStream()
    result = hook.download("download_monitor_mp3", monitor["id"], sink)
    assert result.size == len(sink.data) == monitor["size"]
    assert [e["status"] for e in api_requests(".mp3")] == [503, 200]


def test_user_cdr_export_is_a_csv_of_that_users_cdrs(hook, sandbox, truth):
    sandbox.control("PUT", "settings", {"csv_export": "stream"})  # 202, an export job, otherwise
    cdrs = truth("cdrs")
    user_id = cdrs[0]["user_id"]
    mine = [c for c in cdrs if c["user_id"] == user_id]
    days = sorted(parse_api_datetime(c["calldate"]) for c in mine)
    since, until = days[1], days[-1]
    sink = io.BytesIO()
    result = hook.export_user_cdrs_csv(user_id, sink, since=since, until=until)
    assert result.content_type == "text/csv"
    rows = list(csv.reader(io.StringIO(sink.getvalue().decode())))
    assert tuple(rows[0][: len(RESOURCES["cdrs"].fields)]) == RESOURCES["cdrs"].fields
    expected = sorted(c["id"] for c in mine if since <= parse_api_datetime(c["calldate"]) < until)
    assert sorted(int(r[0]) for r in rows[1:]) == expected


# -- answers that are not the file --------------------------------------------------------


def test_json_answer_instead_of_an_mp3_is_retried(hook, monitor, set_faults, api_requests):
    clean = io.BytesIO()
    hook.download("download_monitor_mp3", monitor["id"], clean)
    set_faults({"path": MP3_PATHS, "kind": "malformed", "rate": 1, "times": 1})
    sink = io.BytesIO()
    result = hook.download(
        "download_monitor_mp3", monitor["id"], sink, expected_size=monitor["size"]
    )
    assert sink.getvalue() == clean.getvalue()
    assert result.size == monitor["size"] and result.content_type == "audio/mpeg"
    assert [e["fault"] for e in api_requests(".mp3")][1:] == ["malformed", None]


def test_json_answer_is_refused_before_writing_even_to_a_one_way_stream(
    hook, monitor, set_faults, api_requests
):
    set_faults({"path": MP3_PATHS, "kind": "malformed", "rate": 1, "times": 1})
    sink = _OneWayStream()
    result = hook.download("download_monitor_mp3", monitor["id"], sink)
    assert result.size == len(sink.data) == monitor["size"]
    assert len(api_requests(".mp3")) == 2


def test_json_answers_every_time_give_up_with_nothing_written(
    make_hook, monitor, set_faults, api_requests, sandbox
):
    set_faults({"path": MP3_PATHS, "kind": "malformed", "rate": 1})
    sink = io.BytesIO()
    with pytest.raises(VoIPstudioUnexpectedContentError) as raised:
        make_hook(max_attempts=3).download("download_monitor_mp3", monitor["id"], sink)
    error = raised.value
    assert error.retryable is True and error.after_retry is True
    assert (error.expected_type, error.received_type) == ("audio/mpeg", "application/json")
    assert "application/json" in str(error) and "expected audio/mpeg" in str(error)
    assert sandbox.token not in str(error)
    assert sink.getvalue() == b""
    assert len(api_requests(".mp3")) == 3


def test_empty_body_is_not_a_recording(make_hook, sandbox, api_requests):
    (monitor_id,) = sandbox.control(
        "POST", "records/monitors", {"count": 1, "fields": {"size": 0}}
    )["ids"]
    with pytest.raises(VoIPstudioIncompleteDownloadError, match="empty body") as raised:
        make_hook(max_attempts=2).download(
            "download_monitor_mp3", monitor_id, io.BytesIO(), expected_size=0
        )
    assert raised.value.retryable is True and raised.value.received == 0
    assert len(api_requests(".mp3")) == 2


# -- bounded downloads: a body longer than it may be stops there ---------------------------


class _GrowthRecorder(io.BytesIO):
    """A seekable sink that remembers the most bytes it ever held."""

    def __init__(self) -> None:
        super().__init__()
        self.peak = 0

    def write(self, chunk) -> int:
        written = super().write(chunk)
        self.peak = max(self.peak, len(self.getbuffer()))
        return written


@pytest.fixture
def large_monitor(sandbox) -> dict:
    size = 3 * 1024 * 1024
    (monitor_id,) = sandbox.control(
        "POST", "records/monitors", {"count": 1, "fields": {"size": size}}
    )["ids"]
    return {"id": monitor_id, "size": size}


def test_a_body_longer_than_the_records_size_is_refused_unwritten(
    hook, large_monitor, api_requests
):
    sink = _GrowthRecorder()
    with pytest.raises(VoIPstudioIncompleteDownloadError) as raised:
        hook.download("download_monitor_mp3", large_monitor["id"], sink, expected_size=1024 * 1024)
    assert "more than the record's size (1048576)" in str(raised.value)
    assert raised.value.retryable is False
    assert sink.peak == 0  # Content-Length told before the first byte
    assert len(api_requests(".mp3")) == 1


def test_a_download_stops_at_the_configured_maximum(hook, large_monitor, api_requests):
    sink = _GrowthRecorder()
    with pytest.raises(VoIPstudioIncompleteDownloadError) as raised:
        hook.download("download_monitor_mp3", large_monitor["id"], sink, max_size=2 * 1024 * 1024)
    assert "more than the configured maximum (2097152)" in str(raised.value)
    assert sink.peak == 0
    assert len(api_requests(".mp3")) == 1


def test_a_body_without_content_length_stops_mid_stream_at_the_hooks_maximum(hook, sandbox, truth):
    """The CSV export, when streamed, is chunked: only counting the bytes can stop it."""
    sandbox.control("PUT", "settings", {"csv_export": "stream"})  # 202, an export job, otherwise
    user_id = truth("cdrs")[0]["user_id"]
    whole = io.BytesIO()
    hook.export_user_cdrs_csv(user_id, whole)
    limit = len(whole.getvalue()) // 2
    assert limit > 0
    hook.max_download_size = limit
    sink = _GrowthRecorder()
    with pytest.raises(VoIPstudioIncompleteDownloadError) as raised:
        hook.export_user_cdrs_csv(user_id, sink)
    assert "more than the configured maximum" in str(raised.value)
    assert 0 < sink.peak <= limit
    assert raised.value.received > limit


class _OverlongServer:
    """A loopback HTTP server whose answers announce ``Content-Length: 1000`` yet send a
    longer chunked body, as a broken proxy may. The sandbox cannot send such an answer (its
    server enforces Content-Length), and ``requests`` reads a chunked body past the header."""

    def __init__(self, body_size: int) -> None:
        self.body_size = body_size
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _handler(self):
        body_size = self.body_size

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                while self.rfile.readline() not in (b"\r\n", b""):
                    pass
                self.wfile.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: audio/mpeg\r\nContent-Length: 1000\r\n"
                    b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                )
                chunk = b"\xff" * 4096
                try:
                    for _ in range(body_size // len(chunk)):
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.write(b"0\r\n\r\n")
                except OSError:
                    pass  # the client stopped reading

        return Handler

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1.1/voipstudio"

    def __enter__(self) -> _OverlongServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_body_longer_than_its_content_length_stops_there(make_hook):
    with _OverlongServer(body_size=1024 * 1024) as server:
        hook = make_hook(host=server.base_url, max_attempts=1)
        sink = _GrowthRecorder()
        with pytest.raises(VoIPstudioIncompleteDownloadError) as raised:
            hook.download("download_monitor_mp3", 1, sink)
    assert "more than Content-Length (1000)" in str(raised.value)
    assert sink.peak <= 1000
