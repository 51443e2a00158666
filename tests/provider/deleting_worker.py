"""A deleting task attempt in a process of its own, for the test that kills it.

``python deleting_worker.py CONFIG_JSON``: deletes the monitors dated before the cutoff in
batches of two, as try 1 of a run. Its second delete request is performed, then the
process prints ``DELETED [ids]`` and waits before confirming, to be killed there.
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
from voipstudio_provider.engine.evidence.intents import deletion_attempt
from voipstudio_provider.engine.subjects.legal_hold import LegalHold
from voipstudio_provider.hooks.voipstudio import VoIPstudioHook


def main(config: dict) -> None:
    hook = VoIPstudioHook("voipstudio_default")
    answered = hook.delete_records
    calls = []

    def delete_records(resource, ids):
        deleted = answered(resource, ids)
        calls.append(deleted)
        if len(calls) == 2:
            print("DELETED " + json.dumps(deleted), flush=True)
            time.sleep(600)  # killed here: answered, not yet confirmed nor audited
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
    target = ArchiveTarget(bucket=config["bucket"], prefix=config["prefix"])
    cutoff = dt.datetime.fromisoformat(config["cutoff"])
    with deletion_attempt(hook, s3, target, config["dag_id"], config["run_id"], "monitors", 1) as (
        audit,
        intents,
    ):
        deleter = SourceDeleter(
            hook, s3, target, audit, "monitors", hold=LegalHold(), dry_run=False, budget=100,
            batch_size=2, cutoff=cutoff, intents=intents,
            checkpoint=lambda: audit.upload(s3, target.bucket, audit.key),
        )  # fmt: skip
        deleter.run(hook.iter_records("monitors", until=cutoff))
    print("FINISHED", flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
