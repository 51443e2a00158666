"""The ``voipstudio`` connection: its form in Airflow, both ways to authenticate, and the
messages of ``test_connection``."""

from __future__ import annotations

import pytest
import requests
from voipstudio_devstack import free_port
from voipstudio_provider.get_provider_info import get_provider_info
from voipstudio_provider.hooks.voipstudio import (
    DEFAULT_PAGE_SIZE,
    DEFAULT_READ_TIMEOUT,
    VoIPstudioHook,
)
from voipstudio_sandbox.generate import SANDBOX_PASSWORD


def test_provider_info_declares_the_connection_type():
    info = get_provider_info()
    assert info["package-name"] == "airflow-provider-voipstudio"
    (conn_type,) = info["connection-types"]
    assert conn_type["connection-type"] == "voipstudio"
    assert conn_type["hook-class-name"].endswith("hooks.voipstudio.VoIPstudioHook")
    assert set(conn_type["conn-fields"]) == {"page_size", "timeout", "verify_ssl"}


def test_providers_manager_knows_the_voipstudio_form():
    from airflow.providers_manager import ProvidersManager
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    manager = ProvidersManager()
    assert "airflow-provider-voipstudio" in manager.providers
    hook_info = ProvidersManagerTaskRuntime().hooks["voipstudio"]
    assert hook_info is not None
    assert hook_info.hook_class_name == "voipstudio_provider.hooks.voipstudio.VoIPstudioHook"
    assert hook_info.connection_id_attribute_name == "voipstudio_conn_id"

    widgets = manager.connection_form_widgets
    for name in ("page_size", "timeout", "verify_ssl"):
        assert f"extra__voipstudio__{name}" in widgets
    assert widgets["extra__voipstudio__verify_ssl"].field["schema"]["type"] == ["boolean", "null"]
    # The form shows the hook's own defaults, so an untouched form means what the hook does.
    assert widgets["extra__voipstudio__page_size"].field["schema"]["default"] == 1000
    assert widgets["extra__voipstudio__timeout"].field["schema"]["default"] == 300
    assert widgets["extra__voipstudio__page_size"].field["value"] == 1000  # what the form shows
    assert widgets["extra__voipstudio__timeout"].field["value"] == 300
    assert widgets["extra__voipstudio__verify_ssl"].field["schema"]["default"] is True
    assert DEFAULT_PAGE_SIZE == 1000 and DEFAULT_READ_TIMEOUT == 300

    behaviour = manager.field_behaviours["voipstudio"]
    assert {"schema", "port"} <= set(behaviour["hidden_fields"])
    assert behaviour["relabeling"]["password"] == "API token"
    assert behaviour["placeholders"]["host"] == "https://l7api.com/v1.1/voipstudio"


def test_class_attributes_name_the_connection():
    assert VoIPstudioHook.conn_type == "voipstudio"
    assert VoIPstudioHook.conn_name_attr == "voipstudio_conn_id"
    assert VoIPstudioHook.default_conn_name == "voipstudio_default"
    assert VoIPstudioHook.hook_name == "VoIPstudio"


def test_token_header_auth(hook, api_requests):
    assert hook.ping() == {"response": "Pong"}
    session = hook.get_conn()
    assert session.auth is None
    (entry,) = api_requests("/ping")
    assert entry["status"] == 200


def test_basic_auth_with_the_user_id(make_hook, users, sandbox):
    root, _ = users
    hook = make_hook(login=root["id"])
    assert hook.get_conn().auth == (str(root["id"]), sandbox.token)
    assert "X-Auth-Token" not in hook.get_conn().headers
    assert hook.me()["id"] == root["id"]


def test_basic_auth_with_a_wrong_token_fails(make_hook, users):
    root, _ = users
    ok, message = make_hook(login=root["id"], token="not-the-token").test_connection()
    assert (ok, message) == (False, "authentication failed: check the API token")


@pytest.mark.parametrize("by", ["email", "EMAIL"])
def test_basic_auth_with_the_users_email(make_hook, users, sandbox, api_requests, by):
    root, _ = users
    login = root["email"] if by == "email" else root["email"].upper()
    hook = make_hook(login=login)
    assert hook.get_conn().auth == (login, sandbox.token)
    assert hook.me()["id"] == root["id"]
    assert api_requests("/me")[-1]["status"] == 200


def test_basic_auth_with_another_users_email_fails(make_hook, users):
    _, other = users
    ok, message = make_hook(login=other["email"]).test_connection()  # the root's token
    assert (ok, message) == (False, "authentication failed: check the API token")


@pytest.mark.parametrize("login", ["alice", "12a", "a b@example.com", "x:y@example.com"])
def test_login_must_be_a_user_id_or_an_email(make_hook, api_requests, login):
    ok, message = make_hook(login=login).test_connection()
    assert not ok
    assert "numeric VoIPstudio user id or the user's e-mail" in message
    assert api_requests("/ping") == []  # refused before any request


def test_the_form_says_the_login_is_a_user_id_or_an_email():
    behaviour = get_provider_info()["connection-types"][0]["ui-field-behaviour"]
    assert behaviour["relabeling"]["login"] == "User ID or e-mail (optional)"
    assert "e-mail" in behaviour["placeholders"]["login"]


def test_one_session_with_timeouts_and_no_extras_as_headers(make_hook):
    hook = make_hook(extra={"page_size": 7, "timeout": 42, "verify_ssl": False})
    hook.ping()
    session = hook.get_conn()
    hook.me()
    assert hook.get_conn() is session
    assert hook.timeout == (10.0, 42.0)
    assert hook.page_size == 7
    assert session.verify is False
    lowered = {k.lower() for k in session.headers}
    assert not lowered & {"page_size", "timeout", "verify_ssl"}


def test_test_connection_succeeds(hook):
    ok, message = hook.test_connection()
    assert ok is True
    assert "Pong" in message


def test_test_connection_reports_a_bad_token(make_hook, api_requests):
    ok, message = make_hook(token="sandbox-token-wrong").test_connection()
    assert (ok, message) == (False, "authentication failed: check the API token")
    assert len(api_requests("/ping")) == 1


def test_test_connection_reports_a_wrong_base_url(make_hook, sandbox):
    ok, message = make_hook(host=sandbox.root_url + "/v9/nothing-here").test_connection()
    assert ok is False
    assert message.startswith("not found: check the base URL")


def test_test_connection_reports_a_refused_connection(make_hook):
    ok, message = make_hook(
        host=f"http://127.0.0.1:{free_port()}/v1.1/voipstudio"
    ).test_connection()
    assert ok is False
    assert "connection refused" in message


def test_test_connection_reports_a_tls_error(make_hook, sandbox):
    # The sandbox speaks plain HTTP: a TLS handshake with it fails.
    ok, message = make_hook(
        host=f"https://127.0.0.1:{sandbox.port}/v1.1/voipstudio"
    ).test_connection()
    assert ok is False
    assert "TLS error" in message
    assert sandbox.token not in message


def test_test_connection_reports_a_missing_host(make_hook):
    ok, message = make_hook(host="   ").test_connection()
    assert ok is False
    assert "base URL" in message


def test_an_api_token_made_as_the_vendor_cli_does_serves_a_connection_until_revoked(
    make_hook, users, sandbox
):
    _, other = users
    login = requests.post(
        f"{sandbox.base_url}/login",
        json={"email": other["email"], "password": SANDBOX_PASSWORD},
        timeout=30,
    ).json()
    made = requests.post(
        f"{sandbox.base_url}/apitokens",
        json={"name": "airflow"},
        headers={"X-Auth-Token": login["user_token"]},
        timeout=30,
    )
    assert made.status_code == 201
    token = made.json()["data"]["token"]
    hook = make_hook(token=token, login=other["email"])
    assert hook.me()["id"] == other["id"]
    assert {c["user_id"] for c in hook.iter_records("cdrs")} == {other["id"]}

    revoked = requests.delete(
        f"{sandbox.base_url}/apitokens/{token}", headers={"X-Auth-Token": token}, timeout=30
    )
    assert revoked.status_code == 204
    ok, message = make_hook(token=token, conn_id="voipstudio_revoked").test_connection()
    assert (ok, message) == (False, "authentication failed: check the API token")
