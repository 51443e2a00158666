"""Where a task leaves its summary for the tasks after it and for people: the XCom keys.

A mapped batch pushes its counts as ``batch_summary`` (the run's summary task pulls them
all); a run's summary, and an operator's counts when it fails, go under ``summary``. The
keys are part of what a DAG's readers rely on (the tests read them too).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: The XCom key of a run's (or an operator's) summary.
SUMMARY_KEY = "summary"
#: The XCom key of one mapped batch's summary.
BATCH_SUMMARY_KEY = "batch_summary"


def push_summary(ti, summary: Mapping[str, Any], *, key: str = SUMMARY_KEY) -> None:
    """Push ``summary`` as XCom ``key`` (default ``summary``) of the task instance ``ti``."""
    ti.xcom_push(key=key, value=summary)
