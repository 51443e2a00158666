"""Exports: a user's CDRs of a day as a CSV object (:mod:`.cdr_csv`).

May import: its own modules and the ground.
"""
