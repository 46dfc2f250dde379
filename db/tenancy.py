"""Tenant context: one transaction whose first statement sets who is acting, for whom.

Every setting is transaction-local (``set_config(..., true)``): it ends with the
transaction, so a pooled connection never carries one request's tenant into the next.
Row-level security policies and the audit trigger read these settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast
from uuid import UUID

import asyncpg

from db.engine import DB, Connection, Engine, Transaction
from db.errors import DatabaseError
from db.executor import Executor


class MemberRole(StrEnum):
    """A member's role in an organization, highest first: each includes the rights of the
    roles after it. The one definition of the roles and their order: the API's ``Role``
    enum, its rank checks, the compiler's role rules and the tests derive from it (the
    database's CHECK on organization_members.role names the same values)."""

    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"
    VIEWER = "viewer"

    @property
    def rank(self) -> int:
        """0 for viewer ... 3 for owner."""
        members = list(MemberRole)
        return len(members) - 1 - members.index(self)

    def includes(self, other: str) -> bool:
        """Whether this role has every right of ``other``."""
        return self.rank >= MemberRole(other).rank


#: Role values, highest first.
ROLES = tuple(role.value for role in MemberRole)

#: One round trip: all settings in one statement, bound as parameters (never formatted).
SET_CONTEXT_SQL = """
SELECT set_config('app.organization_id', $1, true),
       set_config('app.user_id', $2, true),
       set_config('app.role', $3, true),
       set_config('app.request_id', $4, true),
       set_config('app.client_ip', $5, true),
       set_config('app.user_agent', $6, true),
       CASE WHEN $7 <> '' THEN set_config('statement_timeout', $7, true) END
"""


@dataclass(frozen=True, slots=True)
class TenantContext:
    """Who acts (user, role) in which tenant, and the request's trace for the audit log."""

    organization_id: UUID | None = None
    user_id: UUID | None = None
    role: str | None = None
    request_id: str | None = None
    client_ip: str | None = None
    user_agent: str | None = None
    #: Overrides the connection's statement_timeout for this transaction only.
    statement_timeout_ms: int | None = None

    def __post_init__(self) -> None:
        if self.role is not None and self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r}")
        if self.client_ip is not None:
            # The audit trigger casts it to inet: a malformed value must fail here, not there.
            ipaddress.ip_address(self.client_ip)

    def parameters(self) -> tuple[str, ...]:
        def text(value: object | None) -> str:
            return "" if value is None else str(value)

        return (
            text(self.organization_id),
            text(self.user_id),
            text(self.role),
            text(self.request_id),
            text(self.client_ip),
            text(self.user_agent)[:512],
            text(self.statement_timeout_ms),
        )


@asynccontextmanager
async def tenant_transaction(
    context: TenantContext, engine: Engine = DB
) -> AsyncIterator[Transaction]:
    """Open a transaction on one pooled connection with ``context`` applied to it.

    Piccolo queries run inside the block use this transaction's connection. Leaving the
    block commits; an exception rolls back. Nesting is refused: a request has one transaction.
    """
    transaction = engine.transaction(allow_nested=False)
    async with transaction:
        await transaction.connection.execute(SET_CONTEXT_SQL, *context.parameters())
        yield transaction


#: Settings that let one statement see exactly one row before a user is known (log-in by
#: e-mail, authentication by session token); see the users and sessions policies.
_LOOKUP_SQL = """
SELECT set_config('app.login_email', $1, true),
       set_config('app.session_token_hash', $2, true)
"""


async def allow_lookup(
    transaction: Transaction, *, login_email: str = "", session_token_hash: bytes = b""
) -> None:
    """Within ``transaction``, make the user with ``login_email`` and/or the session with
    ``session_token_hash`` visible (transaction-locally) to the server role."""
    await transaction.connection.execute(_LOOKUP_SQL, login_email, session_token_hash.hex())


@asynccontextmanager
async def request_transaction(
    context: TenantContext, engine: Engine = DB
) -> AsyncIterator[tuple[Transaction, Executor]]:
    """A tenant transaction plus the executor its statements must go through."""
    async with tenant_transaction(context, engine) as transaction:
        yield transaction, Executor(transaction.connection, statements=1)


#: One statement: authenticate the session token, check the membership in the named tenant,
#: and set the same transaction-local settings as SET_CONTEXT_SQL (migration 13).
BEGIN_REQUEST_SQL = "SELECT * FROM app_begin_request($1, $2, $3, $4, $5, $6, $7)"


#: The WAL write position, read on the primary right after a COMMIT.
COMMIT_LSN_SQL = "SELECT pg_current_wal_lsn()::text"


class OpenTransaction:
    """A request's transaction on one pooled connection, opened before GraphQL runs.

    The code that runs the operation ends it with ``commit()`` or ``rollback()`` (both also
    return the connection to the pool, before the response is written); the opener ends it
    with ``close()`` whatever happened, which rolls back a transaction nobody ended.

    BEGIN is sent as a message of its own (with the connection settings behind PgBouncer:
    ``db.engine.Engine.begin_sql``), and the COMMIT or ROLLBACK alone, or in one message
    with the pool's reset query where the pool resets session state
    (``db.engine.Connection.end_transaction``): four round trips a request (BEGIN,
    authentication, the operation, the end), not five.
    """

    __slots__ = ("_pool", "commit_lsn", "connection", "executor", "want_lsn")

    def __init__(self, pool: asyncpg.Pool, connection: asyncpg.Connection) -> None:
        self._pool = pool
        self.connection: asyncpg.Connection | None = connection
        self.executor = Executor(connection, statements=1)
        #: Read the primary's WAL position after a COMMIT (read replicas: read-your-writes).
        self.want_lsn = False
        #: That position (``pg_current_wal_lsn()`` right after the COMMIT returned), or None.
        self.commit_lsn: str | None = None

    @property
    def open(self) -> bool:
        return self.connection is not None

    async def commit(self) -> None:
        await self._end(commit=True)

    async def rollback(self) -> None:
        await self._end(commit=False)

    async def close(self) -> None:
        """End it if nobody did (rollback), never raising: this is clean-up."""
        if self.open:
            with contextlib.suppress(Exception):
                await self._end(commit=False)

    async def _end(self, commit: bool) -> None:
        async with self.executor.ending():
            await self.end(commit)

    async def restart(self, context: TenantContext, engine: Engine = DB) -> None:
        """Roll back everything that ran and begin again on the same connection with
        ``context`` applied: the request as it was after its first statement, with a new
        executor counting from there (``api.direct`` hands a write that failed to the
        resolvers' path so). Two round trips: ROLLBACK with the BEGIN, then the context."""
        connection = self.connection
        if connection is None:
            raise RuntimeError("the request's transaction has already ended")
        async with self.executor.ending():
            await connection.execute(f"ROLLBACK; {engine.begin_sql}")
        self.executor = Executor(connection)
        await self.executor.execute(SET_CONTEXT_SQL, *context.parameters())

    async def end(self, commit: bool) -> None:
        """End it now (the caller holds the executor's statement lock)."""
        connection, self.connection = self.connection, None
        if connection is None:
            raise RuntimeError("the request's transaction has already ended")
        try:
            if connection.is_in_transaction():
                # After the COMMIT returned, the WAL position: a standby that has replayed up
                # to it has replayed the commit record (docs/operations/deploy.md, "Read
                # replicas").
                lsn = await cast(Connection, connection).end_transaction(
                    commit, COMMIT_LSN_SQL if commit and self.want_lsn else None
                )
                if lsn is not None:
                    self.commit_lsn = lsn
        finally:
            # The pool's reset rolls back whatever a failed COMMIT left open.
            await self._pool.release(connection)


async def begin_request(
    token_hash: bytes,
    organization_id: UUID | None,
    organization_slug: str | None,
    context: TenantContext,
    engine: Engine = DB,
) -> tuple[OpenTransaction, asyncpg.Record | None]:
    """Open a request's transaction whose first statement authenticates the caller and, for a
    live session, applies its context (``context`` gives the request id, client, user agent
    and statement timeout; the user, tenant and role come from the database).

    The row: None for no live session; ``organization_id`` None when the caller is not a
    member of the named tenant (then no tenant is set). The caller must ``close()`` it.
    """
    if engine.pool is None:
        raise DatabaseError("the connection pool is not open")
    connection = await engine.acquire()
    opened = OpenTransaction(engine.pool, connection)
    try:
        await connection.execute(engine.begin_sql)
        _, _, _, request_id, client_ip, user_agent, timeout = context.parameters()
        row = await connection.fetchrow(
            BEGIN_REQUEST_SQL,
            token_hash,
            organization_id,
            organization_slug,
            request_id,
            client_ip,
            user_agent,
            timeout,
        )
    except BaseException:
        await opened.close()
        raise
    return opened, row


async def open_transaction(context: TenantContext, engine: Engine = DB) -> OpenTransaction:
    """A pooled connection in a transaction with ``context`` applied (BEGIN, with the
    connection settings behind PgBouncer, then the context: two round trips). The caller
    ends it (``commit``/``rollback``/``close``)."""
    if engine.pool is None:
        raise DatabaseError("the connection pool is not open")
    connection = await engine.acquire()
    opened = OpenTransaction(engine.pool, connection)
    try:
        await connection.execute(engine.begin_sql)
        await connection.execute(SET_CONTEXT_SQL, *context.parameters())
    except BaseException:
        await opened.close()
        raise
    return opened


class LazyExecutor(Executor):
    """An operation's executor that takes its pooled connection (and opens the transaction)
    at its first statement, not before.

    An operation that never reaches the database (introspection, a refused log-in, a
    request over a limit) takes no connection at all, and one that hashes a password before
    its first statement (sign-up) holds none while argon2 runs. Ended by ``end``."""

    __slots__ = ("_context", "_engine", "_opened", "_opening")

    def __init__(self, context: TenantContext, engine: Engine = DB) -> None:
        super().__init__(cast(asyncpg.Connection, None), statements=0)
        self._context = context
        self._engine = engine
        self._opened: OpenTransaction | None = None
        self._opening = asyncio.Lock()

    @property
    def began(self) -> bool:
        return self._opened is not None

    async def _begin(self) -> None:
        if self._opened is not None:
            return
        if self._ended:
            raise RuntimeError("the operation's transaction has ended")
        async with self._opening:
            if self._opened is None:
                self._opened = await open_transaction(self._context, self._engine)
                self._connection = self._opened.connection
                self.statements += 1  # the context, as request_transaction counts it

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        await self._begin()
        return await super().fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        await self._begin()
        return await super().fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        await self._begin()
        return await super().fetchval(sql, *args)

    async def execute(self, sql: str, *args: Any) -> str:
        await self._begin()
        return await super().execute(sql, *args)

    async def end(self, commit: bool) -> None:
        """Commit or roll back what was begun (nothing if no statement ran).

        Under the statement lock: a field's DataLoader batch may still be running when the
        operation ends (graphql-core cancels a failed field's siblings, not the batches they
        waited on); the transaction ends after that statement, never beside it ("another
        operation is in progress", reported as an unavailable database). Nothing begins
        after the end."""
        async with self.ending():
            opened, self._opened = self._opened, None
            if opened is None:
                return
            await opened.end(commit)

    async def close(self) -> None:
        """Roll back whatever was begun, never raising: clean-up."""
        async with self.ending():
            opened, self._opened = self._opened, None
            if opened is not None:
                await opened.close()
