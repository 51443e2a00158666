"""A real distributed Airflow on loopback: PostgreSQL, Redis, CeleryExecutor, two workers.

Everything is started from the virtualenv's ``airflow`` executable with its own
``AIRFLOW_HOME``, its own database and its own Redis database number, and driven only
through the public REST API v2, as an operator's script would drive a deployment.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from voipstudio_devstack import ManagedProcess, free_port
from voipstudio_devstack.processes import http_ok

REPO = Path(__file__).resolve().parents[2]
# ``python -m airflow`` runs the same interpreter as the tests, whatever bin/ holds.
AIRFLOW = [sys.executable, "-m", "airflow"]
POSTGRES_DSN = "postgresql+psycopg2://postgres@127.0.0.1:5432"
REDIS_PORT = 6379
ADMIN_USER = "ops"
WORKERS = ("worker-a", "worker-b")
FINISHED_STATES = {"success", "failed"}


def _run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)


def _pg_ready() -> bool:
    return _run(["pg_isready", "-h", "127.0.0.1", "-p", "5432", "-q"]).returncode == 0


def ensure_postgres() -> None:
    """Start the local PostgreSQL cluster if nothing answers on 127.0.0.1:5432."""
    if _pg_ready():
        return
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    _run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"])
    for _ in range(60):
        if _pg_ready():
            return
        time.sleep(1)
    raise RuntimeError("PostgreSQL did not start on 127.0.0.1:5432")


def ensure_redis() -> None:
    """Start a throwaway, non-persistent Redis on 127.0.0.1:6379 if none answers."""
    ping = ["redis-cli", "-h", "127.0.0.1", "-p", str(REDIS_PORT), "ping"]
    if _run(ping).stdout.strip() == "PONG":
        return
    _run(
        ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1",
         "--port", str(REDIS_PORT), "--save", "", "--appendonly", "no"]
    )  # fmt: skip
    for _ in range(30):
        if _run(ping).stdout.strip() == "PONG":
            return
        time.sleep(1)
    raise RuntimeError("Redis did not start on 127.0.0.1:6379")


def psql(sql: str) -> None:
    result = _run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-c", sql])
    if result.returncode != 0:
        raise RuntimeError(f"psql failed: {sql}\n{result.stderr}")


@contextlib.contextmanager
def scratch_database() -> Iterator[str]:
    """A new, empty PostgreSQL database, dropped afterwards (open connections included)."""
    ensure_postgres()
    name = f"voipstudio_it_{secrets.token_hex(4)}"
    psql(f"CREATE DATABASE {name}")
    try:
        yield f"{POSTGRES_DSN}/{name}"
    finally:
        psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextlib.contextmanager
def scratch_redis_db() -> Iterator[str]:
    """A Redis database number of its own (flushed afterwards), as a Celery broker URL.

    Test sessions may run side by side on one Redis: a database is taken only if it is
    empty and this session wins its claim key, so no two clusters share a Celery queue.
    """
    ensure_redis()
    cli = ["redis-cli", "-h", "127.0.0.1", "-p", str(REDIS_PORT)]
    claim = secrets.token_hex(8)
    for number in random.sample(range(1, 16), 15):
        db = [*cli, "-n", str(number)]
        if _run([*db, "dbsize"]).stdout.strip() != "0":
            continue
        if _run([*db, "set", "voipstudio-it-claim", claim, "NX"]).stdout.strip() == "OK":
            break
    else:
        raise RuntimeError("no free Redis database on 127.0.0.1:6379")
    try:
        yield f"redis://127.0.0.1:{REDIS_PORT}/{number}"
    finally:
        _run([*db, "flushdb"])


class AirflowCluster:
    """Airflow's components as separate processes, sharing one metadata database and broker.

    :param home: the ``AIRFLOW_HOME`` (logs, generated files, the password file).
    :param sql_alchemy_conn: the metadata database.
    :param broker_url: the Celery broker.
    :param extra_env: ``AIRFLOW_CONN_*``, ``AIRFLOW_VAR_*`` and other settings.
    :param dags_folder: the folder the DAG processor parses.
    :param users: more users of the simple auth manager besides ``ops`` (all admins, each
        with a password of their own), e.g. the asker and the approver of a purge.
    """

    def __init__(
        self,
        home: Path,
        sql_alchemy_conn: str,
        broker_url: str,
        extra_env: Mapping[str, str],
        dags_folder: Path = REPO / "dags",
        users: tuple[str, ...] = (),
    ) -> None:
        self.home = Path(home)
        self.api_port = free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.password = secrets.token_urlsafe(16)
        self.passwords = {ADMIN_USER: self.password}
        self.passwords.update({user: secrets.token_urlsafe(16) for user in users})
        self.processes: list[ManagedProcess] = []
        self._tokens: dict[str, str] = {}
        self.env = self._environment(sql_alchemy_conn, broker_url, dags_folder, extra_env)

    def _environment(
        self, sql_alchemy_conn: str, broker_url: str, dags_folder: Path, extra: Mapping[str, str]
    ) -> dict[str, str]:
        passwords = self.home / "passwords.json"
        self.home.mkdir(parents=True, exist_ok=True)
        passwords.write_text(json.dumps(self.passwords))
        # Only what the processes need: a developer's AIRFLOW__* must not leak in.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "VOIPSTUDIO"))}
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "PYTHONPATH": os.pathsep.join([str(REPO / "plugins"), str(REPO / "include")]),
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
                "AIRFLOW__CORE__FERNET_KEY": _fernet_key(),
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(
                    f"{user}:admin" for user in self.passwords
                ),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sql_alchemy_conn,
                "AIRFLOW__DATABASE__SQL_ALCHEMY_POOL_SIZE": "3",
                "AIRFLOW__CELERY__BROKER_URL": broker_url,
                "AIRFLOW__CELERY__RESULT_BACKEND": "db+"
                + sql_alchemy_conn.replace("postgresql+psycopg2", "postgresql"),
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
                # Every component signs or checks the same task-identity tokens.
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
                "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
                "AIRFLOW__API__BASE_URL": self.api_url,
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
                # Only the runs a test triggers: unpausing must not start scheduled ones.
                "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
                "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "5",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
            }
        )
        env.update(extra)
        return env

    # -- lifecycle -------------------------------------------------------------------------

    def cli(self, *args: str, timeout: float = 600) -> str:
        """Run ``airflow <args>`` with the cluster's environment; raise with its output."""
        result = _run([*AIRFLOW, *args], env=self.env, timeout=timeout, cwd=self.home)
        if result.returncode != 0:
            raise RuntimeError(
                f"airflow {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result.stdout

    def _process(self, name: str, args: list[str], env: Mapping[str, str] | None = None):
        process = ManagedProcess(
            name,
            [*AIRFLOW, *args],
            self.home / "logs" / f"{name}.log",
            ready=lambda: True,
            env=dict(env or self.env),
            cwd=self.home,
        )
        self.processes.append(process)
        return process

    def migrate(self) -> None:
        """Create or upgrade the metadata database schema."""
        self.cli("db", "migrate")

    def start(self) -> AirflowCluster:
        """Start every component (the database migrated) and wait until each is up."""
        api = self._process(
            "api-server", ["api-server", "--host", "127.0.0.1", "--port", str(self.api_port)]
        )
        api.ready = http_ok(f"{self.api_url}/api/v2/monitor/health")
        api.start(timeout=180)
        for component in ("scheduler", "dag-processor", "triggerer"):
            self._process(component, [component]).start()
        for hostname in WORKERS:
            env = dict(self.env, AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(free_port()))
            worker = self._process(
                hostname,
                ["celery", "worker", "--celery-hostname", f"{hostname}@%h", "--concurrency", "2"],
                env,
            )
            worker.ready = _log_says(worker.log_path, f"{hostname}@")
            worker.start(timeout=180)
        self._wait_healthy()
        return self

    def _wait_healthy(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        health: dict[str, Any] = {}
        while time.monotonic() < deadline:
            self.assert_running()
            health = self.api("GET", "/api/v2/monitor/health")
            parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
            if all(health.get(p, {}).get("status") == "healthy" for p in parts):
                return
            time.sleep(2)
        raise RuntimeError(f"Airflow not healthy after {timeout}s: {health}")

    def assert_running(self) -> None:
        for process in self.processes:
            if not process.running:
                raise RuntimeError(f"{process.name} is not running; log:\n{process.log_tail()}")

    def stop(self) -> None:
        """Stop every component, workers first so that no task outlives the scheduler."""
        for process in reversed(self.processes):
            process.stop(grace=15)

    def log_tails(self, lines: int = 60) -> str:
        return "\n".join(
            f"===== {p.name} ({p.log_path}) =====\n{p.log_tail(lines)}" for p in self.processes
        )

    # -- REST API v2 -----------------------------------------------------------------------

    def token(self, user: str = ADMIN_USER) -> str:
        """A JWT from the simple auth manager, as ``POST /auth/token`` hands it out."""
        if user not in self._tokens:
            answer = self.api(
                "POST",
                "/auth/token",
                {"username": user, "password": self.passwords[user]},
                auth=False,
            )
            self._tokens[user] = answer["access_token"]
        return self._tokens[user]

    def api(
        self, method: str, path: str, body: Any = None, *, auth: bool = True,
        user: str = ADMIN_USER,
    ) -> Any:  # fmt: skip
        """Call the API server as ``user`` and decode its JSON answer; raise with the body
        on errors."""
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token(user)}"
        request = urllib.request.Request(
            self.api_url + path,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers=headers,
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                payload = response.read()
        except urllib.error.HTTPError as error:
            raise RuntimeError(
                f"{method} {path} -> {error.code}: {error.read()[:2000]!r}"
            ) from None
        return json.loads(payload) if payload else None

    def wait_for_dags(self, dag_ids: set[str], timeout: float = 300) -> dict[str, dict]:
        """Wait until the DAG processor has serialized every DAG in ``dag_ids``."""
        deadline = time.monotonic() + timeout
        found: dict[str, dict] = {}
        while time.monotonic() < deadline:
            self.assert_running()
            listing = self.api("GET", "/api/v2/dags?limit=100")
            found = {d["dag_id"]: d for d in listing["dags"]}
            if dag_ids <= found.keys():
                return found
            errors = self.api("GET", "/api/v2/importErrors")
            if errors["total_entries"]:
                raise AssertionError(f"import errors: {json.dumps(errors, indent=1)}")
            time.sleep(3)
        raise AssertionError(f"DAGs not parsed after {timeout}s: have {sorted(found)}")

    def trigger(self, dag_id: str, body: dict[str, Any]) -> str:
        """Unpause ``dag_id``, trigger one run and return its run id."""
        self.api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
        run = self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", body)
        return run["dag_run_id"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 600) -> dict[str, Any]:
        """Poll a DAG run until it finishes; return it with its task instances."""
        deadline = time.monotonic() + timeout
        run: dict[str, Any] = {}
        while time.monotonic() < deadline:
            self.assert_running()
            run = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
            if run["state"] in FINISHED_STATES:
                break
            time.sleep(3)
        tasks = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=1000")
        run["task_instances"] = tasks["task_instances"]
        return run

    def task_log(self, dag_id: str, run_id: str, task_instance: dict[str, Any]) -> str:
        """The log of one try of a task instance, as the UI shows it."""
        index = task_instance.get("map_index", -1)
        path = (
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/"
            f"{task_instance['task_id']}/logs/{max(task_instance.get('try_number') or 1, 1)}"
            f"?map_index={index}&full_content=true"
        )
        try:
            answer = self.api("GET", path)
        except RuntimeError as error:
            return str(error)
        content = answer.get("content", answer)
        if isinstance(content, list):
            return "\n".join(_log_line(line) for line in content)
        return str(content)

    def __enter__(self) -> AirflowCluster:
        try:
            self.migrate()
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _log_line(line: Any) -> str:
    """One structured task log line as text, with the exception and its last frames."""
    if not isinstance(line, dict):
        return str(line)
    text = str(line.get("event", ""))
    for error in line.get("error_detail") or []:
        text += f"\n{error.get('exc_type')}: {error.get('exc_value')}"
        for frame in (error.get("frames") or [])[-4:]:
            text += f"\n  {frame.get('filename')}:{frame.get('lineno')} in {frame.get('name')}"
    return text


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def _log_says(path: Path, text: str):
    """A readiness check: True once Celery has logged that the named worker is ready."""

    def check() -> bool:
        try:
            log = path.read_text(errors="replace")
        except OSError:
            return False
        return text in log and " ready." in log

    return check


@contextlib.contextmanager
def running_cluster(tmp_path_factory, sandbox_server, seaweed, bucket: str, extra_env, **kwargs):
    """A started cluster on a scratch database and broker db, connected to the sandbox and
    ``bucket``, with the ``voipstudio_api`` pool; stopped and dropped whatever happens.

    :param extra_env: more ``AIRFLOW_*`` settings of the deployment.
    :param kwargs: passed to :class:`~airflow_cluster.AirflowCluster` (``users``,
        ``dags_folder``).
    """
    with scratch_database() as database, scratch_redis_db() as broker:
        cluster = AirflowCluster(
            tmp_path_factory.mktemp("airflow-home"),
            database,
            broker,
            extra_env={
                "AIRFLOW_CONN_VOIPSTUDIO_DEFAULT": sandbox_server.airflow_conn_json(),
                "AIRFLOW_CONN_AWS_DEFAULT": seaweed.airflow_conn_uri(),
                "AIRFLOW_VAR_VOIPSTUDIO_S3_BUCKET": bucket,
                **extra_env,
            },
            **kwargs,
        )
        try:
            cluster.migrate()
            cluster.cli("pools", "set", "voipstudio_api", "4", "VoIPstudio API calls")
            cluster.start()
            yield cluster
        except BaseException as error:
            error.add_note(cluster.log_tails())
            raise
        finally:
            cluster.stop()
