"""Deletion: what is deleted, at the source and in the archive, and in which order.

Owns the deleter of retention and purges (:mod:`.deleter`: a record goes only when its own
date is past the cutoff, no hold applies and its archived copy verifies), the retention
policy (:mod:`.retention`), the chat archive's say over chat messages (:mod:`.chats`), the
compliance purge (:mod:`.purge`), its approval by a second person (:mod:`.approval`),
masking numbers in CDRs (:mod:`.masking`) and the erasure of archived copies
(:mod:`.erasure`, :mod:`.erasure_scope`). The rule that decides whether a recording may be
deleted is the check of each record in
:class:`.deleter.SourceDeleter` (its ``_check``).

May import: its own modules, the ground and every package below it
(:mod:`~voipstudio_provider.engine.subjects`, :mod:`~voipstudio_provider.engine.archive`,
:mod:`~voipstudio_provider.engine.evidence`).

``voipstudio_provider.engine.deletion.<name>`` of earlier releases, where this package was
one module, still gives the names of :mod:`.deleter`, with a :class:`DeprecationWarning`.
"""

from voipstudio_provider.engine import moved_attribute


def __getattr__(name: str) -> object:
    return moved_attribute(__name__, name)
