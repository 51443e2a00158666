"""Error classes, the retry policy under the sandbox's faults, and the token kept secret."""

from __future__ import annotations

import http.client
import logging
import ssl

import pytest
import requests
import urllib3
from voipstudio_provider.exceptions import (
    VoIPstudioAccessDeniedError,
    VoIPstudioAuthenticationError,
    VoIPstudioError,
    VoIPstudioFilterError,
    VoIPstudioNotFoundError,
    VoIPstudioRateLimitedError,
    VoIPstudioServerError,
    VoIPstudioValidationError,
)
from voipstudio_provider.hooks.responses import certificate_rejected, error_from_transport

CDRS = "/v1.1/voipstudio/cdrs"
PING = "/v1.1/voipstudio/ping"


def _retry_warnings(capfd) -> list[str]:
    """The hook's retry warnings (Airflow's structured logger writes them to the output)."""
    out, err = capfd.readouterr()
    return [line for line in (out + err).splitlines() if "warning" in line and "retrying" in line]


# -- errors that are not retried ------------------------------------------------------


def test_bad_token_is_an_authentication_error_tried_once(make_hook, api_requests, sandbox):
    bad = "sandbox-token-not-valid"
    with pytest.raises(VoIPstudioAuthenticationError) as raised:
        make_hook(token=bad).list_page("cdrs")
    error = raised.value
    assert error.status_code == 401 and error.retryable is False
    assert "authentication failed: check the API token" in str(error)
    assert bad not in str(error) and bad not in repr(error) and bad not in (error.api_message or "")
    assert len(api_requests("/cdrs")) == 1


def test_other_users_record_is_access_denied(make_hook, users, truth, sandbox, api_requests):
    _, user = users
    foreign = next(m for m in truth("monitors") if m["user_id"] != user["id"])
    own = next(m for m in truth("monitors") if m["user_id"] == user["id"])
    user_hook = make_hook(token=f"{sandbox.token}-user-{user['id']}")
    assert user_hook.get_record("monitors", own["id"])["id"] == own["id"]
    with pytest.raises(VoIPstudioAccessDeniedError) as raised:
        user_hook.get_record("monitors", foreign["id"])
    assert raised.value.status_code == 403 and not raised.value.retryable
    assert f"GET /monitors/{foreign['id']} answered 403" in str(raised.value)
    assert len(api_requests(f"/monitors/{foreign['id']}")) == 1


def test_unknown_record_is_not_found(hook, api_requests):
    with pytest.raises(VoIPstudioNotFoundError) as raised:
        hook.get_record("cdrs", 987654321)
    assert raised.value.status_code == 404
    assert len(api_requests("/cdrs/987654321")) == 1


def test_validation_error_keeps_the_field_messages(hook, truth, api_requests):
    voicemessage_id = truth("voicemessages")[0]["id"]
    with pytest.raises(VoIPstudioValidationError) as raised:
        hook.update_records("voicemessages", [{"id": voicemessage_id, "folder": "Trash"}])
    error = raised.value
    assert error.status_code == 400 and not error.retryable
    assert error.errors and error.errors[0]["message"]
    assert error.api_message == error.errors[0]["message"]
    assert error.api_message in str(error)
    assert len(api_requests("/voicemessages", method="PATCH")) == 1


def test_unknown_filter_field_is_a_validation_error(hook):
    with pytest.raises(VoIPstudioValidationError) as raised:
        hook.list_page(
            "cdrs", filters=[{"property": "no_such_field", "operator": "eq", "value": 1}]
        )
    assert raised.value.status_code == 400


@pytest.mark.parametrize("prop", ["labels", "metadata"])
def test_filter_the_service_cannot_apply_is_an_error_naming_it(hook, api_requests, prop):
    # The service answers 400 "Filtration error" without saying which filter it means.
    user = {"property": "user_id", "operator": "eq", "value": 1001}
    refused = {"property": prop, "operator": "like", "value": "vip"}
    with pytest.raises(VoIPstudioFilterError) as raised:
        list(hook.iter_records("cdrs", filters=[user, refused]))
    error = raised.value
    assert error.status_code == 400 and not error.retryable
    assert error.api_message == "Filtration error"
    assert f"{prop} like 'vip'" in str(error) and "not an empty result" in str(error)
    assert refused in error.filters and prop in error.properties
    assert len(api_requests("/cdrs")) == 1
    with pytest.raises(VoIPstudioFilterError, match=f"{prop} like 'vip'"):
        hook.count("cdrs", filters=[refused])


def test_an_unknown_filter_property_named_by_the_api_is_the_one_reported(hook):
    known = {"property": "type", "operator": "eq", "value": "O"}
    unknown = {"property": "no_such_field", "operator": "eq", "value": 1}
    with pytest.raises(VoIPstudioFilterError) as raised:
        hook.list_page("cdrs", filters=[known, unknown])
    assert raised.value.filters == [unknown]
    assert "refused the filter no_such_field eq 1" in str(raised.value)


def test_a_400_about_another_parameter_is_not_blamed_on_the_filters(hook):
    known = {"property": "type", "operator": "eq", "value": "O"}
    with pytest.raises(VoIPstudioValidationError) as raised:
        hook.list_page("cdrs", filters=[known], sort="no_such_field")
    assert not isinstance(raised.value, VoIPstudioFilterError)
    assert raised.value.status_code == 400


def test_filters_the_api_rejects_are_refused_before_sending(hook, api_requests):
    with pytest.raises(ValueError, match="between"):
        hook.list_page("cdrs", filters=[{"property": "id", "operator": "between", "value": 1}])
    with pytest.raises(ValueError, match="property, operator and value"):
        hook.list_page("cdrs", filters=[{"property": "id", "value": 1}])
    assert api_requests() == []


# -- retried errors ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["500", "502", "503"])
def test_server_errors_are_retried(hook, set_faults, api_requests, capfd, kind):
    set_faults({"path": CDRS, "methods": ["GET"], "kind": kind, "rate": 1, "times": 2})
    rows, total = hook.list_page("cdrs", limit=3)
    assert len(rows) == 3 and total > 3
    statuses = [e["status"] for e in api_requests("/cdrs")]
    assert statuses == [int(kind), int(kind), 200]
    warnings = _retry_warnings(capfd)
    assert len(warnings) == 2
    assert "attempt 1 of 5" in warnings[0] and f"answered {kind}" in warnings[0]


def test_server_errors_give_up_after_max_attempts(make_hook, set_faults, api_requests):
    set_faults({"path": CDRS, "methods": ["GET"], "kind": "503", "rate": 1})
    with pytest.raises(VoIPstudioServerError) as raised:
        make_hook(max_attempts=3).list_page("cdrs")
    assert raised.value.status_code == 503 and raised.value.retryable
    assert len(api_requests("/cdrs")) == 3


def test_rate_limit_is_retried(hook, set_faults, api_requests, capfd):
    set_faults({"path": PING, "kind": "429", "rate": 1, "retry_after": 1, "times": 2})
    assert hook.ping() == {"response": "Pong"}
    assert [e["status"] for e in api_requests("/ping")] == [429, 429, 200]
    # Retry-After says 1 s; the hook under test caps it at 0.05 s.
    assert all("retrying in 0.05 s" in w for w in _retry_warnings(capfd))


def test_rate_limit_error_carries_retry_after(make_hook, set_faults, api_requests):
    set_faults({"path": PING, "kind": "429", "rate": 1, "retry_after": 1})
    hook = make_hook(max_attempts=2, retry_after_cap=0.2)
    with pytest.raises(VoIPstudioRateLimitedError) as raised:
        hook.ping()
    assert raised.value.retry_after == 0.2
    assert raised.value.status_code == 429
    assert len(api_requests("/ping")) == 2


@pytest.mark.parametrize("kind", ["drop", "truncate", "malformed"])
def test_broken_json_answers_are_retried(hook, set_faults, api_requests, truth, kind):
    set_faults({"path": CDRS, "methods": ["GET"], "kind": kind, "rate": 1, "times": 1})
    rows, _ = hook.list_page("cdrs", limit=10, sort="id", direction="ASC")
    assert [r["id"] for r in rows] == [r["id"] for r in truth("cdrs")[:10]]
    log = api_requests("/cdrs")
    assert len(log) == 2 and log[0]["fault"] == kind


def test_malformed_json_is_a_retryable_error(make_hook, set_faults):
    set_faults({"path": PING, "kind": "malformed", "rate": 1})
    with pytest.raises(VoIPstudioError) as raised:
        make_hook(max_attempts=1).ping()
    assert raised.value.retryable is True
    assert "malformed JSON" in str(raised.value)


def test_answer_with_malformed_headers_is_retried_like_a_dropped_connection(
    hook, set_faults, api_requests, capfd
):
    set_faults({"path": CDRS, "methods": ["GET"], "kind": "malformed_headers", "times": 2})
    rows, total = hook.list_page("cdrs", limit=3)
    assert len(rows) == 3 and total > 3
    log = api_requests("/cdrs")
    assert [e["fault"] for e in log] == ["malformed_headers", "malformed_headers", None]
    warnings = _retry_warnings(capfd)
    assert len(warnings) == 2
    assert all("HTTP headers could not be parsed (LineTooLong" in w for w in warnings)


def test_answers_with_malformed_headers_give_up_with_a_clear_error(
    make_hook, set_faults, api_requests
):
    set_faults({"path": PING, "kind": "malformed_headers", "rate": 1})
    with pytest.raises(VoIPstudioServerError) as raised:
        make_hook(max_attempts=3).ping()
    error = raised.value
    assert error.retryable and error.after_retry and error.status_code is None
    assert str(error).startswith("GET /ping: the answer's HTTP headers could not be parsed")
    assert len(api_requests("/ping")) == 3


INVALID_TOKEN = {"kind": "malformed_headers", "form": "invalid_token"}


def test_a_header_line_with_an_invalid_token_is_retried_like_a_dropped_connection(
    hook, set_faults, api_requests, capfd
):
    set_faults({"path": CDRS, "methods": ["GET"], "times": 2, **INVALID_TOKEN})
    rows, total = hook.list_page("cdrs", limit=3)
    assert len(rows) == 3 and total > 3
    log = api_requests("/cdrs")
    assert [(e["status"], e["fault"]) for e in log] == [
        (429, "malformed_headers"), (429, "malformed_headers"), (200, None)
    ]  # fmt: skip
    warnings = _retry_warnings(capfd)
    assert len(warnings) == 2
    assert all("HTTP headers could not be parsed (invalid header line" in w for w in warnings)


def test_header_lines_with_an_invalid_token_give_up_as_unreadable_not_rate_limited(
    make_hook, set_faults, api_requests
):
    set_faults({"path": PING, "rate": 1, **INVALID_TOKEN})
    with pytest.raises(VoIPstudioServerError) as raised:
        make_hook(max_attempts=3).ping()
    error = raised.value
    assert not isinstance(error, VoIPstudioRateLimitedError)
    assert error.retryable and error.after_retry and error.status_code is None
    assert str(error) == (
        "GET /ping: the answer's HTTP headers could not be parsed "
        "(invalid header line 'X-RateLimit Remaining: 0')"
    )
    assert len(api_requests("/ping")) == 3


@pytest.mark.parametrize(
    "cause",
    [
        http.client.RemoteDisconnected("Remote end closed connection without response"),
        http.client.IncompleteRead(b"partial", 10),
    ],
)
def test_a_dropped_connection_is_not_called_malformed_headers(cause):
    exc = requests.exceptions.ConnectionError(
        urllib3.exceptions.ProtocolError("Connection aborted.", cause)
    )
    error = error_from_transport(exc, "GET", "/cdrs")
    assert error.retryable and "headers" not in str(error)


def test_slow_answer_times_out_and_is_retried(make_hook, set_faults, capfd):
    set_faults({"path": PING, "kind": "slow", "delay": 1.5, "rate": 1, "times": 1})
    hook = make_hook(timeout=(2, 0.3))
    assert hook.ping() == {"response": "Pong"}
    (warning,) = _retry_warnings(capfd)
    assert "timed out" in warning


# -- the token stays secret -------------------------------------------------------------


def test_token_never_logged_or_raised(make_hook, set_faults, sandbox, caplog, capfd, users):
    root, _ = users
    caplog.set_level(logging.DEBUG)
    set_faults(
        {"path": CDRS, "methods": ["GET"], "kind": "500", "rate": 1, "times": 2},
        {"path": PING, "kind": "429", "rate": 1, "retry_after": 1, "times": 1},
    )
    texts = []
    for hook in (make_hook(), make_hook(login=root["id"], conn_id="voipstudio_basic")):
        hook.list_page("cdrs", limit=2)
        hook.ping()
        for failing in (
            lambda h=hook: h.get_record("cdrs", 987654321),
            lambda h=hook: h.call("me", id=1),
        ):
            try:
                failing()
            except (VoIPstudioError, ValueError) as error:
                texts += [str(error), repr(error), str(getattr(error, "api_message", ""))]
    with pytest.raises(VoIPstudioAuthenticationError) as raised:
        make_hook(token="sandbox-token-typo", conn_id="voipstudio_typo").ping()
    texts += [str(raised.value), repr(raised.value)]

    out, err = capfd.readouterr()
    assert "retrying" in out + err, "the scenario should have retried"
    logged = [r.getMessage() for r in caplog.records] + texts + [out, err]
    for secret in (sandbox.token, "sandbox-token-typo"):
        assert not [line for line in logged if secret in line]
    for entry in sandbox.control("GET", "requests")["data"]:
        assert sandbox.token not in entry["path"] + str(entry["query"])


# -- TLS failures: a rejected certificate is final, a dropped TLS connection is not ----------


def _requests_ssl_error(ssl_error: BaseException) -> requests.exceptions.SSLError:
    """A TLS failure wrapped the way requests and urllib3 wrap it."""
    reason = urllib3.exceptions.SSLError(ssl_error)
    pool_error = urllib3.exceptions.MaxRetryError(None, "/v1.1/voipstudio/ping", reason=reason)
    return requests.exceptions.SSLError(pool_error)


def _chained(ssl_error: BaseException) -> requests.exceptions.SSLError:
    """A TLS failure reachable only through ``__cause__``."""
    try:
        try:
            raise ssl_error
        except ssl.SSLError as inner:
            raise requests.exceptions.SSLError("TLS failure") from inner
    except requests.exceptions.SSLError as outer:
        return outer


CERT_FAILED = "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed"


@pytest.mark.parametrize(
    "exc",
    [
        _requests_ssl_error(ssl.SSLCertVerificationError(1, CERT_FAILED)),
        _chained(ssl.SSLCertVerificationError(1, CERT_FAILED)),
        requests.exceptions.SSLError(f"HTTPSConnectionPool: Max retries exceeded ({CERT_FAILED})"),
    ],
    ids=["wrapped", "cause", "message"],
)
def test_certificate_verification_failure_is_not_retried(exc):
    assert certificate_rejected(exc)
    error = error_from_transport(exc, "GET", "/ping")
    assert type(error) is VoIPstudioError and error.retryable is False
    assert "TLS error, the certificate failed verification" in str(error)


@pytest.mark.parametrize(
    "exc",
    [
        _requests_ssl_error(ssl.SSLEOFError(8, "EOF occurred in violation of protocol")),
        _chained(ssl.SSLZeroReturnError(6, "TLS/SSL connection has been closed")),
        _requests_ssl_error(ConnectionResetError(104, "Connection reset by peer")),
        requests.exceptions.SSLError("EOF occurred in violation of protocol (_ssl.c:2427)"),
    ],
    ids=["eof", "zero-return", "reset", "message"],
)
def test_dropped_tls_connection_is_retried(exc):
    assert not certificate_rejected(exc)
    error = error_from_transport(exc, "GET", "/ping")
    assert isinstance(error, VoIPstudioServerError) and error.retryable is True
    assert "GET /ping: TLS error, the connection failed or dropped" == str(error)
