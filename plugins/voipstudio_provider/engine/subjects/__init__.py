"""Subjects: whom an archived record concerns, and what holds it.

Owns the reading of phone numbers (:mod:`.phone_numbers`: E.164, one rule for holds and
purges), the legal hold of the Variable ``voipstudio_legal_hold`` (:mod:`.legal_hold`), the
subject index of archived records' numbers (:mod:`.subject_index`), the S3 legal holds on
archived copies (:mod:`.object_holds`) and how much each hold locks (:mod:`.hold_reach`).
The rule that decides whether a record is held is :meth:`.legal_hold.LegalHold.reason`.

May import: its own modules and the ground (:mod:`~voipstudio_provider.engine.layout`,
:mod:`~voipstudio_provider.engine.s3objects`, :mod:`~voipstudio_provider.engine.summaries`).
"""
