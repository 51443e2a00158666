"""A real Airflow API server on loopback, with the provider's plugins, for the Archive page.

Its own ``AIRFLOW_HOME`` and SQLite database, the simple auth manager with two users (an
admin and a viewer), providers discovered eagerly so that the provider's plugin is loaded,
and the ``aws_default`` connection and Variables from the environment, as in a deployment.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from voipstudio_devstack import ManagedProcess, free_port
from voipstudio_devstack.processes import http_ok

REPO = Path(__file__).resolve().parents[2]
AIRFLOW = [sys.executable, "-m", "airflow"]
ADMIN, VIEWER = "auditor", "visitor"


class ArchiveApiServer:
    """``airflow api-server`` with the provider's plugin.

    :param home: the ``AIRFLOW_HOME``.
    :param extra_env: ``AIRFLOW_CONN_*`` and ``AIRFLOW_VAR_*`` of the deployment.
    """

    def __init__(self, home: Path, extra_env: Mapping[str, str]) -> None:
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.passwords = {ADMIN: secrets.token_urlsafe(12), VIEWER: secrets.token_urlsafe(12)}
        passwords = self.home / "passwords.json"
        passwords.write_text(json.dumps(self.passwords))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "VOIPSTUDIO"))}
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "PYTHONPATH": os.pathsep.join([str(REPO / "plugins"), str(REPO / "include")]),
                "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                # Airflow loads a provider's plugins only when it discovers providers eagerly.
                "AIRFLOW__CORE__LAZY_DISCOVER_PROVIDERS": "False",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin,{VIEWER}:viewer",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
                "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
                "AIRFLOW__API__BASE_URL": self.url,
                "AIRFLOW__API__WORKERS": "1",
            }
        )
        env.update(extra_env)
        self.env = env
        self.process = ManagedProcess(
            "api-server",
            [*AIRFLOW, "api-server", "--host", "127.0.0.1", "--port", str(self.port)],
            self.home / "api-server.log",
            ready=http_ok(f"{self.url}/api/v2/monitor/health"),
            env=env,
            cwd=self.home,
        )

    def start(self) -> ArchiveApiServer:
        migrate = subprocess.run(
            [*AIRFLOW, "db", "migrate"], env=self.env, cwd=self.home, capture_output=True,
            text=True, timeout=600, check=False,
        )  # fmt: skip
        if migrate.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed:\n{migrate.stderr[-3000:]}")
        self.process.start(timeout=180)
        return self

    def stop(self) -> None:
        self.process.stop(grace=10)

    def token(self, user: str = ADMIN) -> str:
        """A JWT as ``POST /auth/token`` hands it out to the UI's login form."""
        body = {"username": user, "password": self.passwords[user]}
        status, answer = self.request("POST", "/auth/token", body=body)
        assert status == 201, answer
        return json.loads(answer)["access_token"]

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, str]:
        """``(status, body)`` of one request; an error status is returned, not raised."""
        request = urllib.request.Request(
            self.url + path,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()
