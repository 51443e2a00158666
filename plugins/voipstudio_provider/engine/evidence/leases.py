"""How a later run tells a deleting attempt that died from one still at work.

While it may delete, each task attempt keeps a *lease* object below its run's audit key,
``{run_id}.leases/{attempt}.json``, naming its host and process and refreshed every
:data:`HEARTBEAT` seconds by a thread. The attempt removes it when it ends; a process
killed outright leaves it behind. An attempt is taken for dead when its process is gone
from this very host, or when its lease was not refreshed for the settling grace.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import threading
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from voipstudio_provider.engine.layout import audit_key
from voipstudio_provider.engine.s3objects import put_json

log = logging.getLogger(__name__)

#: Seconds between two refreshes of a live attempt's lease.
HEARTBEAT = 60.0


def leases_prefix(prefix: str, dag_id: str, run_id: str) -> str:
    """Where a run's attempts keep their leases: ``{run_id}.leases/``."""
    return audit_key(prefix, dag_id, run_id).removesuffix(".jsonl") + ".leases/"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class AttemptLease:
    """The lease of one deleting task attempt; ``with AttemptLease(...):`` holds it.

    :param s3_client: a boto3 S3 client (used from the heartbeat thread too).
    :param target: the run's archive target (bucket, prefix, write options).
    :param part: the attempt's name, e.g. ``monitors.try2``.
    :param write_args: S3 write arguments (encryption), never Object Lock.
    """

    def __init__(
        self, s3_client, target, dag_id: str, run_id: str, part: str, write_args: dict
    ) -> None:
        self.s3_client = s3_client
        self.bucket = target.bucket
        self.key = f"{leases_prefix(target.prefix, dag_id, run_id)}{part}.json"
        self.write_args = write_args
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, name=f"lease {part}", daemon=True)

    def _write(self) -> None:
        document = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "refreshed": _now().isoformat(timespec="seconds"),
        }
        put_json(self.s3_client, self.bucket, self.key, document, write_args=self.write_args)

    def _beat(self) -> None:
        while not self.stopped.wait(HEARTBEAT):
            try:
                self._write()
            except (ClientError, BotoCoreError) as error:  # the next beat tries again
                log.warning("could not refresh the lease %s: %s", self.key, error)

    def __enter__(self) -> AttemptLease:
        self._write()
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)
        self.s3_client.delete_object(Bucket=self.bucket, Key=self.key)


def process_gone(lease: dict[str, Any]) -> bool:
    """Whether a lease's process is certainly gone: it ran on this host and is no more."""
    if lease.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(lease["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, KeyError, TypeError, ValueError):
        return False
    return False


def lease_is_dead(lease: dict[str, Any], now: dt.datetime, grace: dt.timedelta) -> bool:
    """Whether the attempt holding ``lease`` is dead (see the module's description)."""
    if process_gone(lease):
        return True
    try:
        refreshed = dt.datetime.fromisoformat(lease["refreshed"])
    except (KeyError, TypeError, ValueError):
        return True
    return now - refreshed >= grace


def read_lease(s3_client, bucket: str, key: str) -> dict[str, Any] | None:
    """A lease's document, ``None`` when it is gone or unreadable."""
    try:
        answer = s3_client.get_object(Bucket=bucket, Key=key)
    except ClientError:
        return None
    with answer["Body"] as body:
        try:
            return json.loads(body.read())
        except ValueError:
            return None
