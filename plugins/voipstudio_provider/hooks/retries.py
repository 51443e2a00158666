"""When the hook tries a request again, and how long it waits first: its tenacity policy.

Only the provider's errors that say so (``retryable``) are tried again, and a caller may
refuse more of them (a broken download into a file that cannot be rewound). The wait is the
server's ``Retry-After`` when it gave one (capped where the answer is read, see
:func:`~voipstudio_provider.hooks.responses.parse_retry_after`), otherwise an exponential
backoff with jitter. Each retry is logged as a warning with its reason, and the last error
is raised as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import tenacity

from voipstudio_provider.exceptions import VoIPstudioError
from voipstudio_provider.hooks.responses import scrub_token

T = TypeVar("T")


def with_retries(
    label: str,
    attempt_once: Callable[[], T],
    may_retry: Callable[[VoIPstudioError], bool],
    *,
    max_attempts: int,
    backoff_base: float,
    backoff_cap: float,
    token: str,
    log: logging.Logger,
) -> T:
    """Run ``attempt_once`` until it succeeds, raises an error that is not retryable (or
    that ``may_retry`` refuses), or ``max_attempts`` tries are spent; the last error is
    raised as it is, ``token`` scrubbed from it and ``after_retry`` set when it was not the
    first.

    :param label: ``METHOD /path`` for the log.
    :param backoff_base: seconds of the first wait between tries; it doubles each time.
    :param backoff_cap: longest wait between tries, in seconds.
    """
    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(max_attempts),
        wait=retry_wait(backoff_base, backoff_cap),
        retry=tenacity.retry_if_exception(lambda e: is_retryable(e) and may_retry(e)),
        before_sleep=lambda state: _log_retry(log, label, max_attempts, state),
        reraise=True,
    )
    for attempt in retrying:
        with attempt:
            try:
                return attempt_once()
            except VoIPstudioError as error:
                scrub_token(error, token)
                if attempt.retry_state.attempt_number > 1:
                    error.after_retry = True
                raise
    raise AssertionError("unreachable")  # pragma: no cover - tenacity raises or returns


def is_retryable(exc: BaseException) -> bool:
    """Whether trying again may help: only the provider's errors that say so are retried."""
    return isinstance(exc, VoIPstudioError) and exc.retryable


def retry_wait(base: float, cap: float) -> tenacity.wait.wait_base:
    """The wait after a failed try: ``Retry-After`` when the server gave one, otherwise
    exponential backoff with equal jitter (half of ``min(cap, base * 2 ** (try - 1))`` plus a
    random part of up to the other half), so that clients do not retry in step."""
    half = tenacity.wait_exponential(multiplier=base / 2, max=cap / 2)
    jitter = tenacity.wait_random_exponential(multiplier=base / 2, max=cap / 2)
    return wait_retry_after(half + jitter)


class wait_retry_after(tenacity.wait.wait_base):  # noqa: N801 - named like tenacity's waits
    """Wait what the server's ``Retry-After`` said (already capped, see
    :func:`~voipstudio_provider.hooks.responses.parse_retry_after`), or, without one, what
    ``fallback`` says."""

    def __init__(self, fallback: tenacity.wait.wait_base) -> None:
        self.fallback = fallback

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        outcome = retry_state.outcome
        retry_after = getattr(outcome.exception() if outcome else None, "retry_after", None)
        return retry_after if retry_after is not None else self.fallback(retry_state)


def _log_retry(
    log: logging.Logger, label: str, max_attempts: int, state: tenacity.RetryCallState
) -> None:
    log.warning(
        "VoIPstudio %s failed (%s); attempt %d of %d, retrying in %.2f s",
        label,
        state.outcome.exception() if state.outcome else None,
        state.attempt_number,
        max_attempts,
        state.next_action.sleep if state.next_action else 0.0,
    )
