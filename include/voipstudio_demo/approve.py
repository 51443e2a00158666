"""Answer a DAG's approval request as a demo user: ``python -m voipstudio_demo.approve
DAG_ID USER [OPTION]``. Exit status 0 when the answer was taken.

A second person approving a purge, through Airflow's own response path: Airflow's API
app (the routes the API server serves, with the simple auth manager's users from
``AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS`` and the password file) on the demo's
metadata database. It waits until ``GET /api/v2/dags/{dag_id}/dagRuns/~/hitlDetails``
lists an unanswered request whose task waits for input, then sends
``PATCH .../hitlDetails`` with the option, as the Required Actions page of the UI does,
and prints what it read and what Airflow answered.
"""

from __future__ import annotations

import json
import sys
import time

WAIT_SECONDS = 600


def main(argv: list[str]) -> int:
    dag_id, user = argv[0], argv[1]
    option = argv[2] if len(argv) > 2 else "Approve"

    from airflow.api_fastapi.app import create_app
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager
    from fastapi.testclient import TestClient

    with open(SimpleAuthManager.get_generated_password_file()) as passwords:
        password = json.load(passwords)[user]
    client = TestClient(create_app("core"))
    token = client.post("/auth/token", json={"username": user, "password": password})
    token.raise_for_status()
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        listed = client.get(
            f"/api/v2/dags/{dag_id}/dagRuns/~/hitlDetails",
            params={"response_received": "false"},
            headers=headers,
        )
        listed.raise_for_status()
        # Answered once its task waits, as the UI shows it: on SQLite an answer written
        # while the task is still being parked would not resume it.
        pending = [
            request
            for request in listed.json()["hitl_details"]
            if request["task_instance"]["state"] == "awaiting_input"
        ]
        if pending:
            break
        time.sleep(1)
    else:
        print(f"no approval request of {dag_id} within {WAIT_SECONDS} s", file=sys.stderr)
        return 1
    request = pending[0]
    ti = request["task_instance"]
    print(f"approval request of run {ti['dag_run_id']}: {request['subject']}")
    print(request["body"])
    answer = client.patch(
        f"/api/v2/dags/{dag_id}/dagRuns/{ti['dag_run_id']}/taskInstances/{ti['task_id']}/"
        f"{ti['map_index']}/hitlDetails",
        json={"chosen_options": [option]},
        headers=headers,
    )
    print(f"PATCH hitlDetails as {user}: {answer.status_code} {answer.text}")
    return 0 if answer.status_code == 200 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
