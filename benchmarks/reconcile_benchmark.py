"""Reconciliation cost: S3 and API requests, and time, for a year of recordings.

Starts the VoIPstudio sandbox and SeaweedFS on loopback, adds ``--records`` recordings
spread evenly over the 366 days of 2024 (before the sandbox's own history), stores each as
the archive does (binary, sidecar, and one ledger object per ``--batch`` records of a day;
the bodies are a few bytes, as reconciliation never reads them), then reconciles the year
twice: once with no manifests yet (the first run writes one a day) and once more. It
prints the requests each run made and the formula for other sizes. In the second run the
ledgers are only minutes older than the manifests, so they are read again (a ledger stored
less than an hour before its day's manifest is); on a real archive, whose ledgers are days
older, that run reads two objects a day.

    python benchmarks/reconcile_benchmark.py                  # 100,000 recordings
    python benchmarks/reconcile_benchmark.py --records 2000   # a quick look
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import json
import math
import os
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIRST, LAST = dt.date(2024, 1, 1), dt.date(2024, 12, 31)
DAYS = (LAST - FIRST).days + 1


def add_recordings(sandbox, count: int) -> list[dict]:
    """``count`` monitors spread over the year, each claiming a 16-byte body."""
    per_day, extra = divmod(count, DAYS)
    for offset in range(DAYS):
        n = per_day + (1 if offset < extra else 0)
        if n:
            day = FIRST + dt.timedelta(days=offset)
            fields = {"timestamp": f"{day.isoformat()} 12:00:00", "size": 16}
            sandbox.control("POST", "records/monitors", {"count": n, "fields": fields})
    rows = sandbox.control("GET", "records/monitors")["data"]
    return [r for r in rows if r["timestamp"].startswith("2024-")]


def store_archive(s3, bucket: str, prefix: str, records: list[dict], batch: int) -> None:
    """What the archive DAG leaves for each record: binary, sidecar, ledger lines."""
    from voipstudio_provider.engine.archive.ledger import jsonl
    from voipstudio_provider.engine.layout import (
        ARCHIVE_KINDS,
        archive_key,
        ledger_key,
        sidecar_key,
    )

    kind = ARCHIVE_KINDS["monitors"]
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")

    def store(record: dict) -> dict:
        body = f"{record['id']:016d}".encode()
        digest = hashlib.sha256(body)
        key = archive_key(prefix, kind, record)
        put = s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=body,
            ContentType="audio/mpeg",
            Metadata={"sha256": digest.hexdigest(), "size": str(len(body))},
            ChecksumSHA256=base64.b64encode(digest.digest()).decode(),
        )
        sidecar = {**record, "sha256": digest.hexdigest(), "size": len(body), "archived_at": now}
        s3.put_object(
            Bucket=bucket,
            Key=sidecar_key(prefix, kind, record),
            Body=json.dumps(sidecar).encode(),
            ContentType="application/json",
        )
        return {
            "kind": "monitors",
            "record_id": record["id"],
            "key": key,
            "size": len(body),
            "sha256": digest.hexdigest(),
            "s3_checksum": put.get("ChecksumSHA256"),
            "etag": put["ETag"].strip('"'),
            "archived_at": now,
        }

    with ThreadPoolExecutor(max_workers=16) as pool:
        lines = list(pool.map(store, records))
    by_day: dict[str, list[dict]] = {}
    for line in lines:
        by_day.setdefault(line["key"].split("/date=")[1][:10], []).append(line)
    for day, day_lines in by_day.items():
        for start in range(0, len(day_lines), batch):
            chunk = day_lines[start : start + batch]
            name = f"monitors-{chunk[0]['record_id']}-{chunk[-1]['record_id']}-{uuid.uuid4().hex}"
            key = ledger_key(prefix, dt.date.fromisoformat(day), name)
            s3.put_object(Bucket=bucket, Key=key, Body=jsonl(chunk))


def reconcile_once(hook, s3, target, sandbox) -> dict:
    from voipstudio_provider.tasks.reconcile import run_reconciliation

    sandbox.control("DELETE", "requests")
    started = time.perf_counter()
    report = run_reconciliation(
        hook,
        s3,
        target,
        FIRST,
        LAST,
        report_day=LAST + dt.timedelta(days=1),
        now=dt.datetime.now(dt.UTC),
        resources=("monitors",),
    )
    seconds = time.perf_counter() - started
    api = [r for r in sandbox.control("GET", "requests")["data"] if r["path"].startswith("/v1")]
    gaps = sum(len(ids) for found in report["gaps"].values() for ids in found.values())
    return {"seconds": seconds, "api": len(api), "s3": report["s3_requests"], "gaps": gaps}


def formula(records_per_year: int, batch: int, page_size: int) -> str:
    """The requests of one daily run over 365 days, for ``records_per_year`` recordings."""
    per_day = records_per_year / 365
    lists = 365 * (math.ceil(2 * per_day / 1000) + 1)  # recordings folder, ledger folder
    ledgers = 365 * (math.ceil(per_day / batch) + 1)  # and the previous day's manifest
    pages = 365 * math.ceil(per_day / page_size)
    return (
        f"{records_per_year:,} recordings a year, one run over 365 days:\n"
        f"  ListObjectsV2  365 x (ceil(2 x {per_day:.0f} keys / 1000) + 1) = {lists:,}\n"
        f"  GetObject      first run: ledgers and previous manifest, "
        f"365 x (ceil({per_day:.0f} / {batch}) + 1) = "
        f"{ledgers:,}; then 2 a day (the manifest's .jsonl and .json) = 730, plus the "
        f"ledgers stored since a day's manifest\n"
        f"  HeadObject     0 (only for objects archived before ledgers existed)\n"
        f"  PutObject      first run 2 a day (the manifests), later runs only for changed "
        f"days; and the report itself (not in its own count)\n"
        f"  API pages      365 x ceil({per_day:.0f} / {page_size}) = {pages:,}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000, help="recordings in the year")
    parser.add_argument("--batch", type=int, default=200, help="records per ledger object")
    args = parser.parse_args(argv)

    sys.path[:0] = [str(ROOT / "include"), str(ROOT / "plugins")]
    from voipstudio_devstack import SandboxServer, SeaweedS3

    with tempfile.TemporaryDirectory(prefix="voipstudio-reconcile-bench-") as tmp:
        workdir = Path(tmp)
        os.environ.setdefault("WEED_MASTER_VOLUME_GROWTH_COPY_1", "1")
        os.environ["AIRFLOW_HOME"] = str(workdir / "airflow")
        os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
        with (
            SeaweedS3(workdir / "seaweedfs") as seaweed,
            SandboxServer(workdir / "sandbox") as sandbox,
        ):
            os.environ["AIRFLOW_CONN_VOIPSTUDIO_DEFAULT"] = sandbox.airflow_conn_json()
            import boto3
            from botocore.config import Config
            from voipstudio_provider.engine.archive.writer import ArchiveTarget
            from voipstudio_provider.hooks.voipstudio import VoIPstudioHook

            s3 = boto3.client(  # as many connections as store_archive has threads
                "s3",
                endpoint_url=seaweed.endpoint_url,
                aws_access_key_id=seaweed.access_key,
                aws_secret_access_key=seaweed.secret_key,
                region_name="us-east-1",
                config=Config(max_pool_connections=16, retries={"max_attempts": 3}),
            )
            bucket = f"bench-{uuid.uuid4().hex[:8]}"
            s3.create_bucket(Bucket=bucket)
            target = ArchiveTarget(bucket=bucket, prefix="bench")
            started = time.perf_counter()
            records = add_recordings(sandbox, args.records)
            store_archive(s3, bucket, target.prefix, records, args.batch)
            print(f"arranged {len(records):,} recordings in {time.perf_counter() - started:.0f} s")
            hook = VoIPstudioHook("voipstudio_default")
            header = f"{'run':<14} {'seconds':>8} {'API':>6} {'gaps':>5}  S3 requests"
            print(header)
            print("-" * len(header))
            for name in ("first run", "second run"):
                row = reconcile_once(hook, s3, target, sandbox)
                cells = f"{row['seconds']:>8.1f} {row['api']:>6} {row['gaps']:>5}"
                print(f"{name:<14} {cells}  {row['s3']}")
            print()
            print(formula(len(records), args.batch, hook.page_size))
            print(formula(2_000_000, args.batch, hook.page_size))
            hook.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
