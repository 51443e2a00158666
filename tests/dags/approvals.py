"""Answering a purge's approval request from outside ``dag.test()``, as a person would.

``dag.test()`` keeps a run alive while a task waits for human input, and never answers
itself. :class:`ApprovalDesk` is Airflow's own API app (the routes the API server serves,
with the simple auth manager's users) on the test session's metadata database: a thread
waits until the request is listed by ``GET .../hitlDetails`` and answers it with
``PATCH .../hitlDetails`` as a given user, exactly as the UI's Required Actions page or a
script against the API server does.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass, field

#: The user ``dag.test()`` records as the one who triggered the run.
DAG_TEST_USER = "dag_test"
USERS = (DAG_TEST_USER, "bob", "carol")


@dataclass
class Answer:
    """One PATCH sent: as whom, what, and the API's status code and body."""

    user: str
    chosen_options: list[str]
    status: int
    body: dict = field(default_factory=dict)


class ApprovalDesk:
    """Airflow's API app in this process, answering human-in-the-loop requests.

    :param monkeypatch: to configure the simple auth manager's users for this test.
    :param tmp_path: where the users' password file goes.
    """

    def __init__(self, monkeypatch, tmp_path) -> None:
        self.passwords = {user: secrets.token_urlsafe(12) for user in USERS}
        passwords = tmp_path / "passwords.json"
        passwords.write_text(json.dumps(self.passwords))
        users = ",".join(f"{user}:admin" for user in USERS)
        monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", users)
        monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(passwords))
        monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", secrets.token_urlsafe(64))
        from airflow.api_fastapi.app import create_app
        from fastapi.testclient import TestClient

        self.client = TestClient(create_app("core"))
        self._tokens: dict[str, str] = {}
        self.answers: list[Answer] = []
        self.requests: list[dict] = []
        self._threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def token(self, user: str) -> str:
        if user not in self._tokens:
            answer = self.client.post(
                "/auth/token", json={"username": user, "password": self.passwords[user]}
            )
            answer.raise_for_status()
            self._tokens[user] = answer.json()["access_token"]
        return self._tokens[user]

    def api(self, method: str, path: str, user: str = "bob", body: dict | None = None):
        return self.client.request(
            method, path, json=body, headers={"Authorization": f"Bearer {self.token(user)}"}
        )

    def pending(self, dag_id: str, user: str = "bob") -> list[dict]:
        """The requests of ``dag_id`` whose task waits for an answer, as the API lists them.

        A request is listed as soon as the operator writes it, a moment before its task is
        parked; a person answers what the UI shows as waiting. (On SQLite an answer in that
        moment is recorded without resuming the task: nothing locks the two rows.)
        """
        answer = self.api(
            "GET",
            f"/api/v2/dags/{dag_id}/dagRuns/~/hitlDetails?response_received=false",
            user,
        )
        answer.raise_for_status()
        return [
            request
            for request in answer.json()["hitl_details"]
            if request["task_instance"]["state"] == "awaiting_input"
        ]

    def answer(self, request: dict, user: str, chosen_options: list[str]) -> Answer:
        """PATCH one request as ``user``; record what the API said."""
        ti = request["task_instance"]
        path = (
            f"/api/v2/dags/{ti['dag_id']}/dagRuns/{ti['dag_run_id']}/taskInstances/"
            f"{ti['task_id']}/{ti['map_index']}/hitlDetails"
        )
        reply = self.api("PATCH", path, user, {"chosen_options": chosen_options})
        answer = Answer(user, chosen_options, reply.status_code, reply.json())
        self.answers.append(answer)
        return answer

    def answer_when_asked(self, dag_id: str, steps, timeout: float = 300) -> None:
        """In a thread: wait for ``dag_id``'s request, then PATCH it once per step
        ``(user, chosen_options)`` in order (a refused answer leaves it open).

        :param steps: the steps, or a callable returning them, called once the request is
            listed (to change the world between the plan and the answer).
        """

        def run() -> None:
            try:
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    pending = self.pending(dag_id)
                    if pending:
                        self.requests.append(pending[0])
                        for user, options in steps() if callable(steps) else steps:
                            self.answer(pending[0], user, options)
                        return
                    time.sleep(0.5)
                raise TimeoutError(f"no approval request of {dag_id} within {timeout} s")
            except BaseException as error:  # reported by join()
                self.errors.append(error)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self._threads.append(thread)

    def join(self) -> None:
        """Wait for the answering threads; raise what went wrong in them."""
        for thread in self._threads:
            thread.join(timeout=60)
        if self.errors:
            raise self.errors[0]


class TimeoutSweep:
    """The scheduler's own sweep of expired human-in-the-loop requests, which ``dag.test()``
    does not run: :meth:`~airflow.jobs.scheduler_job_runner.SchedulerJobRunner.
    check_awaiting_input_timeouts`, called once a second in a thread."""

    def __init__(self) -> None:
        from airflow.jobs.job import Job
        from airflow.jobs.scheduler_job_runner import SchedulerJobRunner

        self.runner = SchedulerJobRunner(job=Job(), num_runs=1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(1):
            self.runner.check_awaiting_input_timeouts()

    def __enter__(self) -> TimeoutSweep:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
