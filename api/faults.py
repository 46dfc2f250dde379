"""Failures that are nobody's mistake in the request: the database down or restarting, the
pool exhausted, a statement cancelled by a timeout. Each becomes one coded error, the same
on every path (the middleware's authentication, compiled queries, resolvers, /healthz):

- TIMEOUT: a statement ran over TASKQL_REQUEST_STATEMENT_TIMEOUT_MS (or waited for a lock
  longer than DB_LOCK_TIMEOUT_MS); the extensions name the limit.
- SERVICE_UNAVAILABLE, ``reason`` POOL_EXHAUSTED: no pooled connection became free within
  DB_ACQUIRE_TIMEOUT; HTTP 503 with ``Retry-After``.
- SERVICE_UNAVAILABLE, ``reason`` DATABASE_UNAVAILABLE: PostgreSQL cannot be reached, is
  shutting down or restarting, or dropped the connection (asyncpg hands out a dead one after
  a restart: ``InternalClientError``, ``ConnectionDoesNotExistError``); HTTP 503 with
  ``Retry-After``.

The driver's text never reaches the client: it is logged, on one line, with the request id.
"""

from __future__ import annotations

import logging

import asyncpg

from api import errors
from api.logs import RateLimitedLog
from api.settings import Settings
from db.errors import DatabaseError, PoolTimeoutError

_log = logging.getLogger("taskql.faults")
_faults = RateLimitedLog(_log)

#: What a client is told to wait before retrying a 503 (seconds).
RETRY_AFTER_SECONDS = 1
POOL_EXHAUSTED = "POOL_EXHAUSTED"
DATABASE_UNAVAILABLE = "DATABASE_UNAVAILABLE"

#: The database (or the connection to it) is gone: shutting down, restarting, unreachable,
#: out of connection slots, or a connection the pool handed out that is already dead.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    DatabaseError,
    OSError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.PostgresConnectionError,  # class 08, ConnectionDoesNotExistError among them
    asyncpg.OperatorInterventionError,  # class 57: admin shutdown, crash, cannot connect now
    asyncpg.InsufficientResourcesError,  # class 53: too many connections, out of memory
)
#: asyncpg's own refusal to encode an argument ("invalid input for query argument $1"): an
#: InterfaceError, but about the value, not the connection.
CLIENT_DATA_ERROR = asyncpg.exceptions._base.DataError
#: Every exception ``fault`` maps.
FAULTS: tuple[type[BaseException], ...] = (
    *UNAVAILABLE,
    asyncpg.QueryCanceledError,
    asyncpg.LockNotAvailableError,
)


def fault(exc: BaseException | None, settings: Settings) -> errors.ApiError | None:
    """The coded error for an infrastructure failure, or None when ``exc`` is not one."""
    if isinstance(exc, CLIENT_DATA_ERROR):
        return None  # a value asyncpg could not encode: not the database's state (masked)
    if isinstance(exc, asyncpg.QueryCanceledError):  # 57014, before its class 57 parent
        limit = settings.taskql_request_statement_timeout_ms or settings.db_statement_timeout_ms
        name = (
            "TASKQL_REQUEST_STATEMENT_TIMEOUT_MS"
            if settings.taskql_request_statement_timeout_ms
            else "DB_STATEMENT_TIMEOUT_MS"
        )
        return errors.Timeout(
            f"the operation was cancelled: a statement ran longer than the statement timeout "
            f"({name} = {limit} ms); ask for less (smaller pages, fewer nested fields) or "
            "retry later",
            limit=name,
            limitMs=limit,
        )
    if isinstance(exc, asyncpg.LockNotAvailableError):  # 55P03: lock_timeout
        return errors.Timeout(
            "the operation was cancelled: it waited for a lock longer than the lock timeout "
            f"(DB_LOCK_TIMEOUT_MS = {settings.db_lock_timeout_ms} ms); retry later",
            limit="DB_LOCK_TIMEOUT_MS",
            limitMs=settings.db_lock_timeout_ms,
        )
    if isinstance(exc, PoolTimeoutError):
        return errors.ServiceUnavailable(
            "every database connection is busy (the connection pool is exhausted); "
            f"retry in {RETRY_AFTER_SECONDS} s",
            reason=POOL_EXHAUSTED,
            retryAfterSeconds=RETRY_AFTER_SECONDS,
        )
    if isinstance(exc, UNAVAILABLE):
        return errors.ServiceUnavailable(
            f"the database is unavailable; retry in {RETRY_AFTER_SECONDS} s",
            reason=DATABASE_UNAVAILABLE,
            retryAfterSeconds=RETRY_AFTER_SECONDS,
        )
    return None


def log(exc: BaseException, request_id: str | None, where: str) -> None:
    """One line for a fault (no traceback: the cause is outside the code), at most one per
    kind of fault and interval (``api.logs``): an outage fails every request the same way."""
    _faults.warning(
        f"fault:{type(exc).__name__}",
        "%s [request %s]: %s: %s",
        where,
        request_id,
        type(exc).__name__,
        str(exc).splitlines()[0] if str(exc) else "",
    )


def http_status(codes: list[str]) -> int | None:
    """The HTTP status a response with these error codes gets, when it is not 200."""
    return 503 if errors.SERVICE_UNAVAILABLE in codes else None
