"""Which database errors are transient, and the retry of a call while they last.

The schedule (attempts, back-off, deadline) is :mod:`aretriever.retry`'s one rule; this module only
classifies errors, by driver error code and exception type, never by message text.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import sqlalchemy as sa

from aretriever.retry import call_retrying, decide

log = logging.getLogger("aretriever.store")
T = TypeVar("T")

# SQLSTATE classes worth retrying: connection exception, transaction rollback (serialization,
# deadlock), insufficient resources, operator intervention (shutdown, restart), lock not available
_TRANSIENT_SQLSTATES = ("08", "40", "53", "57P", "55P03")
_RETRY_CAP_S = 5.0  # a database back within seconds is not kept waiting long
# SQLite result codes that retrying cannot fix (SQLITE_ERROR is e.g. "no such table")
_PERMANENT_SQLITE = frozenset({"SQLITE_ERROR", "SQLITE_CORRUPT", "SQLITE_NOTADB"})


def _orig_attr(exc: sa.exc.DBAPIError, name: str) -> str | None:
    value = getattr(exc.orig, name, None)
    return value if isinstance(value, str) else None


def is_transient(exc: BaseException) -> bool:
    """Return True if a database error is transient (:mod:`aretriever.retry`'s one meaning).

    The connection, a lock or the server failed, not the data or the statement. Decided by
    exception type and by the driver's error code (PostgreSQL SQLSTATE, SQLite result name),
    never by the message text.
    """
    if isinstance(exc, sa.exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        if _orig_attr(exc, "sqlite_errorname") in _PERMANENT_SQLITE:
            return False
        sqlstate = _orig_attr(exc, "sqlstate") or _orig_attr(exc, "pgcode")
        if sqlstate is not None:
            return sqlstate.startswith(_TRANSIENT_SQLSTATES)
        return isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError))
    return isinstance(exc, (sa.exc.TimeoutError, OSError))


async def retry_transient(
    call: Callable[[], Awaitable[T]], *, what: str, for_s: float = 120.0, base_s: float = 0.05
) -> T:
    """``await call()``, again while it fails for a transient reason, for up to ``for_s`` seconds.

    For the engine's reads and claims (skip checks, the work queue) and the row writer's batches:
    a database restarting for a few seconds pauses the run instead of ending it. The schedule is
    the shared rule (:func:`aretriever.retry.decide`); this module only says what is transient.
    """
    return await call_retrying(
        call,
        transient=is_transient,
        what=f"store: {what}",
        for_s=for_s,
        base_s=base_s,
        max_s=_RETRY_CAP_S,
        log=log,
    )


def retry_delay(
    exc: BaseException, attempt: int, remaining_s: float, base_s: float = 0.05, cap_s: float = _RETRY_CAP_S
) -> float | None:
    """Return how long to wait before retry number ``attempt`` (1-based), or None to give up.

    :func:`aretriever.retry.decide` with the database's classification: gives up on errors that
    are not transient and once ``remaining_s`` is spent; the delay doubles from ``base_s`` up to
    ``cap_s``.
    """
    d = decide(
        attempt=attempt,
        transient=is_transient(exc),
        remaining_s=remaining_s,
        base_s=base_s,
        max_s=cap_s,
        jitter=1.0,  # no randomness: a few processes at most wait on one database
    )
    return d.delay_s if d.retry else None
