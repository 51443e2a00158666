"""A local VoIPstudio History API: the real service's endpoints, seeded data and faults.

Run it with ``python -m voipstudio_sandbox --port 8099 --db sandbox.sqlite --seed 1``, or
use :class:`~voipstudio_sandbox.store.Store` directly from a test.
"""
