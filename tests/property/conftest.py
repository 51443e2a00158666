"""Hypothesis profiles for the property tests that search the deletion fault space.

``ci`` (the default, used by ``make test``) runs a bounded, repeatable number of scenarios;
``fuzz`` (``make fuzz``) runs many more, randomly, for as long as ``FUZZ_MINUTES`` allows.
Every failure either mode finds is kept in the test as an explicit ``@example``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_SLOW_CHECKS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=_SLOW_CHECKS,
)
settings.register_profile(
    "fuzz",
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "100000")),
    deadline=None,
    print_blob=True,
    suppress_health_check=_SLOW_CHECKS,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
