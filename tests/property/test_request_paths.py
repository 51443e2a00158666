"""Generated spellings of request paths: no DELETE of a whole collection ever leaves the hook.

A spelling is generated from the target a lenient server would read it as (dot segments,
percent-encoding in any case and depth, ``;params``, doubled slashes, backslashes,
fragments, queries, trailing slashes), so each test knows the truth it checks: a spelling
of a collection or of a place outside the base URL is refused, a spelling of ids is sent
as exactly those ids. What is sent is read from requests' own preparation of the URL and,
over HTTP, from the sandbox's request log.
"""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

import pytest
import requests
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from voipstudio_provider.endpoints import ENDPOINTS, Shape
from voipstudio_provider.hooks.paths import request_url, resolve_path
from voipstudio_provider.hooks.voipstudio import VoIPstudioHook

BASE = "http://api.test/v1.1/voipstudio"
#: Every path a whole-collection DELETE or a delete by ids is sent to, below the base URL.
COLLECTIONS = sorted(
    {
        e.path.removesuffix("/{ids}")
        for e in ENDPOINTS
        if e.shape in (Shape.DELETE_ALL, Shape.DELETE_IDS)
    }
)
ID_COLLECTIONS = sorted(
    e.path.removesuffix("/{ids}") for e in ENDPOINTS if e.shape is Shape.DELETE_IDS
)


def _encode(char: str, upper: bool, depth: int) -> str:
    code = f"%{ord(char):02X}" if upper else f"%{ord(char):02x}"
    for _ in range(depth - 1):
        code = "%25" + code[1:]
    return code


@st.composite
def spelled_segment(draw, segment: str) -> str:
    """``segment`` with some of its characters percent-encoded (once or more, any case)
    and perhaps a ``;param``."""
    out = []
    for char in segment:
        if draw(st.integers(0, 3)) == 0:
            out.append(_encode(char, draw(st.booleans()), draw(st.integers(1, 3))))
        else:
            out.append(char)
    if draw(st.integers(0, 4)) == 0:
        out.append(";" + draw(st.sampled_from(["1", "x=y", "", "jsessionid=2"])))
    return "".join(out)


@st.composite
def separator(draw) -> str:
    return draw(st.sampled_from(["/", "/", "/", "//", "\\", "%2F", "%2f", "%5C", "%252F", "/./"]))


@st.composite
def detour(draw) -> str:
    """A stretch that leads nowhere: ``.``, or a segment and then ``..`` back out of it."""
    dot = draw(spelled_segment("."))
    dots = draw(spelled_segment(".."))
    name = draw(st.sampled_from(["x", "monitors", "1", "voipstudio", "a;b"]))
    return draw(st.sampled_from([dot, f"{name}/{dots}", f"{name}{draw(separator())}{dots}"]))


@st.composite
def spelling(draw, segments: list[str], *, back_into_base: bool = True) -> str:
    """A spelling a lenient server reads as ``BASE/`` + ``segments`` joined by slashes
    (below the current directory only, without ``back_into_base``)."""
    prefixes = ["", "/", "./"]
    if back_into_base:
        prefixes += ["../voipstudio/", "../../v1.1/voipstudio/", ".%2E/voipstudio/"]
    prefix = draw(st.sampled_from(prefixes))
    parts = []
    for segment in segments:
        if draw(st.booleans()):
            parts.append(draw(detour()))
        parts.append(draw(spelled_segment(segment)))
    text = parts[0]
    for part in parts[1:]:
        text += draw(separator()) + part
    suffix = draw(
        st.sampled_from(["", "", "/", "/.", "?confirm=1", "#all", "%3Fx", "%23y", "/%2e"])
    )
    return prefix + text + suffix


def collection_target():
    return st.sampled_from(COLLECTIONS).flatmap(
        lambda path: st.sampled_from(
            [path.strip("/"), path.strip("/").upper(), path.strip("/").title()]
        )
    )


@st.composite
def outside_spelling(draw) -> str:
    """A spelling whose target is outside the base path: another version, or above it."""
    target = draw(st.sampled_from(COLLECTIONS + ["/cdrs/1"])).strip("/")
    up = draw(
        st.sampled_from(
            [
                "../v1.2/voipstudio/",
                "../../v1.2/voipstudio/",
                "../../../",
                "../",
                "%2E%2E/%2e%2E/",
                "..\\..\\",
            ]
        )
    )
    return up + draw(spelling(target.split("/"), back_into_base=False))


def _sent_path(url: str) -> str:
    """The path requests puts on the wire for ``url``."""
    return urlsplit(requests.Request("DELETE", url).prepare().url).path


def _server_reads_a_collection(path: str) -> bool:
    """What a lenient server would do with a canonical path: any case, slash at the end."""
    normal = path.lower().rstrip("/")
    if normal in COLLECTIONS:
        return True
    parent, _, last = normal.rpartition("/")
    return parent in ID_COLLECTIONS and not re.fullmatch(r"[1-9][0-9]*(,[1-9][0-9]*)*", last)


@given(collection_target().flatmap(lambda t: spelling(t.split("/"))))
@example("../voipstudio/voicemessages")
@example("%2E%2E/voipstudio/monitors")
@example("voicemessages;1")
@example("monitors/1/..")
@example("monitors%2F1%2F%2E%2E")
@example("monitors/%252e%252e/chatmsgs")
@example("monitors\\..\\voicemessages")
@example("voicemessages#/1")
@example("voicemessages%3F/1")
def test_a_collection_in_any_spelling_is_refused(spelled):
    with pytest.raises(ValueError):
        request_url(BASE, "DELETE", resolve_path(BASE, spelled)[0])
    with pytest.raises(ValueError):
        request_url(BASE, "DELETE", spelled)


@given(outside_spelling())
@example("../../v1.2/voipstudio/voicemessages")
@example("//evil.example/v1.1/voipstudio/monitors/1")
@example("http://api.test/v1.1/voipstudio/monitors/1")
@example("%2F%2Fevil.example/monitors/1")
@example("\\\\evil.example\\monitors\\1")
def test_a_place_outside_the_base_url_is_refused(spelled):
    with pytest.raises(ValueError):
        resolve_path(BASE, spelled)


@given(
    st.sampled_from(ID_COLLECTIONS),
    st.lists(st.integers(1, 10**9), min_size=1, max_size=4, unique=True),
    st.data(),
)
def test_ids_in_any_spelling_are_sent_as_exactly_those_ids(collection, ids, data):
    ids_text = ",".join(map(str, ids))
    spelled = data.draw(spelling([collection.strip("/"), ids_text]))
    url = request_url(BASE, "DELETE", resolve_path(BASE, spelled)[0])
    assert url == f"{BASE}{collection}/{ids_text}"
    assert _sent_path(url) == f"/v1.1/voipstudio{collection}/{ids_text}"


#: Pieces of paths, good and bad, from which any text is assembled.
PIECES = [
    "..",
    ".",
    "/",
    "//",
    "\\",
    "%2e",
    "%2E",
    "%252e",
    "%2f",
    "%5c",
    "%25",
    ";x",
    "?",
    "#",
    "voicemessages",
    "monitors",
    "chatmsgs",
    "cdrs",
    "statements",
    "1",
    "2",
    ",",
    "0",
    "voipstudio",
    "v1.1",
    "v1.2",
    "http:",
    "evil.example",
    "%00",
    " ",
    "%20",
    "~",
    "-",
    "%3F",
]


@given(st.lists(st.sampled_from(PIECES), max_size=12).map("".join))
@example("monitors//../voicemessages")
@example("monitors/1//..")
def test_whatever_is_sent_is_what_was_judged_and_never_a_collection(spelled):
    try:
        url = request_url(BASE, "DELETE", spelled)
    except ValueError:
        return
    path = urlsplit(url).path
    assert url == BASE + path.removeprefix("/v1.1/voipstudio")
    assert path.startswith("/v1.1/voipstudio/")
    assert _sent_path(url) == path, "requests would send another path than the one judged"
    assert not _server_reads_a_collection(path.removeprefix("/v1.1/voipstudio"))
    # Judging again finds the same: the judged form is a fixed point.
    assert request_url(BASE, "DELETE", path.removeprefix("/v1.1/voipstudio")) == url


# -- over HTTP: the sandbox's log and counts ------------------------------------------------


@pytest.fixture
def delete_hook(sandbox_server, monkeypatch):
    connection = {"conn_type": "voipstudio", "host": sandbox_server.base_url}
    connection["password"] = sandbox_server.token
    monkeypatch.setenv("AIRFLOW_CONN_VOIPSTUDIO_PATHS", json.dumps(connection))
    sandbox_server.control("POST", "reset")
    hook = VoIPstudioHook("voipstudio_paths", max_attempts=1)
    hook.method = "DELETE"
    yield hook
    hook.close()


#: Spellings sent to the sandbox per run: a bounded number in ``make test``, the profile's
#: own in ``make fuzz``.
HTTP_EXAMPLES = 40 if settings.get_current_profile_name() == "ci" else settings().max_examples


@settings(max_examples=HTTP_EXAMPLES, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(collection_target().flatmap(lambda t: spelling(t.split("/"))), outside_spelling()))
@example("../voipstudio/voicemessages")
@example("%2E%2E/voipstudio/monitors")
@example("voicemessages;1")
def test_no_delete_of_a_collection_reaches_the_sandbox(delete_hook, sandbox_server, spelled):
    before = sandbox_server.control("GET", "stats")
    sandbox_server.control("DELETE", "requests")
    with pytest.raises(ValueError):
        delete_hook.run(spelled)
    assert sandbox_server.control("GET", "requests")["data"] == []
    assert sandbox_server.control("GET", "stats") == before
