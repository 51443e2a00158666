"""How a batch reports itself, and the per-thread hooks of its streams."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from voipstudio_provider.engine.archive.targets import (
    ARCHIVED,
    FAILED,
    SKIPPED,
    ArchiveOutcome,
    summarize,
)
from voipstudio_provider.engine.layout import ArchiveKind

__all__ = ["PROGRESS_INTERVAL", "SKIPPED_IDS_LOGGED", "BatchLog", "hook_per_thread"]

log = logging.getLogger("voipstudio_provider.engine.archive.writer")

#: Seconds between two progress lines of a long batch.
PROGRESS_INTERVAL = 30.0
#: How many skipped ids the batch's skip line names.
SKIPPED_IDS_LOGGED = 10


def hook_per_thread(voip_hook) -> Callable[[], Any]:
    """A factory of hooks like ``voip_hook``: the VoIPstudio hook holds one HTTP session,
    which is not for sharing between threads."""
    settings = {
        name: getattr(voip_hook, name)
        for name in ("max_attempts", "backoff_base", "backoff_cap", "retry_after_cap")
        if hasattr(voip_hook, name)
    }
    return lambda: type(voip_hook)(voip_hook.voipstudio_conn_id, **settings)


class BatchLog:
    """The operator's view of a batch: a progress line at most every ``interval`` seconds,
    and at the end one line of what was skipped and one summary line. No line per record."""

    def __init__(self, kind: ArchiveKind, total: int, interval: float) -> None:
        self.kind, self.total, self.interval = kind, total, interval
        self.lock = threading.Lock()
        self.start = self.last = time.monotonic()
        self.done = 0
        self.bytes = 0

    def count(self, outcome: ArchiveOutcome) -> None:
        with self.lock:
            self.done += 1
            if outcome.status == ARCHIVED:
                self.bytes += outcome.size or 0
            now = time.monotonic()
            if now - self.last < self.interval or self.done == self.total:
                return
            self.last = now
            done, moved, seconds = self.done, self.bytes, now - self.start
        log.info(
            "%s batch progress: %d of %d done, %.1f MB archived, %.1f MB/s",
            self.kind.name, done, self.total, moved / 1e6, moved / 1e6 / max(seconds, 1e-9),
        )  # fmt: skip

    def finish(self, outcomes: list[ArchiveOutcome]) -> None:
        counts = summarize(outcomes)
        skipped = [o.record_id for o in outcomes if o.status == SKIPPED]
        if skipped:
            shown = ", ".join(map(str, skipped[:SKIPPED_IDS_LOGGED]))
            more = (
                f" and {len(skipped) - SKIPPED_IDS_LOGGED} more"
                if len(skipped) > SKIPPED_IDS_LOGGED
                else ""
            )
            log.info(
                "%s: %d skipped as already archived: %s%s",
                self.kind.name, len(skipped), shown, more,
            )  # fmt: skip
        log.info(
            "%s batch done: %d archived, %d skipped (already archived), %d failed, "
            "%.1f MB in %.1f s",
            self.kind.name, counts[ARCHIVED], counts[SKIPPED], counts[FAILED],
            counts["bytes"] / 1e6, time.monotonic() - self.start,
        )  # fmt: skip
