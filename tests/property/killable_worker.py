"""A retention attempt in a process of its own, for the tests that kill it outright.

``python killable_worker.py CONFIG_JSON`` deletes the monitors dated before the cutoff, in
batches of two, as try 1 of the run ``run_id``, exactly as the retention task does (bucket
probe, intents, checkpoints, the attempt's audit part). It prints a line at every step a
kill may hit (``INTENT``, ``SENDING``, ``ANSWERED``, ``PART``) and pauses ``pause`` seconds
after it, so that a SIGKILL sent on reading the line lands at that step.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time

import boto3
from botocore.config import Config
from voipstudio_provider.engine.archive.writer import ArchiveTarget
from voipstudio_provider.engine.deletion.deleter import SourceDeleter
from voipstudio_provider.engine.evidence.intents import deletion_attempt, probe_bucket
from voipstudio_provider.engine.subjects.legal_hold import LegalHold
from voipstudio_provider.hooks.voipstudio import VoIPstudioHook


def main(config: dict) -> None:
    pause = float(config.get("pause", 0.3))

    def step(name: str) -> None:
        print(name, flush=True)
        time.sleep(pause)

    hook = VoIPstudioHook("voipstudio_default", backoff_base=0.01, backoff_cap=0.05)
    answered = hook.delete_records

    def delete_records(resource, ids):
        step("SENDING")
        deleted = answered(resource, ids)
        step("ANSWERED")
        return deleted

    hook.delete_records = delete_records
    s3 = boto3.client(
        "s3",
        endpoint_url=config["endpoint_url"],
        aws_access_key_id=config["access_key"],
        aws_secret_access_key=config["secret_key"],
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )
    put = s3.put_object

    def put_object(**kwargs):
        answer = put(**kwargs)
        if ".intents/" in kwargs["Key"]:
            step("INTENT")
        elif ".parts/" in kwargs["Key"]:
            step("PART")
        return answer

    s3.put_object = put_object
    target = ArchiveTarget(bucket=config["bucket"], prefix=config["prefix"])
    cutoff = dt.datetime.fromisoformat(config["cutoff"])
    dag_id, run_id = config["dag_id"], config["run_id"]
    probe_bucket(s3, target, dag_id, run_id, "monitors.try1")
    with deletion_attempt(hook, s3, target, dag_id, run_id, "monitors", 1) as (audit, intents):
        deleter = SourceDeleter(
            hook, s3, target, audit, "monitors", hold=LegalHold(), dry_run=False, budget=100,
            batch_size=2, cutoff=cutoff, intents=intents, confirm_timeout=2.0,
            audit_fields={"cutoff": cutoff.isoformat()},
            checkpoint=lambda: audit.upload(s3, target.bucket, audit.key),
        )  # fmt: skip
        deleter.run(hook.iter_records("monitors", until=cutoff))
    print("FINISHED", flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
