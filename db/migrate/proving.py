"""A proving ground for schema changes: a writer and a reader run against a table while a
change is made, and record how long each statement took. The tests prove the toolkit with
it; ``bench/migrations.py`` compares each recipe with its naive form. Point it at a staging
copy to rehearse a migration before production.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg


@dataclass
class Load:
    """A writer (alternating INSERT and UPDATE) and a reader (small range count), each in
    its own tenant transaction as the server role, until the change under test ends."""

    dsn: str
    table: str
    tenants: Sequence[str]
    rows: int
    write_times: list[float] = field(default_factory=list)
    read_times: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    inserted: int = 0
    #: Extra INSERT assignments (what a new application version writes).
    insert_columns: dict[str, str] = field(default_factory=dict)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def _loop(self, write: bool) -> None:
        connection = await asyncpg.connect(self.dsn, statement_cache_size=0)
        i = 0
        try:
            while not self._stop.is_set():
                i += 1
                tenant = self.tenants[i % len(self.tenants)]
                started = time.perf_counter()
                try:
                    async with connection.transaction():
                        await connection.execute(
                            "SELECT set_config('app.organization_id', $1, true)", tenant
                        )
                        await self._statement(connection, write, i, tenant)
                except asyncpg.PostgresError as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                (self.write_times if write else self.read_times).append(
                    time.perf_counter() - started
                )
                await asyncio.sleep(0.002)
        finally:
            await connection.close()

    async def _statement(
        self, connection: asyncpg.Connection, write: bool, i: int, tenant: str
    ) -> None:
        if write and i % 2:
            columns = {
                "tenant_id": "$1::uuid",
                "n": "$2",
                "note": "'written by load'",
                **self.insert_columns,
            }
            await connection.execute(
                f"INSERT INTO {self.table} ({', '.join(columns)}) VALUES ({', '.join(columns.values())})",
                tenant,
                1_000_000 + i,
            )
            self.inserted += 1
        elif write:
            await connection.execute(
                f"UPDATE {self.table} SET note = 'updated ' || $2 WHERE id = $1",
                1 + (i * 7919) % self.rows,
                str(i),
            )
        else:
            await connection.fetchval(
                f"SELECT count(*) FROM {self.table} WHERE id BETWEEN $1 AND $1 + 50",
                1 + (i * 104729) % self.rows,
            )

    async def during(self, action: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``action`` with the load running before, during and just after it."""
        tasks = [asyncio.create_task(self._loop(True)), asyncio.create_task(self._loop(False))]
        await asyncio.sleep(0.2)
        try:
            return await action()
        finally:
            await asyncio.sleep(0.2)
            self._stop.set()
            await asyncio.gather(*tasks)

    @property
    def longest_write_stall(self) -> float:
        return max(self.write_times, default=0.0)

    @property
    def longest_read_stall(self) -> float:
        return max(self.read_times, default=0.0)


PROVING_TABLE = """
DROP TABLE IF EXISTS {table}, {table}_tenants;
CREATE TABLE {table}_tenants (id uuid PRIMARY KEY);
INSERT INTO {table}_tenants SELECT unnest($${tenants}$$::uuid[]);
CREATE TABLE {table} (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id uuid NOT NULL,
    n integer NOT NULL,
    note text
);
INSERT INTO {table} (tenant_id, n, note)
SELECT ($${tenants}$$::uuid[])[1 + g % {count}], g, 'row ' || g FROM generate_series(1, {rows}) AS g;
ANALYZE {table};
ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;
ALTER TABLE {table} FORCE ROW LEVEL SECURITY;
CREATE POLICY {table}_tenant ON {table}
    USING (tenant_id = (SELECT NULLIF(current_setting('app.organization_id', true), '')::uuid));
GRANT SELECT, INSERT, UPDATE ON {table} TO taskql_server, taskql_maintenance;
GRANT SELECT ON {table}_tenants TO taskql_server, taskql_maintenance;
"""


async def create_proving_table(
    owner: asyncpg.Connection, table: str, tenants: Sequence[str], rows: int
) -> None:
    """A tenant table like ours (RLS enabled and forced) with ``rows`` rows, for rehearsals."""
    literal = "{" + ",".join(tenants) + "}"
    await owner.execute(
        PROVING_TABLE.format(table=table, tenants=literal, count=len(tenants), rows=int(rows))
    )
