"""The VoIPstudio sandbox as a separate HTTP server process."""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path
from typing import Any

from voipstudio_devstack.processes import ManagedProcess, free_port, http_ok

INCLUDE_DIR = Path(__file__).resolve().parents[1]
DEFAULT_TOKEN = "sandbox-token"


class SandboxServer:
    """``python -m voipstudio_sandbox`` on a free loopback port, with its own SQLite file.

    :param workdir: a directory of its own for the database and the log.
    :param seed: the data seed; the same seed gives the same account.
    :param enums: how the account sends enumerations (``strings``, ``integers``, ``mixed``);
        ``None`` leaves the sandbox's default, strings.
    :param max_page_size: the most rows a list page holds (a number, or ``"none"`` for no
        cap); ``None`` leaves the sandbox's default.
    :param extra_args: more command-line flags (``--scale``, ``--faults`` ...).
    """

    def __init__(
        self,
        workdir: Path,
        seed: int = 1,
        token: str = DEFAULT_TOKEN,
        port: int | None = None,
        extra_args: list[str] | None = None,
        *,
        enums: str | None = None,
        max_page_size: int | str | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.seed = seed
        self.token = token
        self._fixed_port = port
        self.extra_args = list(extra_args or [])
        if enums is not None:
            self.extra_args += ["--enums", enums]
        if max_page_size is not None:
            self.extra_args += ["--max-page-size", str(max_page_size)]
        self._use_port(port or free_port())
        self.db_path = self.workdir / "sandbox.sqlite"
        self.process: ManagedProcess | None = None

    def _use_port(self, port: int) -> None:
        self.port = port
        self.root_url = f"http://127.0.0.1:{self.port}"
        self.base_url = f"{self.root_url}/v1.1/voipstudio"
        self.control_url = f"{self.root_url}/__sandbox__"

    def start(self, timeout: float = 120.0, attempts: int = 3) -> SandboxServer:
        """Start the server; on a port of our choosing that was taken meanwhile, try another."""
        for attempt in range(1, attempts + 1):
            try:
                return self._start_once(timeout)
            except RuntimeError:
                if self._fixed_port or attempt == attempts:
                    raise
                self._use_port(free_port())
        return self

    def _start_once(self, timeout: float) -> SandboxServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(INCLUDE_DIR), str(INCLUDE_DIR.parent / "plugins"), env.get("PYTHONPATH", "")]
        )
        argv = [
            sys.executable, "-m", "voipstudio_sandbox",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--db", str(self.db_path), "--seed", str(self.seed), "--token", self.token,
            *self.extra_args,
        ]  # fmt: skip
        self.process = ManagedProcess(
            "voipstudio-sandbox",
            argv,
            self.workdir / "sandbox.log",
            ready=http_ok(f"{self.control_url}/health"),
            env=env,
        )
        self.process.start(timeout=timeout)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def control(self, method: str, path: str, body: Any = None) -> Any:
        """Call a ``/__sandbox__/`` control endpoint and return its decoded JSON answer."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.control_url}/{path.lstrip('/')}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            payload = response.read()
        return json.loads(payload) if payload else None

    def airflow_conn_json(self) -> str:
        """A ``voipstudio_default`` connection for Airflow, as the JSON of ``AIRFLOW_CONN_*``."""
        return json.dumps(
            {"conn_type": "voipstudio", "host": self.base_url, "password": self.token}
        )

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
