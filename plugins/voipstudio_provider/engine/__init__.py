"""The engines: what the provider decides, with no Airflow context.

Archiving and uploads, proof (verification of stored bytes), evidence and deletion, the chat
archive, retention policy and legal hold, phone numbers, audit, purge plans, ledgers,
manifests, reconciliation and the bucket layout. An engine takes a hook and an S3 client and
returns plain values; the task bodies in :mod:`voipstudio_provider.tasks` call it.
"""
