"""Archive: writing VoIPstudio's binaries and documents to S3, and proving what was stored.

Owns where and how objects are written (:mod:`.targets`), the proof that a stored binary
holds the bytes the API served for that very record (:mod:`.proof`), streaming bodies into
S3 (:mod:`.uploads`, :mod:`.stored`), archiving one batch (:mod:`.writer`, with
:mod:`.progress`), the batches of a run (:mod:`.batches`), the high-water marks
(:mod:`.highwater`) and the ledgers of what each batch stored (:mod:`.ledger`). Whether an
archived copy verifies, the question every deletion asks first, is
:func:`.proof.verify_archive`.

May import: its own modules, the ground and :mod:`~voipstudio_provider.engine.subjects`
(a batch indexes the numbers of what it archived).

``voipstudio_provider.engine.archive.<name>`` of earlier releases, where this package was
one module, still gives the names of :mod:`.writer`, with a :class:`DeprecationWarning`.
"""

from voipstudio_provider.engine import moved_attribute


def __getattr__(name: str) -> object:
    return moved_attribute(__name__, name)
