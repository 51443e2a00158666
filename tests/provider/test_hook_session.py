"""The connection as the hook reads it: what a log or a traceback may show of it."""

from __future__ import annotations

from airflow.models.connection import Connection
from voipstudio_provider.hooks.session import read_connection

TOKEN = "s3cr3t-token-value"


def test_the_read_connection_never_shows_its_token():
    conn = Connection(
        conn_id="voipstudio_x",
        conn_type="voipstudio",
        host="https://l7api.example/v1.1/voipstudio",
        login="7",
        password=TOKEN,
        extra='{"timeout": 30}',
    )
    settings = read_connection(conn, "voipstudio_x", timeout=None, page_size=None)
    assert settings.token == TOKEN
    assert settings.basic_user == "7"
    assert settings.timeout[1] == 30.0
    assert TOKEN not in repr(settings)
    assert TOKEN not in str(settings)
