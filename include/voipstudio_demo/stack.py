"""The demo's moving parts: the local servers, an Airflow home, and DAG runs as processes."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from voipstudio_devstack import SandboxServer, SeaweedS3

REPO = Path(__file__).resolve().parents[2]
BUCKET = "voipstudio-archive"
PREFIX = "voipstudio"
#: The demo's second person, who approves the purge in Airflow (simple auth manager).
APPROVER = "bob"


@dataclass
class DagRunResult:
    """One ``airflow dags test`` run: its id, whether it succeeded, and its log file."""

    dag_id: str
    label: str
    ok: bool
    log_path: Path
    conf: dict = field(default_factory=dict)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


class DemoStack:
    """Start the sandbox and SeaweedFS, prepare ``.airflow/``, run DAGs, stop everything.

    :param root: where ``.demo/`` (servers' data, logs) and ``.airflow/`` (Airflow home)
        are created.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.demo_dir = self.root / ".demo"
        self.airflow_home = self.root / ".airflow"
        self.logs = self.demo_dir / "logs"
        self.sandbox = SandboxServer(self.demo_dir / "sandbox", seed=1)
        self.seaweed = SeaweedS3(self.demo_dir / "seaweedfs")
        self._running: subprocess.Popen | None = None
        self._answering: subprocess.Popen | None = None
        # Signs the API tokens of this demo's Airflow; the same in every process it starts.
        self._jwt_secret = secrets.token_urlsafe(64)

    # -- servers ------------------------------------------------------------------------

    def start(self) -> None:
        """Start both servers from a clean state: seeded account, empty bucket."""
        shutil.rmtree(self.demo_dir / "seaweedfs", ignore_errors=True)
        shutil.rmtree(self.logs, ignore_errors=True)
        self.logs.mkdir(parents=True)
        self.sandbox.start()
        self.sandbox.control("POST", "reset")
        self.seaweed.start()
        # With Object Lock, the reconciliation locks the held recording's archived copies.
        self.seaweed.client().create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)

    def stop(self) -> None:
        """Stop a DAG run in progress and both servers; safe to call more than once."""
        for process in (self._answering, self._running):
            if process is not None and process.poll() is None:
                _kill_group(process)
        self.seaweed.stop()
        self.sandbox.stop()

    # -- Airflow ------------------------------------------------------------------------

    def airflow_env(self, variables: dict[str, object]) -> dict[str, str]:
        env = dict(os.environ)
        for name in list(env):  # nothing of the caller's own Airflow leaks in
            if name.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_")):
                del env[name]
        env.update(
            {
                "AIRFLOW_HOME": str(self.airflow_home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.airflow_home}/airflow.db",
                # Who may sign in to Airflow's API: the approver answers the purge's request.
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{APPROVER}:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.passwords_file),
                "AIRFLOW__API_AUTH__JWT_SECRET": self._jwt_secret,
                "AIRFLOW_CONN_VOIPSTUDIO_DEFAULT": self.sandbox.airflow_conn_json(),
                "AIRFLOW_CONN_AWS_DEFAULT": self.seaweed.airflow_conn_uri(),
                # One local key plays the legal-hold and erasure roles a deployment separates.
                "AIRFLOW_CONN_AWS_LEGAL_HOLD": self.seaweed.airflow_conn_uri(),
                "AIRFLOW_CONN_AWS_ERASURE": self.seaweed.airflow_conn_uri(),
                "PYTHONPATH": os.pathsep.join(
                    [str(REPO / "plugins"), str(REPO / "include"), env.get("PYTHONPATH", "")]
                ),
            }
        )
        for name, value in variables.items():
            text = value if isinstance(value, str) else json.dumps(value)
            env[f"AIRFLOW_VAR_{name.upper()}"] = text
        return env

    def _airflow(self, args: list[str], env: dict[str, str], log_path: Path) -> int:
        return self._process([str(Path(sys.executable).parent / "airflow"), *args], env, log_path)

    def _process(self, argv: list[str], env: dict[str, str], log_path: Path) -> int:
        with open(log_path, "ab") as log:
            self._running = subprocess.Popen(
                argv,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # so that stopping it stops its children too
            )
            try:
                return self._running.wait()
            finally:
                if self._running.poll() is None:
                    _kill_group(self._running)
                self._running = None

    @property
    def passwords_file(self) -> Path:
        return self.airflow_home / "demo-passwords.json"

    def prepare_airflow(self, variables: dict[str, object]) -> None:
        """Migrate the SQLite metadata database, create the API pool and the approver."""
        self.airflow_home.mkdir(parents=True, exist_ok=True)
        self.passwords_file.write_text(json.dumps({APPROVER: secrets.token_urlsafe(16)}))
        self.passwords_file.chmod(0o600)
        env = self.airflow_env(variables)
        log = self.logs / "airflow-setup.log"
        for args in (
            ["db", "migrate"],
            ["pools", "set", "voipstudio_api", "4", "VoIPstudio API calls"],
        ):
            if self._airflow(args, env, log) != 0:
                raise RuntimeError(f"airflow {' '.join(args)} failed: see {log}")

    def run_dag(
        self,
        dag_id: str,
        logical_date: str,
        conf: dict,
        variables: dict[str, object],
        label: str | None = None,
    ) -> DagRunResult:
        """Run one DAG once (``dag.test()``, no retries); its output goes to a log file."""
        label = label or dag_id
        log_path = self.logs / f"{label}.log"
        argv = [sys.executable, "-m", "voipstudio_demo.run_dag", dag_id, logical_date]
        code = self._process([*argv, json.dumps(conf)], self.airflow_env(variables), log_path)
        return DagRunResult(dag_id, label, code == 0, log_path, conf)

    def run_dag_answered(
        self,
        dag_id: str,
        logical_date: str,
        conf: dict,
        variables: dict[str, object],
        label: str,
        answer: str = "Approve",
    ) -> DagRunResult:
        """Run one DAG once while :data:`APPROVER` answers its approval request from outside
        (``python -m voipstudio_demo.approve``, log ``{label}-approval.log``)."""
        answer_log = self.logs / f"{label}-approval.log"
        argv = [sys.executable, "-m", "voipstudio_demo.approve", dag_id, APPROVER, answer]
        with open(answer_log, "ab") as log:
            self._answering = subprocess.Popen(
                argv, env=self.airflow_env(variables), stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        try:
            result = self.run_dag(dag_id, logical_date, conf, variables, label)
            answered = self._answering.wait(timeout=60) == 0
        except subprocess.TimeoutExpired:
            answered = False
        finally:
            if self._answering.poll() is None:
                _kill_group(self._answering)
            self._answering = None
        result.ok = result.ok and answered
        return result


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
