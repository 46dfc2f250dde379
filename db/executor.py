"""One transaction's connection, shared by the concurrent resolvers of one GraphQL operation.

asyncpg runs one statement at a time per connection ("another operation is in progress"
otherwise), and graphql-core resolves sibling fields concurrently, so every statement goes
through this executor's lock. It also counts statements: the N+1 guard in the tests and the
benchmarks read the count.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from db import metrics


class Executor:
    """Serialized access to one connection inside one transaction."""

    __slots__ = ("_connection", "_ended", "_lock", "_savepoints", "statements")

    def __init__(self, connection: asyncpg.Connection, statements: int = 0) -> None:
        self._connection = connection
        self._lock = asyncio.Lock()
        #: Statements sent on this connection for the operation (set-up included).
        self.statements = statements
        self._savepoints = 0
        self._ended = False

    def _use(self) -> asyncpg.Connection:
        """The connection, for a statement about to be sent (under the lock). A statement
        that waited for the lock while the transaction ended (a DataLoader batch of a
        cancelled field) must not run on a connection back in the pool."""
        if self._ended:
            raise RuntimeError("the operation's transaction has ended")
        return self._connection

    @asynccontextmanager
    async def ending(self) -> AsyncIterator[None]:
        """Hold the statement lock while the transaction ends: after the statement running
        now (never beside it), and no statement after."""
        async with self._lock:
            self._ended = True
            yield

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async with self._lock:
            self.statements += 1
            try:
                rows: list[asyncpg.Record] = await self._use().fetch(sql, *args)
            except asyncpg.PostgresError as exc:
                metrics.statement_failed(exc)
                raise
            return rows

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        async with self._lock:
            self.statements += 1
            try:
                return await self._use().fetchrow(sql, *args)
            except asyncpg.PostgresError as exc:
                metrics.statement_failed(exc)
                raise

    async def fetchval(self, sql: str, *args: Any) -> Any:
        async with self._lock:
            self.statements += 1
            try:
                return await self._use().fetchval(sql, *args)
            except asyncpg.PostgresError as exc:
                metrics.statement_failed(exc)
                raise

    async def execute(self, sql: str, *args: Any) -> str:
        async with self._lock:
            self.statements += 1
            try:
                status: str = await self._use().execute(sql, *args)
            except asyncpg.PostgresError as exc:
                metrics.statement_failed(exc)
                raise
            return status

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        """Run a block so that a failed statement undoes only the block, not the transaction
        (so a mutation can report a constraint violation as a typed error)."""
        self._savepoints += 1
        name = f"taskql_{self._savepoints}"
        await self.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            await self.execute(f"ROLLBACK TO SAVEPOINT {name}")
            raise
        await self.execute(f"RELEASE SAVEPOINT {name}")
