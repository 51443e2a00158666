"""The compose stack: a valid Compose file that wires every service the DAGs need.

No Docker engine is needed: the file is checked against the parts of the Compose
specification it uses, then for what this project relies on (CeleryExecutor, Redis,
PostgreSQL, the connections and Variables from ``.env``, the ``local`` profile). When the
``docker compose`` plugin is installed, ``docker compose config`` checks it as well.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yaml"
ENV_EXAMPLE = REPO / ".env.example"
DOCKERFILE = REPO / "docker" / "Dockerfile"

AIRFLOW_SERVICES = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
    "airflow-worker": "celery worker",
}
LOCAL_SERVICES = {"voipstudio-sandbox", "seaweedfs", "s3-bucket"}
VARIABLES = (
    "VOIPSTUDIO_S3_BUCKET",
    "VOIPSTUDIO_S3_PREFIX",
    "VOIPSTUDIO_RETENTION_POLICY",
    "VOIPSTUDIO_LEGAL_HOLD",
    "VOIPSTUDIO_DEFAULT_REGION",
)
PLACEHOLDER_SECRETS = (
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__API__SECRET_KEY",
    "_AIRFLOW_WWW_USER_PASSWORD",
    "POSTGRES_PASSWORD",
    "LOCAL_S3_SECRET_KEY",
)

# The service attributes of the Compose specification (compose-spec.json, "service").
SERVICE_KEYS = """
annotations attach blkio_config build cap_add cap_drop cgroup cgroup_parent command configs
container_name cpu_count cpu_percent cpu_period cpu_quota cpu_rt_period cpu_rt_runtime
cpu_shares cpus cpuset credential_spec depends_on deploy develop device_cgroup_rules devices
dns dns_opt dns_search domainname entrypoint env_file environment expose extends
external_links extra_hosts gpus group_add healthcheck hostname image init ipc isolation
label_file labels links logging mac_address mem_limit mem_reservation mem_swappiness
memswap_limit models network_mode networks oom_kill_disable oom_score_adj pid pids_limit
platform ports post_start pre_stop privileged profiles provider pull_policy read_only
restart runtime scale secrets security_opt shm_size stdin_open stop_grace_period
stop_signal storage_opt sysctls tmpfs tty ulimits use_api_socket user userns_mode uts
volumes volumes_from working_dir
""".split()

_STRINGS = {"type": "array", "items": {"type": "string"}}
_COMMAND = {"oneOf": [{"type": "string"}, _STRINGS, {"type": "null"}]}
_DURATION = {"type": "string", "pattern": r"^(\d+(\.\d+)?(us|ms|s|m|h))+$"}
_SCALAR = {"type": ["string", "number", "boolean", "null"]}

COMPOSE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "services": {
            "type": "object",
            "propertyNames": {"pattern": r"^[a-zA-Z0-9._-]+$"},
            "additionalProperties": {"$ref": "#/definitions/service"},
        },
        "volumes": {
            "type": "object",
            "additionalProperties": {"type": ["object", "null"]},
        },
        "networks": {"type": "object"},
        "configs": {"type": "object"},
        "secrets": {"type": "object"},
    },
    "patternProperties": {"^x-": {}},
    "additionalProperties": False,
    "required": ["services"],
    "definitions": {
        "service": {
            "type": "object",
            "propertyNames": {"anyOf": [{"enum": SERVICE_KEYS}, {"pattern": "^x-"}]},
            "anyOf": [{"required": ["image"]}, {"required": ["build"]}],
            "properties": {
                "image": {"type": "string"},
                "build": {
                    "oneOf": [
                        {"type": "string"},
                        {
                            "type": "object",
                            "properties": {
                                "context": {"type": "string"},
                                "dockerfile": {"type": "string"},
                                "args": {"type": "object"},
                                "target": {"type": "string"},
                            },
                            "additionalProperties": False,
                        },
                    ]
                },
                "command": _COMMAND,
                "entrypoint": _COMMAND,
                "user": {"type": "string"},
                "restart": {"enum": ["no", "always", "on-failure", "unless-stopped"]},
                "profiles": _STRINGS,
                "expose": {"type": "array", "items": {"type": ["string", "integer"]}},
                "ports": {"type": "array", "items": {"type": ["string", "integer", "object"]}},
                "volumes": {"type": "array", "items": {"type": ["string", "object"]}},
                "environment": {
                    "oneOf": [{"type": "object", "additionalProperties": _SCALAR}, _STRINGS]
                },
                "env_file": {
                    "oneOf": [
                        {"type": "string"},
                        {
                            "type": "array",
                            "items": {
                                "oneOf": [
                                    {"type": "string"},
                                    {
                                        "type": "object",
                                        "required": ["path"],
                                        "properties": {
                                            "path": {"type": "string"},
                                            "required": {"type": "boolean"},
                                            "format": {"type": "string"},
                                        },
                                        "additionalProperties": False,
                                    },
                                ]
                            },
                        },
                    ]
                },
                "depends_on": {
                    "oneOf": [
                        _STRINGS,
                        {
                            "type": "object",
                            "additionalProperties": {
                                "type": "object",
                                "required": ["condition"],
                                "properties": {
                                    "condition": {
                                        "enum": [
                                            "service_started",
                                            "service_healthy",
                                            "service_completed_successfully",
                                        ]
                                    },
                                    "required": {"type": "boolean"},
                                    "restart": {"type": ["boolean", "string"]},
                                },
                                "additionalProperties": False,
                            },
                        },
                    ]
                },
                "healthcheck": {
                    "type": "object",
                    "properties": {
                        "test": {"oneOf": [{"type": "string"}, _STRINGS]},
                        "interval": _DURATION,
                        "timeout": _DURATION,
                        "start_period": _DURATION,
                        "start_interval": _DURATION,
                        "retries": {"type": "integer", "minimum": 0},
                        "disable": {"type": "boolean"},
                    },
                    "additionalProperties": False,
                },
            },
        }
    },
}


def load_compose() -> dict[str, Any]:
    # PyYAML's safe loader resolves the "<<" merge keys the way Compose does.
    return yaml.safe_load(COMPOSE_FILE.read_text())


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a Compose ``.env`` file: ``KEY=VALUE``, single quotes literal, ``#`` comments."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        if value[:1] == "'" and value[-1:] == "'":
            value = value[1:-1]
        elif value[:1] == '"' and value[-1:] == '"':
            value = value[1:-1]
        values[key.strip()] = value
    return values


def environment_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def command_of(service: dict[str, Any], key: str = "command") -> list[str]:
    value = service.get(key) or []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def mounts_of(service: dict[str, Any]) -> dict[str, str]:
    """``{target: source}`` of a service's short-syntax volumes, defaults interpolated."""
    mounts = {}
    for mount in service.get("volumes") or []:
        source, target = substitute(mount, {}).split(":")[:2]
        mounts[target] = source
    return mounts


def substitute(text: str, env: dict[str, str]) -> str:
    """Resolve Compose's ``${VAR}``, ``${VAR:-default}`` and ``$$`` as ``docker compose`` does."""

    def one(match: re.Match[str]) -> str:
        name, _, default = match.group(1).partition(":-")
        return env.get(name) or default

    return re.sub(r"\$\{([^}]+)\}", one, text).replace("$$", "$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)


def test_the_compose_file_follows_the_compose_specification(compose):
    jsonschema.validate(compose, COMPOSE_SCHEMA)


def test_the_schema_rejects_what_compose_rejects(compose):
    broken = yaml.safe_load(COMPOSE_FILE.read_text())
    broken["services"]["airflow-worker"]["depend_on"] = ["redis"]  # a typo Compose refuses
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, COMPOSE_SCHEMA)


def test_dependencies_named_volumes_and_profiles_are_consistent(compose):
    services = compose["services"]
    declared_volumes = set(compose.get("volumes") or {})
    for name, service in services.items():
        depends_on = service.get("depends_on") or {}
        if isinstance(depends_on, list):
            depends_on = {dependency: {"condition": "service_started"} for dependency in depends_on}
        for dependency, rule in depends_on.items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"
            # A dependency on an optional (profiled) service must be optional itself.
            if services[dependency].get("profiles") and not service.get("profiles"):
                assert rule.get("required") is False, f"{name} requires {dependency}"
        for source in mounts_of(service).values():
            if not source.startswith(("/", ".")):
                assert source in declared_volumes, f"{name} mounts undeclared volume {source}"


def test_every_airflow_component_runs_with_celery_redis_and_postgres(compose):
    services = compose["services"]
    assert {"postgres", "redis", "airflow-init", *AIRFLOW_SERVICES} <= services.keys()
    for name, command in AIRFLOW_SERVICES.items():
        service = services[name]
        assert command_of(service) == command.split(), name
        assert "healthcheck" in service, name
        assert service.get("restart") == "always", name
        assert not service.get("profiles"), f"{name} must run without a profile"
        env = environment_of(service)
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://:@redis:6379/")
        assert (
            env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
            and "@postgres/" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        )
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://")
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == (
            "http://airflow-apiserver:8080/execution/"
        )
        assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false"
        assert service["env_file"] == ".env"
        mounts = mounts_of(service)
        for folder in ("dags", "plugins", "include"):
            assert mounts[f"/opt/airflow/{folder}"] == f"./{folder}", name
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert service["depends_on"]["airflow-init"]["condition"] == (
            "service_completed_successfully"
        )
        assert service["build"]["dockerfile"] == "docker/Dockerfile"


def test_init_migrates_and_creates_the_api_pool(compose, env_example):
    init = compose["services"]["airflow-init"]
    script = substitute(command_of(init)[-1], env_example)
    assert "airflow db migrate" in script
    pool = re.search(r"airflow pools set (\S+) \"?(\d+)\"? \"([^\"]+)\"", script)
    assert pool, script
    assert pool.group(1) == "voipstudio_api"
    assert int(pool.group(2)) == int(env_example["VOIPSTUDIO_API_POOL_SLOTS"]) > 0


def test_the_local_profile_adds_the_sandbox_s3_and_the_bucket(compose, env_example):
    services = compose["services"]
    for name in LOCAL_SERVICES:
        assert services[name]["profiles"] == ["local"], name
    sandbox = services["voipstudio-sandbox"]
    argv = command_of(sandbox, "entrypoint") + [
        substitute(a, env_example) for a in command_of(sandbox)
    ]
    assert argv[:3] == ["python", "-m", "voipstudio_sandbox"]
    assert {"--host=0.0.0.0", "--port=8099", "--db=/data/sandbox.sqlite", "--seed=1"} <= set(argv)
    assert "/opt/airflow/include" in environment_of(sandbox)["PYTHONPATH"].split(":")
    assert mounts_of(sandbox)["/data"] in compose["volumes"]
    weed = " ".join(command_of(services["seaweedfs"]))
    assert "weed server -s3" in weed and "-s3.port=8333" in weed
    bucket = services["s3-bucket"]
    assert bucket["depends_on"]["seaweedfs"]["condition"] == "service_healthy"
    assert "create_bucket" in command_of(bucket)[-1]
    # Nothing outside the profile depends on it, so the stack also starts without it.
    for name, service in services.items():
        if "local" not in service.get("profiles", []):
            local_only = {"voipstudio-sandbox", "seaweedfs", "s3-bucket"}
            assert not local_only & set(service.get("depends_on", {})), name


def test_env_example_configures_both_connections_for_the_local_profile(env_example):
    from airflow.sdk import Connection

    voipstudio = Connection.from_json(
        env_example["AIRFLOW_CONN_VOIPSTUDIO_DEFAULT"], conn_id="voipstudio_default"
    )
    assert voipstudio.conn_type == "voipstudio"
    assert voipstudio.host == "http://voipstudio-sandbox:8099/v1.1/voipstudio"
    assert voipstudio.password == env_example["VOIPSTUDIO_SANDBOX_TOKEN"]

    aws = Connection.from_json(env_example["AIRFLOW_CONN_AWS_DEFAULT"], conn_id="aws_default")
    assert aws.conn_type == "aws"
    assert aws.extra_dejson["endpoint_url"] == "http://seaweedfs:8333"
    assert aws.extra_dejson["region_name"]
    # The local S3 server's identity and the connection's keys are the same pair.
    assert (aws.login, aws.password) == (
        env_example["LOCAL_S3_ACCESS_KEY"],
        env_example["LOCAL_S3_SECRET_KEY"],
    )


def test_env_example_sets_the_variables_and_holds_no_secret(env_example):
    for name in VARIABLES:
        assert f"AIRFLOW_VAR_{name}" in env_example, name
    policy = json.loads(env_example["AIRFLOW_VAR_VOIPSTUDIO_RETENTION_POLICY"])
    assert policy and all(isinstance(days, int) and days > 0 for days in policy.values())
    hold = json.loads(env_example["AIRFLOW_VAR_VOIPSTUDIO_LEGAL_HOLD"])
    assert set(hold) == {"ids", "numbers"}
    from voipstudio_provider.engine.subjects.phone_numbers import parse_region

    assert parse_region(env_example["AIRFLOW_VAR_VOIPSTUDIO_DEFAULT_REGION"]) == "GB"
    for key in PLACEHOLDER_SECRETS:
        assert env_example[key].startswith("change-me"), f"{key} must be a placeholder"


def test_every_interpolated_variable_without_default_is_in_env_example(env_example):
    text = COMPOSE_FILE.read_text()
    for match in re.finditer(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?][^}]*)?\}", text):
        name, rest = match.group(1), match.group(2) or ""
        if not rest.startswith((":-", "-")):
            assert name in env_example, f"${{{name}}} has no default and is not in .env.example"


def test_the_image_extends_airflow_and_installs_the_provider():
    dockerfile = DOCKERFILE.read_text()
    assert "ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11" in dockerfile
    assert re.search(r"pip install .*\"apache-airflow==\$\{AIRFLOW_VERSION\}\"", dockerfile)
    for source in re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", dockerfile, flags=re.M):
        for path in source.split():
            assert (REPO / path).exists(), f"COPY {path}: not in the repository"
    ignore = (REPO / "docker" / "Dockerfile.dockerignore").read_text().splitlines()
    assert "*" in ignore and "!plugins/voipstudio_provider" in ignore


def _compose_command() -> list[str] | None:
    """``docker compose`` (v2 plugin) or Debian's ``docker-compose``: both parse offline."""
    if (
        shutil.which("docker")
        and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


@pytest.mark.skipif(_compose_command() is None, reason="neither docker compose nor docker-compose")
def test_docker_compose_config_accepts_the_file(tmp_path):
    (tmp_path / ".env").write_text(ENV_EXAMPLE.read_text())
    shutil.copy(COMPOSE_FILE, tmp_path / COMPOSE_FILE.name)
    result = subprocess.run(
        [*_compose_command(), "--profile", "local", "config", "--quiet"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
