"""Batched backfills: change every row of a live table without holding it hostage.

Each batch is its own short transaction: keyset over the primary key (no OFFSET, and never
``UPDATE ... LIMIT``, which PostgreSQL does not have), an UPDATE of that batch's rows that
still need it, COMMIT, a pause. The predicate skips rows already done, so a backfill is
idempotent; its position is saved after every batch, so after a crash it resumes where it
stopped. It runs as ``taskql_maintenance`` (BYPASSRLS, via SET ROLE from the owner):
row-level security would otherwise hide every tenant's rows but one.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

import asyncpg
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from db.migrate.locks import DEFAULT_POLICY, LockPolicy

PROGRESS_TABLE = "migration_backfill_progress"


@dataclass(frozen=True)
class BackfillResult:
    rows_updated: int
    batches: int
    seconds: float

    @property
    def rows_per_second(self) -> float:
        return self.rows_updated / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class Backfill:
    """``UPDATE {table} SET {assignments} WHERE {pending}``, in keyset batches.

    Locks: ROW EXCLUSIVE on the table and row locks on one batch at a time, each for one
    short transaction; readers and other writers carry on (a writer touching a row of the
    current batch waits for that batch only).
    """

    #: Unique name: progress is saved under it.
    name: str
    table: str
    #: SQL assignments, e.g. ``"estimate = 0"`` (constants of the migration, not user input).
    assignments: str
    #: SQL predicate true for rows still to do, e.g. ``"estimate IS NULL"``.
    pending: str
    #: Columns of the key to walk, in index order (a unique index must lead with them).
    key: tuple[str, ...] = ("id",)
    batch_size: int = 5000
    #: Seconds to sleep between batches (throttle: leaves I/O and WAL room for the site).
    pause: float = 0.0
    #: Become this role for the updates (BYPASSRLS, so every tenant's rows are visible).
    role: str | None = "taskql_maintenance"

    def statement(self, types: dict[str, str], resume: bool) -> str:
        """One batch. Parameters, as text: the last key seen (when resuming), the last key
        that existed when the run started (rows added later are the application's job, or
        the sync trigger's), then the batch size. Returns rows updated and the batch's last key."""
        key = ", ".join(self.key)
        n = len(self.key)

        def bound(offset: int) -> str:
            return ", ".join(
                f"(${offset + i + 1}::text)::{types[c]}" for i, c in enumerate(self.key)
            )

        conditions = [f"({key}) <= ({bound(n if resume else 0)})"]
        if resume:
            conditions.insert(0, f"({key}) > ({bound(0)})")
        limit = f"${2 * n + 1}" if resume else f"${n + 1}"
        join = " AND ".join(f"t.{c} = b.{c}" for c in self.key)
        descending = ", ".join(f"{c} DESC" for c in self.key)
        last = ", ".join(f"l.{c}::text AS last_{c}" for c in self.key)
        return (
            f"WITH b AS (SELECT {key} FROM {self.table} WHERE {' AND '.join(conditions)} "
            f"ORDER BY {key} LIMIT {limit}), "
            f"u AS (UPDATE {self.table} AS t SET {self.assignments} FROM b "
            f"WHERE {join} AND ({self.pending}) RETURNING 1), "
            f"l AS (SELECT {key} FROM b ORDER BY {descending} LIMIT 1) "
            f"SELECT (SELECT count(*) FROM u) AS updated, {last} FROM (SELECT 1) AS one LEFT JOIN l ON TRUE"
        )

    async def _upper(self, connection: asyncpg.Connection) -> list[str] | None:
        """The last key that exists now: the run stops there instead of chasing inserts."""
        descending = ", ".join(f"{c} DESC" for c in self.key)
        async with connection.transaction():
            await self._become(connection)
            row = await connection.fetchrow(
                f"SELECT {', '.join(f'{c}::text AS upper_{c}' for c in self.key)} FROM {self.table} "
                f"ORDER BY {descending} LIMIT 1"
            )
        return [str(v) for v in row.values()] if row is not None else None

    async def _key_types(self, connection: asyncpg.Connection) -> dict[str, str]:
        rows = await connection.fetch(
            "SELECT attname, format_type(atttypid, atttypmod) AS type FROM pg_attribute "
            "WHERE attrelid = $1::regclass AND attname = ANY($2::text[])",
            self.table,
            list(self.key),
        )
        return {r["attname"]: r["type"] for r in rows}

    async def remaining(self, connection: asyncpg.Connection) -> int:
        async with connection.transaction():
            await self._become(connection)
            return int(
                await connection.fetchval(
                    f"SELECT count(*) FROM {self.table} AS t WHERE {self.pending}"
                )
            )

    async def _become(self, connection: asyncpg.Connection) -> None:
        if self.role is not None:
            await connection.execute(f'SET LOCAL ROLE "{self.role}"')

    async def run(
        self,
        connection: asyncpg.Connection,
        policy: LockPolicy = DEFAULT_POLICY,
        show_progress: bool = True,
        stop_after_batches: int | None = None,
    ) -> BackfillResult:
        """Run (or resume) the backfill to the end; returns how many rows it updated."""
        await connection.execute(
            f"CREATE TABLE IF NOT EXISTS {PROGRESS_TABLE} (name text PRIMARY KEY, last_key jsonb, "
            "rows_updated bigint NOT NULL DEFAULT 0, finished_at timestamptz, "
            "updated_at timestamptz NOT NULL DEFAULT now())"
        )
        saved = await connection.fetchrow(
            f"SELECT last_key, rows_updated, finished_at FROM {PROGRESS_TABLE} WHERE name = $1",
            self.name,
        )
        last: list[str] | None = (
            json.loads(saved["last_key"]) if saved and saved["last_key"] else None
        )
        done = int(saved["rows_updated"]) if saved else 0
        if saved is not None and saved["finished_at"] is not None:
            last, done = None, 0  # a finished backfill run again starts over (idempotent)
        total = await self.remaining(connection)
        types = await self._key_types(connection)
        upper = await self._upper(connection)
        started = time.monotonic()
        batches = updated = 0
        with Progress(
            TextColumn(f"backfill {self.name}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} rows"),
            TimeElapsedColumn(),
            disable=not show_progress,
            transient=False,
        ) as progress:
            task = progress.add_task(self.name, total=total)
            while True:
                async with connection.transaction():
                    await connection.execute(
                        f"SET LOCAL lock_timeout = {policy.lock_timeout_ms}; "
                        f"SET LOCAL statement_timeout = {policy.statement_timeout_ms}"
                    )
                    await self._become(connection)
                    if upper is None:  # an empty table
                        break
                    if last is None:
                        row = await connection.fetchrow(
                            self.statement(types, False), *upper, self.batch_size
                        )
                    else:
                        row = await connection.fetchrow(
                            self.statement(types, True), *last, *upper, self.batch_size
                        )
                    assert row is not None
                    if row[f"last_{self.key[0]}"] is None:
                        break
                    last = [str(row[f"last_{c}"]) for c in self.key]
                    count = int(row["updated"])
                    updated += count
                    await connection.execute("RESET ROLE")
                    await connection.execute(
                        f"INSERT INTO {PROGRESS_TABLE} (name, last_key, rows_updated, finished_at) "
                        "VALUES ($1, $2::jsonb, $3, NULL) ON CONFLICT (name) DO UPDATE SET "
                        "last_key = excluded.last_key, rows_updated = excluded.rows_updated, "
                        "finished_at = NULL, updated_at = now()",
                        self.name,
                        json.dumps(last),
                        done + updated,
                    )
                batches += 1
                progress.update(task, advance=count)
                if stop_after_batches is not None and batches >= stop_after_batches:
                    return BackfillResult(updated, batches, time.monotonic() - started)
                if self.pause:
                    await asyncio.sleep(self.pause)
        await connection.execute(
            f"UPDATE {PROGRESS_TABLE} SET finished_at = now(), updated_at = now() WHERE name = $1",
            self.name,
        )
        result = BackfillResult(updated, batches, time.monotonic() - started)
        if show_progress:
            print(
                f"backfill {self.name}: {done + updated} rows updated in {batches} batches, "
                f"{result.rows_per_second:,.0f} rows/s"
            )
        return result
