"""Archive throughput: this provider against the Amazon provider's HttpToS3Operator and a bare loop.

Starts the VoIPstudio sandbox and SeaweedFS on loopback, adds the recordings to archive, and
archives the same set three ways, each in a process of its own so that its peak memory is
its own:

- ``provider``: :func:`voipstudio_provider.engine.archive.writer.archive_batch` (spooled, hashed,
  verified, with sidecars);
- ``http_to_s3``: ``HttpToS3Operator.execute()`` per recording (it reads each body whole);
- ``bare_loop``: ``requests`` streaming each body straight into ``upload_fileobj``;
- ``boto3_best``: the best plain boto3 can do for the size: a small body read whole and
  stored with one ``put_object``; a large one downloaded to a temporary file, then
  ``upload_file`` with ``--streams`` parts in parallel;
- ``boto3_sidecar``: ``boto3_best`` doing the work the bucket layout asks of the provider,
  for comparison only (it is not a reference): each body stored with its SHA-256 checksum,
  then a JSON sidecar of the record, two objects per recording.

All run ``--streams`` transfers at a time. Workloads: many recordings of ``--size``
bytes, one recording of ``--large-size`` bytes, ``--voicemails`` recordings of
``--voicemail-size`` bytes (``http_to_s3`` is left out there: it needs most of an hour),
and a re-run of the provider over the first workload's archived window (no download and
no PUT may happen). Each table gives the provider's ratio to the fastest reference method
of the same run, the peak RSS growth, and the S3 and API requests per recording.

    python benchmarks/archive_throughput.py                # the four workloads
    python benchmarks/archive_throughput.py --tiny         # a few seconds, for smoke tests
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("provider", "http_to_s3", "bare_loop", "boto3_best", "boto3_sidecar")
REFERENCES = ("http_to_s3", "bare_loop", "boto3_best")
MB = 1000 * 1000
MIB = 1024 * 1024


# -- the three ways, each run in a child process ---------------------------------------------


def _archive_with_provider(records: list[dict], job: dict) -> int:
    from voipstudio_provider.engine.archive.writer import (
        ArchiveTarget,
        archive_batch,
        s3_client_for,
    )
    from voipstudio_provider.engine.layout import ARCHIVE_KINDS
    from voipstudio_provider.hooks.voipstudio import VoIPstudioHook

    s3 = s3_client_for("aws_default", job["streams"])
    target = ArchiveTarget(bucket=job["bucket"], prefix="bench")
    with VoIPstudioHook("voipstudio_default") as hook:
        outcomes = archive_batch(
            hook,
            s3,
            ARCHIVE_KINDS["monitors"],
            records,
            target,
            max_streams=job["streams"],
            upload_streams=job.get("upload_streams"),
        )
    wanted = "skipped" if job.get("rerun") else "archived"
    failed = [o for o in outcomes if o.status != wanted]
    if failed:
        raise SystemExit(f"{len(failed)} not archived, e.g. {failed[0].error}")
    return sum(o.size or 0 for o in outcomes)


def _archive_with_http_to_s3(records: list[dict], job: dict) -> int:
    from airflow.providers.amazon.aws.transfers.http_to_s3 import HttpToS3Operator

    def one(record: dict) -> int:
        HttpToS3Operator(
            task_id=f"archive_{record['id']}",
            http_conn_id="voipstudio_bench_http",
            endpoint=f"monitors/{record['id']}.mp3",
            headers={"X-Auth-Token": job["token"]},
            s3_bucket=job["bucket"],
            s3_key=f"bench/{record['id']}.mp3",
            replace=True,
        ).execute(context={})
        return record["size"]

    with ThreadPoolExecutor(max_workers=job["streams"]) as pool:
        return sum(pool.map(one, records))


def _reference_s3_client(job: dict, **config):
    """A plain boto3 client of the local server, as the reference methods build it."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=job["s3_endpoint"],
        aws_access_key_id=job["s3_access_key"],
        aws_secret_access_key=job["s3_secret_key"],
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, **config),
    )


def _archive_with_bare_loop(records: list[dict], job: dict) -> int:
    import threading

    import requests
    from boto3.s3.transfer import TransferConfig

    s3 = _reference_s3_client(job)
    config = TransferConfig(multipart_chunksize=8 * MIB, max_concurrency=1, use_threads=False)
    local = threading.local()

    def one(record: dict) -> int:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        url = f"{job['base_url']}/monitors/{record['id']}.mp3"
        with session.get(url, headers={"X-Auth-Token": job["token"]}, stream=True) as response:
            response.raise_for_status()
            s3.upload_fileobj(
                response.raw, job["bucket"], f"bench/{record['id']}.mp3", Config=config
            )
        return record["size"]

    with ThreadPoolExecutor(max_workers=job["streams"]) as pool:
        return sum(pool.map(one, records))


def _archive_with_boto3(records: list[dict], job: dict, sidecar: bool = False) -> int:
    """``boto3_best``, or with ``sidecar`` ``boto3_sidecar``: each body stored with its
    SHA-256 checksum, then a JSON sidecar of the record."""
    import base64
    import hashlib
    import tempfile
    import threading

    import requests
    from boto3.s3.transfer import TransferConfig

    s3 = _reference_s3_client(job, max_pool_connections=4 * job["streams"])
    config = TransferConfig(multipart_chunksize=8 * MIB, max_concurrency=job["streams"])
    local = threading.local()

    def checked(body: bytes) -> dict:
        digest = hashlib.sha256(body).digest()
        return {"ChecksumSHA256": base64.b64encode(digest).decode()} if sidecar else {}

    def one(record: dict) -> int:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        url = f"{job['base_url']}/monitors/{record['id']}.mp3"
        key = f"bench/{record['id']}"
        headers = {"X-Auth-Token": job["token"]}
        digest = hashlib.sha256()
        if record["size"] < 8 * MIB:
            with session.get(url, headers=headers) as response:
                response.raise_for_status()
                body = response.content
            s3.put_object(Bucket=job["bucket"], Key=key + ".mp3", Body=body, **checked(body))
            if sidecar:
                digest.update(body)
        else:
            with tempfile.NamedTemporaryFile() as spool:
                with session.get(url, headers=headers, stream=True) as response:
                    response.raise_for_status()
                    for chunk in response.iter_content(chunk_size=MIB):
                        if sidecar:
                            digest.update(chunk)
                        spool.write(chunk)
                spool.flush()
                extra = {"ChecksumAlgorithm": "SHA256"} if sidecar else None
                s3.upload_file(spool.name, job["bucket"], key + ".mp3", extra, Config=config)
        if sidecar:
            document = {**record, "sha256": digest.hexdigest()}
            body = json.dumps(document, sort_keys=True).encode()
            s3.put_object(
                Bucket=job["bucket"],
                Key=key + ".json",
                Body=body,
                ContentType="application/json",
                **checked(body),
            )
        return record["size"]

    with ThreadPoolExecutor(max_workers=job["streams"]) as pool:
        return sum(pool.map(one, records))


def _archive_with_boto3_best(records: list[dict], job: dict) -> int:
    return _archive_with_boto3(records, job)


def _archive_with_boto3_sidecar(records: list[dict], job: dict) -> int:
    return _archive_with_boto3(records, job, sidecar=True)


WAYS = {
    "provider": _archive_with_provider,
    "http_to_s3": _archive_with_http_to_s3,
    "bare_loop": _archive_with_bare_loop,
    "boto3_best": _archive_with_boto3_best,
    "boto3_sidecar": _archive_with_boto3_sidecar,
}


def _count_s3_requests() -> list[int]:
    """Count every request any botocore client of this process sends."""
    from botocore.endpoint import Endpoint

    count = [0]
    send = Endpoint._send

    def counting_send(self, request):
        count[0] += 1
        return send(self, request)

    Endpoint._send = counting_send
    return count


def run_worker(job_path: str) -> None:
    """Child process: archive the job's records one way, then write timings and peak RSS."""
    import psutil

    job = json.loads(Path(job_path).read_text())
    records = job["records"]
    way = WAYS[job["method"]]
    # Import everything the way needs before the baseline, so that it counts transfers only.
    way([], job)
    s3_requests = _count_s3_requests()
    # Resident size now, not the peak so far: imports may have peaked higher than that.
    baseline = psutil.Process().memory_info().rss / 1024
    cpu_before = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
    start = time.perf_counter()
    total = way(records, job)
    seconds = time.perf_counter() - start
    cpu = sum(resource.getrusage(resource.RUSAGE_SELF)[:2]) - cpu_before
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = {"items": len(records), "bytes": total, "seconds": seconds, "cpu_seconds": cpu}
    result["s3_requests"] = s3_requests[0]
    result.update(baseline_mib=baseline / 1024, peak_mib=peak / 1024)
    Path(job["result"]).write_text(json.dumps(result))


# -- the parent: servers, workloads, table ---------------------------------------------------


def _servers_cpu(servers: dict) -> float:
    """CPU seconds the sandbox and SeaweedFS (with their children) have used so far."""
    import psutil

    total = 0.0
    for server in (servers["s3"], servers["sandbox"]):
        root = psutil.Process(server.process.proc.pid)
        for proc in [root, *root.children(recursive=True)]:
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def _measure(
    method: str,
    records: list[dict],
    servers: dict,
    workdir: Path,
    streams: int,
    rerun_bucket: str | None = None,
    upload_streams: int | None = None,
) -> dict:
    s3 = servers["s3"]
    bucket = rerun_bucket or f"bench-{method.replace('_', '-')}-{uuid.uuid4().hex[:8]}"
    if rerun_bucket is None:
        s3.client().create_bucket(Bucket=bucket)
    servers["sandbox"].control("DELETE", "requests")
    job = {
        "rerun": rerun_bucket is not None,
        "method": method,
        "records": records,
        "bucket": bucket,
        "streams": streams,
        "upload_streams": upload_streams,
        "base_url": servers["sandbox"].base_url,
        "token": servers["sandbox"].token,
        "s3_endpoint": s3.endpoint_url,
        "s3_access_key": s3.access_key,
        "s3_secret_key": s3.secret_key,
        "result": str(workdir / f"{bucket}.result.json"),
    }
    job_path = workdir / f"{bucket}.job.json"
    job_path.write_text(json.dumps(job))
    servers_cpu = _servers_cpu(servers)
    child = subprocess.run(
        [sys.executable, __file__, "--worker", str(job_path)],
        env=servers["env"],
        capture_output=True,
        text=True,
    )
    if child.returncode != 0:
        raise RuntimeError(f"{method} failed:\n{child.stderr[-4000:]}")
    result = json.loads(Path(job["result"]).read_text())
    result["server_cpu_seconds"] = _servers_cpu(servers) - servers_cpu
    log = servers["sandbox"].control("GET", "requests")
    result["api_requests"] = log["total"]
    result["downloads"] = sum(1 for e in log["data"] if e["path"].endswith(".mp3"))
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="bench/")
    stored = sum(page.get("KeyCount", 0) for page in pages)
    binaries = stored // 2 if method in ("provider", "boto3_sidecar") else stored  # + sidecars
    if binaries != len(records):
        raise RuntimeError(f"{method}: {binaries} objects stored for {len(records)} recordings")
    return {"method": method, "bucket": bucket, **result}


def _table(title: str, rows: list[dict]) -> str:
    def rate(row: dict) -> float:
        return row["bytes"] / MB / row["seconds"] if row["seconds"] else 0.0

    references = [r for r in rows if r["method"] in REFERENCES]
    best = max(references, key=rate, default=None)
    header = (
        f"{'method':<12} {'items':>6} {'MB':>9} {'seconds':>8} {'MB/s':>8} "
        f"{'vs best':>8} {'peak RSS MB':>12} {'RSS growth MB':>14} {'S3 req/rec':>11} "
        f"{'API req/rec':>12} {'CPU ms/rec':>11} {'servers CPU ms/rec':>19}"
    )
    lines = [title, header, "-" * len(header)]
    for row in rows:
        ratio = f"{rate(row) / rate(best):.2f}" if best and rate(best) else "-"
        lines.append(
            f"{row['method']:<12} {row['items']:>6} {row['bytes'] / MB:>9.1f} "
            f"{row['seconds']:>8.2f} {rate(row):>8.2f} {ratio:>8} {row['peak_mib']:>12.0f} "
            f"{row['peak_mib'] - row['baseline_mib']:>14.0f} "
            f"{row['s3_requests'] / max(1, row['items']):>11.3f} "
            f"{row['api_requests'] / max(1, row['items']):>12.3f} "
            f"{1000 * row['cpu_seconds'] / max(1, row['items']):>11.2f} "
            f"{1000 * row['server_cpu_seconds'] / max(1, row['items']):>19.2f}"
        )
    if best:
        lines.append(f"fastest reference: {best['method']}")
    same = next((r for r in rows if r["method"] == "boto3_sidecar"), None)
    provider = next((r for r in rows if r["method"] == "provider"), None)
    if same and provider and rate(same):
        lines.append(
            f"provider vs boto3_sidecar (the same two objects per recording): "
            f"{rate(provider) / rate(same):.2f}"
        )
    return "\n".join(lines)


def _rerun_table(title: str, row: dict) -> str:
    return (
        f"{title}\n{row['items']} recordings in {row['seconds']:.2f} s: "
        f"{row['s3_requests']} S3 requests ({row['s3_requests'] / max(1, row['items']):.4f} "
        f"per recording), {row['api_requests']} API requests, {row['downloads']} downloads, "
        f"peak RSS growth {row['peak_mib'] - row['baseline_mib']:.0f} MB"
    )


def _add_recordings(sandbox, count: int, size: int) -> list[dict]:
    ids = set(
        sandbox.control("POST", "records/monitors", {"count": count, "fields": {"size": size}})[
            "ids"
        ]
    )
    return [m for m in sandbox.control("GET", "records/monitors")["data"] if m["id"] in ids]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recordings", type=int, default=2000, help="recordings of --size")
    parser.add_argument("--size", type=int, default=500_000, help="bytes per recording")
    parser.add_argument("--large-size", type=int, default=1024**3, help="0 skips the large one")
    parser.add_argument("--voicemails", type=int, default=20_000, help="0 skips them")
    parser.add_argument("--voicemail-size", type=int, default=50_000, help="bytes per voicemail")
    parser.add_argument("--streams", type=int, default=4, help="transfers at a time")
    parser.add_argument(
        "--upload-streams",
        type=int,
        help="the provider's records being stored while --streams download (its default)",
    )
    parser.add_argument("--scale", type=int, default=1, help="the sandbox's --scale")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated")
    parser.add_argument("--tiny", action="store_true", help="8 x 50 kB, one 6 MiB, 20 x 5 kB")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        run_worker(args.worker)
        return 0
    if args.tiny:
        args.recordings, args.size, args.large_size = 8, 50_000, 6 * MIB
        args.voicemails, args.voicemail_size = 20, 5_000
    methods = [m for m in args.methods.split(",") if m]
    unknown = set(methods) - set(METHODS)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}; known: {', '.join(METHODS)}")

    sys.path[:0] = [str(ROOT / "include"), str(ROOT / "plugins")]
    from voipstudio_devstack import SandboxServer, SeaweedS3

    with tempfile.TemporaryDirectory(prefix="voipstudio-bench-") as tmp:
        workdir = Path(tmp)
        # One volume per bucket instead of seven: the benchmark makes a bucket per run.
        os.environ.setdefault("WEED_MASTER_VOLUME_GROWTH_COPY_1", "1")
        sandbox_args = ["--scale", str(args.scale)] if args.scale != 1 else []
        with (
            SeaweedS3(workdir / "seaweedfs") as s3,
            SandboxServer(workdir / "sandbox", extra_args=sandbox_args) as sandbox,
        ):
            env = {
                **os.environ,
                "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), str(ROOT / "include")]),
                "AIRFLOW_HOME": str(workdir / "airflow"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW_CONN_VOIPSTUDIO_DEFAULT": sandbox.airflow_conn_json(),
                "AIRFLOW_CONN_VOIPSTUDIO_BENCH_HTTP": json.dumps(
                    {"conn_type": "http", "host": sandbox.base_url}
                ),
                "AIRFLOW_CONN_AWS_DEFAULT": s3.airflow_conn_uri(),
                "TMPDIR": str(workdir),
            }
            servers = {"s3": s3, "sandbox": sandbox, "env": env}
            workloads = [
                (f"{args.recordings} recordings x {args.size} bytes", args.recordings, args.size)
            ]
            if args.large_size:
                workloads.append((f"1 recording x {args.large_size} bytes", 1, args.large_size))
            if args.voicemails:
                title = f"{args.voicemails} small voicemails x {args.voicemail_size} bytes"
                workloads.append((title, args.voicemails, args.voicemail_size))
            first: tuple[list[dict], str] | None = None
            for title, count, size in workloads:
                records = _add_recordings(sandbox, count, size)
                ways = [m for m in methods if m != "http_to_s3" or count <= 5000]
                rows = [
                    _measure(m, records, servers, workdir, args.streams, None, args.upload_streams)
                    for m in ways
                ]
                print(_table(f"{title}, {args.streams} streams", rows), end="\n\n", flush=True)
                provider = next((r for r in rows if r["method"] == "provider"), None)
                if first is None and provider:
                    first = (records, provider["bucket"])
            if first:
                records, bucket = first
                row = _measure(
                    "provider", records, servers, workdir, args.streams, bucket, args.upload_streams
                )
                title = "re-run of the provider over the first workload's archived window"
                print(_rerun_table(title, row), end="\n\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
