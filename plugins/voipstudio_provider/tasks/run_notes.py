"""The run's note: one line in the Airflow UI saying what a run did.

Airflow 3.3 gives a task no way to set its own DAG run's note through the task execution
API (a note can only be given to a run a task *triggers*). The public REST API can:
``PATCH /api/v2/dags/{dag_id}/dagRuns/{dag_run_id}`` with ``{"note": ...}``.
:func:`set_run_note` uses it through the Airflow connection ``airflow_api`` (host = the
API server's base URL; login and password, exchanged at ``/auth/token``, or a token as
the password). Without that connection, and only when the task runs in the same process
as the scheduler loop with the metadata database at hand (``dag.test()``,
``airflow dags test``), it sets the note on Airflow's own ``DagRun`` model instead.
Otherwise it logs one line saying the note was not set and why. It never raises: a note
is a report, never a reason to fail the work.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

log = logging.getLogger(__name__)

#: The Airflow connection to the API server that :func:`set_run_note` uses.
API_CONN_ID = "airflow_api"
#: How long one request to the API server may take, in seconds.
API_TIMEOUT = 30


def _api_connection(conn_id: str):
    from airflow.sdk import BaseHook

    try:
        return BaseHook.get_connection(conn_id)
    except Exception:  # AirflowNotFoundException, whichever module raises it
        return None


def _bearer_token(session, base_url: str, conn) -> str:
    """The connection's token: its password alone, or a JWT for its login and password."""
    if not conn.login:
        return conn.password
    answer = session.post(
        f"{base_url}/auth/token",
        json={"username": conn.login, "password": conn.password},
        timeout=API_TIMEOUT,
    )
    answer.raise_for_status()
    return answer.json()["access_token"]


def _note_via_rest_api(conn, dag_id: str, run_id: str, note: str) -> None:
    import requests

    base_url = (conn.host or "").rstrip("/")
    if conn.port and base_url.count(":") < 2:
        base_url = f"{base_url}:{conn.port}"
    if not base_url.startswith(("http://", "https://")):
        base_url = f"{conn.schema or 'http'}://{base_url}"
    with requests.Session() as session:
        token = _bearer_token(session, base_url, conn)
        answer = session.patch(
            f"{base_url}/api/v2/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}",
            params={"update_mask": "note"},
            json={"note": note},
            headers={"Authorization": f"Bearer {token}"},
            timeout=API_TIMEOUT,
        )
        if answer.status_code >= 400:
            raise RuntimeError(f"the API server answered {answer.status_code}")


def runs_in_process() -> bool:
    """Whether this task runs in the scheduler's own process (``dag.test()``)."""
    from airflow.sdk.execution_time import task_runner
    from airflow.sdk.execution_time.supervisor import InProcessSupervisorComms

    return isinstance(getattr(task_runner, "SUPERVISOR_COMMS", None), InProcessSupervisorComms)


def _note_via_metadata_db(dag_id: str, run_id: str, note: str) -> None:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        dag_run = session.scalar(
            select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
        )
        if dag_run is None:
            raise LookupError(f"no run {run_id!r} of {dag_id} in the metadata database")
        dag_run.note = note


def set_run_note(dag_id: str, run_id: str, note: str, conn_id: str = API_CONN_ID) -> dict:
    """Set the note of the run ``run_id``; never raise.

    :param note: one line, e.g. ``DRY RUN: 12 planned``.
    :param conn_id: the Airflow connection to the API server.
    :return: ``{"note", "set", "via", "why_not"}``: where the note went, or why it did not.
    """
    result: dict[str, Any] = {"note": note, "set": False, "via": None, "why_not": None}
    conn = _api_connection(conn_id)
    try:
        if conn is not None:
            result["via"] = "rest_api"
            _note_via_rest_api(conn, dag_id, run_id, note)
        elif runs_in_process():
            result["via"] = "metadata_db"
            _note_via_metadata_db(dag_id, run_id, note)
        else:
            result["why_not"] = f"no Airflow connection {conn_id!r} to the API server"
    except Exception as error:  # a note is a report: it never fails the run
        # The message only: a failed request's text may carry the URL, never the token.
        result["why_not"] = f"{type(error).__name__}: {str(error)[:200]}"
    result["set"] = result["why_not"] is None
    if result["set"]:
        log.info("run note (%s): %s", result["via"], note)
    else:
        log.warning("run note not set (%s): %s", result["why_not"], note)
    return result
