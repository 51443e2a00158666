"""Evidence: what a deletion rests on, and the record it leaves behind.

Owns the bucket probe and the write-ahead intents of every delete request
(:mod:`.intents`), the audit log (:mod:`.audit`), the leases that tell a dead attempt from a
live one and the settling of what dead runs left (:mod:`.leases`, :mod:`.recovery`), purge
plans as approved (:mod:`.plans`), the chained daily manifests and the check that their
chain holds (:mod:`.manifests`, :mod:`.manifest_chain`), the
reconciliation of source and archive (:mod:`.reconciliation`), and the readers of reports
and audits for a person (:mod:`.coverage`, :mod:`.deletion_runs`).

May import: its own modules, the ground, :mod:`~voipstudio_provider.engine.subjects` and
:mod:`~voipstudio_provider.engine.archive`.

``voipstudio_provider.engine.evidence.<name>`` of earlier releases, where this package was
one module, still gives the names of :mod:`.intents`, with a :class:`DeprecationWarning`.
"""

from voipstudio_provider.engine import moved_attribute


def __getattr__(name: str) -> object:
    return moved_attribute(__name__, name)
