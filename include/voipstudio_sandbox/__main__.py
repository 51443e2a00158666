"""``python -m voipstudio_sandbox``: serve the sandbox History API on a local port."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import uvicorn
from voipstudio_provider.endpoints import MAX_PAGE_SIZE

from voipstudio_sandbox.accounts import CSV_EXPORT_MODES, Settings
from voipstudio_sandbox.app import DEFAULT_TOKEN, Sandbox, create_app
from voipstudio_sandbox.generate import ENUM_ENCODINGS
from voipstudio_sandbox.store import Store


def _page_cap(value: str) -> int | None:
    """``--max-page-size``: a positive number of rows, or ``none`` for no cap."""
    if value.strip().lower() == "none":
        return None
    size = int(value)
    if size < 1:
        raise argparse.ArgumentTypeError("must be a positive integer or none")
    return size


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m voipstudio_sandbox",
        description="A local VoIPstudio History API with seeded data and fault injection.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument(
        "--db", type=Path, default=Path("sandbox.sqlite"),
        help="SQLite file; reused across restarts when made from the same seed and scale",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=1, help="the same seed gives the same data")
    parser.add_argument("--token", default=DEFAULT_TOKEN, help="the account root's API token")
    parser.add_argument(
        "--scale", type=float, default=1,
        help="multiplies the generated history (1: about 400 CDRs; 250: about 100,000)",
    )  # fmt: skip
    parser.add_argument(
        "--faults", type=json.loads, default=None,
        help='fault rules as JSON, like PUT /__sandbox__/faults: {"seed": 7, "rules": [...]}',
    )  # fmt: skip
    parser.add_argument(
        "--csv-export", choices=CSV_EXPORT_MODES, default="job",
        help="/users/{id}/cdrs.csv answers 202 with a queued job (job) or streams the CSV",
    )  # fmt: skip
    parser.add_argument(
        "--max-page-size",
        type=_page_cap,
        default=MAX_PAGE_SIZE,
        help="answer at most this many rows per list page, whatever limit asks for "
        f"(default {MAX_PAGE_SIZE}; none: no cap)",
    )
    parser.add_argument(
        "--enums", choices=ENUM_ENCODINGS, default="strings",
        help="enumerations are sent as strings (as every public client sees them), as "
        "integers (as the reference's examples show), or mixed (robustness tests)",
    )  # fmt: skip
    parser.add_argument("--log-level", default="warning")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    args.db.parent.mkdir(parents=True, exist_ok=True)
    settings = Settings().updated(
        {"csv_export": args.csv_export, "max_page_size": args.max_page_size, "enums": args.enums}
    )
    sandbox = Sandbox(
        Store(args.db, seed=args.seed, scale=args.scale, enums=args.enums),
        token=args.token,
        default_settings=settings,
        settings=settings,
    )
    if args.faults is not None:
        sandbox.faults.replace(args.faults)
    uvicorn.run(
        create_app(sandbox),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        timeout_graceful_shutdown=2,
    )


if __name__ == "__main__":
    main()
