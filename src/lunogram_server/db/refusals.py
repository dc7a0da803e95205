"""Writes the database refuses by a rule of ours (identity/sql/limits.sql), and how callers learn of it.

A refused write changed nothing. Functions that write one thing raise an SQLSTATE of our own (below); the
upsert batches, which must not fail every upsert committed with the refused one, answer the item with
`[status, detail]` instead, which identity/profiles.py turns into `Refused`. The HTTP layer answers both
with a problem JSON of that status (http/problems.py).
"""

from __future__ import annotations

import psycopg

DATA_TOO_LARGE = "22LN1"  # stored data over LUNOGRAM_MAX_PROFILE_DATA_BYTES (a data exception: DataError)
PUBLIC_MERGE = "42LN3"  # a public key's upsert would merge two identified profiles
STATUS = {DATA_TOO_LARGE: 413, PUBLIC_MERGE: 403}


class Refused(Exception):
    """A write refused by a limit or rule the database enforces: `status` and `detail` for the caller."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def refusal(exc: BaseException) -> Refused | None:
    """`exc` as a Refused when it is one of ours (a Refused, or a database error with one of our SQLSTATEs)."""
    if isinstance(exc, Refused):
        return exc
    if isinstance(exc, psycopg.Error) and exc.sqlstate in STATUS:
        return Refused(STATUS[exc.sqlstate], exc.diag.message_primary or str(exc))
    return None
