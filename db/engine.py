"""The Piccolo engine and its bounded asyncpg pool.

One engine object, ``DB``, is shared by every table (``db.tables`` binds it explicitly) and
by Piccolo's migration runner (``piccolo_conf.DB`` is this object). It is configured at
start-up with the URL of the role the process runs as: the owner role for migrations,
the server role for the API.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Any

import asyncpg
from piccolo.engine.postgres import PostgresEngine, PostgresTransaction

from db import metrics
from db.errors import PoolTimeoutError, unavailable
from db.settings import DatabaseSettings

_log = logging.getLogger(__name__)


class Connection(asyncpg.Connection):  # type: ignore[misc]  # asyncpg is untyped
    """asyncpg's connection, able to end a transaction and reset itself in one round trip.

    A connection goes back to the pool through ``reset()``: asyncpg sends its reset query
    (advisory locks, cursors, LISTENs, session settings) in a round trip of its own after
    the COMMIT. ``end_transaction`` sends the two together; the reset that follows on
    release then has nothing left to send. Only for a connection released right after it.

    On a pool opened with ``session_reset=False`` (the API server's: ``Engine.
    start_connection_pool``), a connection whose transaction ``end_transaction`` ended
    cleanly goes back with nothing sent: the end is a bare COMMIT or ROLLBACK. Any other
    release (an error or a cancellation on the way, a transaction ended otherwise, no
    transaction) still gets asyncpg's full reset, which also fails, and so discards the
    connection, when an operation is still in progress on it.
    """

    __slots__ = ("_closing", "_ended_cleanly", "_reset_sent", "_session_reset")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reset_sent = False
        #: Whether the pool resets session state on every release (``_transaction_scoped``).
        self._session_reset = True
        #: ``end_transaction`` returned normally and nothing ran since (``_reset_if_needed``).
        self._ended_cleanly = False
        #: Set when taskql (or the pool) closes it: any other end is a lost connection.
        self._closing = False
        metrics.CONNECTIONS_OPENED.inc()
        self.add_termination_listener(_terminated)

    async def close(self, *, timeout: float | None = None) -> None:  # noqa: ASYNC109  # asyncpg's signature
        self._closing = True
        await super().close(timeout=timeout)

    def terminate(self) -> None:
        self._closing = True
        super().terminate()

    async def end_transaction(self, commit: bool, then_fetch: str | None = None) -> Any:
        """COMMIT (or ROLLBACK), with the reset query in the same simple-protocol message
        unless the pool resets no session state; then ``then_fetch``'s value, if given (a
        statement outside the transaction: the commit's WAL position). If the COMMIT fails,
        PostgreSQL skips the rest and the pool resets on release as usual."""
        ending = "COMMIT" if commit else "ROLLBACK"
        self._ended_cleanly = False
        if self._session_reset:
            await self.execute(f"{ending};\n{super().get_reset_query()}")
            self._reset_sent = True
        else:
            await self.execute(ending)
        value = await self.fetchval(then_fetch) if then_fetch else None
        self._ended_cleanly = True
        return value

    def get_reset_query(self) -> str:
        if self._reset_sent:
            self._reset_sent = False
            return ""
        return str(super().get_reset_query())


async def _transaction_scoped(connection: Connection) -> None:
    """A pool's ``init``: this connection's pool resets no session state after a clean end."""
    connection._session_reset = False


async def _reset_if_needed(connection: Connection) -> None:
    """A pool's ``reset`` (asyncpg has already rolled back a transaction left open and
    dropped the listener callbacks, ``Connection._reset``): nothing to send after a clean
    ``end_transaction``; asyncpg's full reset after anything else.

    Nothing to reset after a clean end because nothing taskql runs on the API server's
    pool leaves session state: every setting is transaction-local (``set_config(...,
    true)``, ``SET LOCAL``: ``db.tenancy``), it takes no session advisory lock, declares no
    cursor WITH HOLD, creates no temporary table and never LISTENs (the realtime listener
    is a connection of its own). ``tests/db/test_rls.py`` runs taskql's transactions on a
    pool of one and compares the connection's session state with a fresh connection's."""
    clean, connection._ended_cleanly = connection._ended_cleanly, False
    if not clean:
        await connection.execute(asyncpg.Connection.get_reset_query(connection))


def _terminated(connection: Connection) -> None:
    if getattr(connection, "_closing", False):
        metrics.CONNECTIONS_CLOSED.inc()
    else:
        metrics.CONNECTIONS_LOST.inc()


class Transaction(PostgresTransaction):
    """Piccolo's transaction, but acquiring from the pool with a timeout (and, behind
    PgBouncer, applying the connection settings transaction-locally after BEGIN)."""

    engine: Engine

    async def begin(self) -> None:
        await super().begin()  # type: ignore[no-untyped-call]
        if self.engine.transaction_settings_sql:
            await self.connection.execute(self.engine.transaction_settings_sql)

    async def get_connection(self) -> asyncpg.Connection:
        if self.engine.pool is None:
            return await self.engine.get_new_connection()
        return await self.engine.acquire()


class Engine(PostgresEngine):
    """A PostgresEngine that is configured after import and never connects on its own."""

    def __init__(self) -> None:
        super().__init__(config={}, extensions=())
        self.dsn: str | None = None
        #: What ``configure`` was given (an engine of the same kind: ``DB.settings``).
        self.settings: DatabaseSettings | None = None
        self.acquire_timeout: float = 5.0
        self.pgbouncer = False
        #: What opens a transaction: BEGIN, plus (behind PgBouncer) the connection settings.
        self.begin_sql = "BEGIN;"
        #: Behind PgBouncer, the connection settings, set transaction-locally by one
        #: statement; else empty.
        self.transaction_settings_sql = ""

    # Piccolo's base class connects at construction to check the version and create
    # extensions; we do neither here (migrations create extensions, `connect` checks).
    async def check_version(self) -> None:
        return None

    async def prep_database(self) -> None:
        return None

    def configure(self, dsn: str, settings: DatabaseSettings) -> None:
        """Point the engine at ``dsn``, with the settings every connection gets.

        Directly connected, they are start-up parameters of each connection. Behind PgBouncer
        (``DB_PGBOUNCER``), which refuses start-up parameters it does not track, only
        ``application_name`` and ``DateStyle`` (both tracked per client by PgBouncer) are
        sent at start-up; the others are set transaction-locally by the first message of
        every transaction (``begin_sql``, ``transaction_settings_sql``), so they hold on
        whichever server connection PgBouncer lends and never outlive the transaction.
        """
        self.dsn = dsn
        self.settings = settings
        self.acquire_timeout = settings.db_acquire_timeout
        self.pgbouncer = settings.db_pgbouncer
        connection_settings = connection_settings_of(settings)
        server_settings = {
            "application_name": settings.db_application_name,
            # Cursors carry sort keys as PostgreSQL's text output, and
            # api.pagination checks them against the ISO form: pin it.
            "DateStyle": "ISO, MDY",
        }
        if settings.db_pgbouncer:
            # One statement, not a SET LOCAL each: PostgreSQL counts (and parses, plans and
            # runs) one instead of four per transaction. Same effect: set_config(..., true).
            self.transaction_settings_sql = (
                "SELECT "
                + ", ".join(
                    f"set_config('{name}', '{value}', true)"
                    for name, value in connection_settings.items()
                )
                + ";"
            )
        else:
            server_settings.update(connection_settings)
            self.transaction_settings_sql = ""
        self.begin_sql = f"BEGIN;{self.transaction_settings_sql}"
        self.config = {
            "dsn": dsn,
            "timeout": settings.db_connect_timeout,
            "statement_cache_size": settings.statement_cache_size,
            "connection_class": Connection,
            "server_settings": server_settings,
        }
        self._pool_size = (settings.db_pool_min_size, settings.db_pool_max_size)

    async def get_new_connection(self) -> asyncpg.Connection:
        if self.dsn is None:
            raise RuntimeError("db.engine.DB is not configured: call DB.configure() first")
        try:
            return await asyncpg.connect(**self.config)
        except (TimeoutError, OSError, socket.gaierror, asyncpg.PostgresError) as exc:
            raise unavailable(self.dsn, exc) from None

    async def start_connection_pool(self, *, session_reset: bool = True, **kwargs: Any) -> None:
        """Open the bounded pool; fails with one clear line if the server is unreachable.

        ``session_reset``: asyncpg's reset query (advisory locks, cursors, LISTENs, session
        settings: four statements) on every release. False for a pool whose users leave
        no session state (the API server's, see ``_reset_if_needed``): a request is then
        BEGIN, its statements and COMMIT, as PostgreSQL counts them."""
        if self.dsn is None:
            raise RuntimeError("db.engine.DB is not configured: call DB.configure() first")
        min_size, max_size = self._pool_size
        options: dict[str, Any] = {"min_size": min(min_size, max_size), "max_size": max_size}
        if not session_reset:
            options.update(init=_transaction_scoped, reset=_reset_if_needed)
        options.update(kwargs)
        try:
            await super().start_connection_pool(**options)
        except (TimeoutError, OSError, socket.gaierror, asyncpg.PostgresError) as exc:
            raise unavailable(self.dsn, exc) from None

    async def acquire(self) -> asyncpg.Connection:
        """A pooled connection within the acquire timeout (timed and counted), or
        PoolTimeoutError. The caller releases it to ``self.pool``."""
        pool = self.pool
        if pool is None:
            raise RuntimeError("the connection pool is not open")
        if not metrics.enabled:
            try:
                return await pool.acquire(timeout=self.acquire_timeout)
            except TimeoutError:
                raise self._timed_out(pool) from None
        started = time.perf_counter()
        metrics.POOL_WAITING.inc()
        try:
            return await pool.acquire(timeout=self.acquire_timeout)
        except TimeoutError:
            metrics.POOL_ACQUIRE_TIMEOUTS.inc()
            raise self._timed_out(pool) from None
        finally:
            metrics.POOL_WAITING.dec()
            metrics.POOL_ACQUIRE_SECONDS.observe(time.perf_counter() - started)

    async def close_pool_within(self, grace: float) -> bool:
        """Close the pool, waiting at most ``grace`` seconds for its connections to come
        back; then terminate it (every connection closed at once). True if it closed
        cleanly. asyncpg's close waits forever for a connection that is never released, and
        ``asyncio.wait_for`` would then wait for the cancelled close too: ``asyncio.wait``
        does not."""
        pool = self.pool
        if pool is None:
            return True
        closing = asyncio.ensure_future(self.close_connection_pool())
        done, _ = await asyncio.wait({closing}, timeout=grace)
        clean = bool(done) and closing.exception() is None
        if not clean:
            if not done:
                closing.cancel()
            name = self.settings.db_application_name if self.settings else "?"
            _log.warning("pool (%s) not closed within %s s: terminated", name, grace)
            pool.terminate()
        self.pool = None
        return clean

    def _timed_out(self, pool: asyncpg.Pool) -> PoolTimeoutError:
        return PoolTimeoutError(
            f"no database connection free within {self.acquire_timeout:g} s "
            f"(pool max size {pool.get_max_size()})"
        )

    async def ping(self) -> str:
        """Connect once and return the server version; raises DatabaseUnavailableError."""
        connection = await self.get_new_connection()
        try:
            return str(await connection.fetchval("SELECT current_setting('server_version')"))
        finally:
            await connection.close()

    def transaction(self, allow_nested: bool = True) -> Transaction:
        return Transaction(engine=self, allow_nested=allow_nested)


def connection_settings_of(settings: DatabaseSettings) -> dict[str, str]:
    """The settings every server-role connection needs, whoever's the transaction: the
    bounds on statements, locks and idle transactions, and the task tree's maximum depth
    (read by the database, migration 18). Integers only: safe to put in SQL text."""
    return {
        "statement_timeout": str(int(settings.db_statement_timeout_ms)),
        "lock_timeout": str(int(settings.db_lock_timeout_ms)),
        "idle_in_transaction_session_timeout": str(int(settings.db_idle_in_transaction_timeout_ms)),
        "taskql.max_task_depth": str(int(settings.taskql_max_task_depth)),
    }


DB = Engine()
