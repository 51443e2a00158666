"""Check the archive's manifests, and optionally every object, with nothing but S3 reads.

``python -m voipstudio_provider.verify_manifest --bucket B --prefix P --from DAY --to DAY
[--objects]`` recomputes each day's chain (every version's ``.jsonl`` digest, the version it
supersedes, the previous day it names) and with ``--objects`` compares every object's
size and S3 ``ChecksumSHA256`` with its manifest line and looks for objects of the day that
no manifest lists. A tombstone (an erased object's line) must carry the SHA-256 of the
line it replaced in the version before, and with ``--objects`` its key must be gone. It
prints one line per thing that does not hold and exits 1 if any.
The check itself is
:func:`voipstudio_provider.engine.evidence.manifest_chain.verify`, which the
``voipstudio_reconcile`` DAG runs too.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Sequence

from voipstudio_provider.engine.evidence.manifest_chain import verify

__all__ = ["main", "verify"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m voipstudio_provider.verify_manifest")
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--prefix", default="voipstudio")
    parser.add_argument("--from", dest="first", required=True, type=dt.date.fromisoformat)
    parser.add_argument("--to", dest="last", required=True, type=dt.date.fromisoformat)
    parser.add_argument("--objects", action="store_true", help="also check every object")
    parser.add_argument("--endpoint-url", help="an S3-compatible server (default: AWS)")
    args = parser.parse_args(argv)
    import boto3

    s3_client = boto3.client("s3", endpoint_url=args.endpoint_url)
    result = verify(
        s3_client, args.bucket, args.prefix, args.first, args.last, objects=args.objects
    )
    for problem in result["problems"]:
        print(problem)
    verdict = "FAILED" if result["problems"] else "OK"
    print(
        f"{verdict}: {result['days']} days, {result['manifests']} manifests, "
        f"{result['objects']} objects checked, {len(result['problems'])} problems"
    )
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
