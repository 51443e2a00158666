"""The Archive page on a real API server, opened in headless Chromium by a logged-in user.

The bucket is prepared with the provider's own writers (reconciliation reports, chained
manifests, audit objects) and archived recordings with sidecars; the legal hold is the
Variable. The page is read in the browser as a person sees it, inside Airflow's UI and on
its own; screenshots are saved under the test's tmp directory.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os

import pytest
from voipstudio_provider.engine.archive.targets import ArchiveTarget
from voipstudio_provider.engine.evidence.audit import AuditLog
from voipstudio_provider.engine.evidence.manifests import manifest_index, write_day
from voipstudio_provider.engine.layout import audit_key, report_key
from voipstudio_provider.engine.s3objects import put_json

from tests.ui.api_server import ADMIN, VIEWER, ArchiveApiServer
from tests.ui.browser import Browser, chromium_binary

pytestmark = pytest.mark.slow

PREFIX = "voipstudio-ui"
HELD_ID, HELD_NOT_ARCHIVED = 501, 777
HELD_NUMBER = "+442079460321"
RETENTION_RUN = "scheduled__2026-11-21T03:00:00+00:00"
PURGE_RUN = "manual__2026-11-22T10:00:00+00:00"
GAP_REPORT, COMPLETE_REPORTS = "2026-11-20", ("2026-11-22", "2026-11-21")


def _report(day: str, missing: int, gap_days: list[str]) -> dict:
    counts = {
        "monitors": {"verified": 40, "missing": missing, "unverified": 0, "orphaned": 0,
                     "deleted_at_source": 3, "source": 40 + missing},
        "voicemessages": {"verified": 7, "missing": 0, "unverified": 0, "orphaned": 0,
                          "deleted_at_source": 0, "source": 7},
    }  # fmt: skip
    return {"day": day, "from": "2026-11-15", "to": day, "counts": counts,
            "days_with_gaps": gap_days, "overdue": {}, "gaps": {}}  # fmt: skip


def _recording(s3, bucket: str, day: str, record_id: int, caller: str) -> None:
    body = f"ID3 recording {record_id}".encode()
    key = f"{PREFIX}/recordings/date={day}/{record_id}"
    s3.put_object(Bucket=bucket, Key=f"{key}.mp3", Body=body, ContentType="audio/mpeg")
    digest = hashlib.sha256(body).hexdigest()
    sidecar = {"id": record_id, "timestamp": f"{day} 10:00:00", "caller": caller,
               "called": "101", "sha256": digest, "size": len(body)}  # fmt: skip
    s3.put_object(Bucket=bucket, Key=f"{key}.json", Body=json.dumps(sidecar).encode())


def _audit(s3, bucket: str, dag_id: str, run_id: str, lines: list[tuple]) -> None:
    with AuditLog(dag_id, run_id) as audit:
        for resource, record_id, action, reason in lines:
            audit.add(resource, record_id, action, reason)
        audit.upload(s3, bucket, audit_key(PREFIX, dag_id, run_id))


@pytest.fixture(scope="module")
def archive_bucket(seaweed) -> str:
    s3 = seaweed.client()
    bucket = f"ui-{os.urandom(4).hex()}"
    s3.create_bucket(Bucket=bucket)
    put_json(s3, bucket, report_key(PREFIX, dt.date.fromisoformat(GAP_REPORT)),
             _report(GAP_REPORT, 2, ["2026-11-19"]), write_args={}, indent=1)  # fmt: skip
    for day in COMPLETE_REPORTS:
        put_json(s3, bucket, report_key(PREFIX, dt.date.fromisoformat(day)), _report(day, 0, []),
                 write_args={}, indent=1)  # fmt: skip
    target = ArchiveTarget(bucket=bucket, prefix=PREFIX)
    index = manifest_index(s3, bucket, PREFIX)
    for day in ("2026-11-17", "2026-11-18"):
        entry = {"key": f"{PREFIX}/recordings/date={day}/1.mp3", "size": 1, "sha256": "0" * 64,
                 "kind": "monitors", "record_id": 1}  # fmt: skip
        write_day(s3, target, dt.date.fromisoformat(day), [entry], index)
    _recording(s3, bucket, "2026-11-10", HELD_ID, "+33 1 23 45 67 89")
    _recording(s3, bucket, "2026-11-11", 502, "442079460321")  # the held number, API notation
    _recording(s3, bucket, "2026-11-11", 503, "+1 202 555 0143")
    _audit(s3, bucket, "voipstudio_retention", RETENTION_RUN, [
        ("monitors", 11, "deleted", "archive_verified"),
        ("monitors", 12, "deleted", "archive_verified"),
        ("voicemessages", 13, "deleted", "archive_verified"),
        ("monitors", HELD_ID, "skipped", "legal_hold_id"),
        ("monitors", 14, "skipped", "archive_unverified"),
        ("monitors", 15, "skipped", "archive_unverified"),
    ])  # fmt: skip
    _audit(s3, bucket, "voipstudio_compliance_purge", PURGE_RUN, [
        ("voicemessages", 21, "deleted", "archive_verified"),
    ])  # fmt: skip
    return bucket


@pytest.fixture(scope="module")
def api_server(tmp_path_factory, seaweed, archive_bucket):
    hold = {"ids": {"monitors": [HELD_ID, HELD_NOT_ARCHIVED]}, "numbers": [HELD_NUMBER]}
    server = ArchiveApiServer(
        tmp_path_factory.mktemp("archive-ui-home"),
        {
            "AIRFLOW_CONN_AWS_DEFAULT": seaweed.airflow_conn_uri(),
            "AIRFLOW_VAR_VOIPSTUDIO_S3_BUCKET": archive_bucket,
            "AIRFLOW_VAR_VOIPSTUDIO_S3_PREFIX": PREFIX,
            "AIRFLOW_VAR_VOIPSTUDIO_LEGAL_HOLD": json.dumps(hold),
        },
    )
    try:
        yield server.start()
    except BaseException as error:
        error.add_note(server.process.log_tail(80))
        raise
    finally:
        server.stop()


@pytest.fixture
def browser(tmp_path):
    binary = chromium_binary()
    if binary is None:
        message = "no Chromium: apt-get install -y chromium (make test does)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    chromium = Browser(tmp_path / "chromium", binary)
    try:
        chromium.start()
    except Exception as error:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"Chromium cannot start here: {error}")
    yield chromium
    chromium.stop()


def test_the_page_and_its_data_refuse_anyone_not_logged_in(api_server, seaweed):
    for path in ("/voipstudio-archive/", "/voipstudio-archive/overview"):
        assert api_server.request("GET", path)[0] == 401
        forged = {"Authorization": "Bearer not.a.token"}
        assert api_server.request("GET", path, headers=forged)[0] == 403
        assert api_server.request("GET", path, headers={"Cookie": "_token=forged"})[0] == 403
        viewer = {"Authorization": f"Bearer {api_server.token(VIEWER)}"}
        assert api_server.request("GET", path, headers=viewer)[0] == 403  # may not read holds
    status, body = api_server.request(
        "GET", "/voipstudio-archive/overview",
        headers={"Authorization": f"Bearer {api_server.token(ADMIN)}"},
    )  # fmt: skip
    assert status == 200, body
    overview = json.loads(body)
    assert overview["prefix"] == PREFIX and overview["coverage"]["problem"] is None
    assert seaweed.secret_key not in body and seaweed.access_key not in body


def test_a_logged_in_user_reads_the_archive_page_in_chromium(
    api_server, browser, seaweed, archive_bucket, tmp_path
):
    # Log in through the UI's own login form, as a person does.
    browser.open(f"{api_server.url}/auth/login")
    browser.type_into("input[name=username], input[autocomplete=username]", ADMIN)
    browser.type_into("input[type=password]", api_server.passwords[ADMIN])
    browser.evaluate("document.querySelector('button[type=submit]').click()")
    browser.wait_for("document.cookie.includes('_token=')")
    browser.wait_for("!location.pathname.startsWith('/auth/login')")

    # Inside the Airflow UI: the page is a view of the navigation, framed.
    browser.open(f"{api_server.url}/plugin/voipstudio-archive")
    frame = "document.querySelector('iframe')"
    browser.wait_for(f"{frame} && {frame}.contentDocument && "
                     f"!!{frame}.contentDocument.querySelector('#coverage-table')")  # fmt: skip
    framed = browser.evaluate(f"{frame}.contentDocument.body.innerText")
    assert "VoIPstudio Archive" in framed
    browser.screenshot(tmp_path / "archive-page-in-airflow.png")

    browser.open(f"{api_server.url}/voipstudio-archive/")
    rows = browser.evaluate(
        "[...document.querySelectorAll('#coverage-table tr[data-day]')].map(r => "
        "[r.dataset.day, r.className, r.querySelector('.missing').innerText, "
        "r.querySelector('.verified').innerText, r.querySelector('.deleted_at_source').innerText])"
    )
    # Gap days first, then the complete days newest first; counts summed over the kinds.
    assert rows == [
        [GAP_REPORT, "gap", "2", "47", "3"],
        [COMPLETE_REPORTS[0], "complete", "0", "47", "3"],
        [COMPLETE_REPORTS[1], "complete", "0", "47", "3"],
    ]
    text = browser.evaluate("document.body.innerText")
    assert "2026-11-19" in text  # the gap day the report names
    chain = browser.evaluate("document.querySelector('#manifest-chain').innerText")
    assert chain.startswith("holds") and "2026-11-17 .. 2026-11-18" in chain

    retention = browser.evaluate(
        f"(() => {{ const r = document.querySelector('tr[data-run=\"{RETENTION_RUN}\"]');"
        " return [r.querySelector('.deleted').innerText, r.querySelector('.kept').innerText,"
        " r.querySelector('a').getAttribute('href'), r.innerText]; })()"
    )
    deleted, kept, link, row = retention
    assert deleted.startswith("3") and "monitors 2" in deleted and "voicemessages 1" in deleted
    assert "2 archive_unverified" in kept and "1 legal_hold_id" in kept
    quoted = RETENTION_RUN.replace(":", "%3A").replace("+", "%2B")
    assert link == f"/dags/voipstudio_retention/runs/{quoted}"
    assert audit_key(PREFIX, "voipstudio_retention", RETENTION_RUN) in row
    assert PURGE_RUN in text

    held_ids = browser.evaluate(
        "Object.fromEntries([...document.querySelectorAll('#held-ids tr[data-id]')]"
        ".map(r => [r.dataset.id, r.querySelector('.n').innerText]))"
    )
    assert held_ids == {str(HELD_ID): "2", str(HELD_NOT_ARCHIVED): "0"}
    held_number = browser.evaluate(
        f"[...document.querySelector('tr[data-number=\"{HELD_NUMBER}\"]').cells]"
        ".map(c => c.innerText)"
    )
    assert held_number == [HELD_NUMBER, "1", "2"]  # recording 502: its MP3 and its sidecar
    assert "Purges waiting for approval" in text
    assert browser.evaluate("document.querySelector('#approvals').innerText").endswith("None.")

    # Nothing secret on the page: neither the S3 credentials nor a token.
    html = browser.evaluate("document.documentElement.outerHTML")
    assert seaweed.secret_key not in html and seaweed.access_key not in html
    token = browser.evaluate("document.cookie.split('_token=')[1].split(';')[0]")
    assert token not in html
    shot = browser.screenshot(tmp_path / "archive-page.png")
    assert shot.stat().st_size > 10_000
