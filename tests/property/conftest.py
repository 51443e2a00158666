"""Hypothesis profiles for the property tests that search the fault space.

``ci`` (the default, used by ``make test``) runs a bounded, repeatable number of scenarios;
``fuzz`` (``make fuzz``) searches at random: each property test runs round after round of
``FUZZ_ROUND`` examples until ``FUZZ_MINUTES`` have passed for it, then prints how many
examples it tried. Every failure either mode finds is kept in the test as an ``@example``.
"""

from __future__ import annotations

import os
import time

import pytest
from hypothesis import HealthCheck, settings

_SLOW_CHECKS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
FUZZ = os.environ.get("HYPOTHESIS_PROFILE", "ci") == "fuzz"
#: Minutes each property test searches for in the long mode.
FUZZ_MINUTES = float(os.environ.get("FUZZ_MINUTES", "0"))

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=_SLOW_CHECKS,
)
settings.register_profile(
    "fuzz",
    max_examples=int(os.environ.get("FUZZ_ROUND", "200")),
    deadline=None,
    print_blob=True,
    suppress_health_check=_SLOW_CHECKS,
)
settings.load_profile("fuzz" if FUZZ else "ci")


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function):
    """In the long mode, run a Hypothesis test in random rounds until its time is up."""
    test = pyfuncitem.obj
    if not (FUZZ and FUZZ_MINUTES > 0 and getattr(test, "is_hypothesis_test", False)):
        return None
    inner = test.hypothesis.inner_test
    tried = 0

    def counted(*args, **kwargs):
        nonlocal tried
        tried += 1
        return inner(*args, **kwargs)

    test.hypothesis.inner_test = counted
    names = pyfuncitem._fixtureinfo.argnames
    arguments = {name: pyfuncitem.funcargs[name] for name in names}
    deadline, rounds = time.monotonic() + FUZZ_MINUTES * 60, 0
    try:
        while time.monotonic() < deadline:
            test(**arguments)
            rounds += 1
    finally:
        test.hypothesis.inner_test = inner
        capture = pyfuncitem.config.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled():
            print(f"\nfuzz: {pyfuncitem.nodeid}: {tried} examples in {rounds} rounds")
    return True
