"""Each zero-downtime recipe against its naive form, on a live table under load.

For every recipe: the longest write stall a concurrent writer saw, the total duration, and
for backfills the rows per second. Same table, same load, same run: compare the columns.

    .venv/bin/python bench/migrations.py [--rows 200000]

Uses the embedded PostgreSQL (a scratch database `taskql_bench_migrations`), or
DATABASE_URL and MIGRATION_DATABASE_URL (a database it may fill).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable

import asyncpg

from db.engine import DB
from db.migrate import runner
from db.migrate.backfill import PROGRESS_TABLE, Backfill
from db.migrate.locks import LockPolicy
from db.migrate.proving import Load, create_proving_table
from db.migrate.toolkit import (
    AddColumn,
    AddConstraint,
    AddUniqueConstraint,
    CreateIndex,
    ExpandColumn,
    SetNotNull,
    Step,
)
from db.settings import get_database_settings
from db.targets import scratch_database

TENANTS = ("00000000-0000-7000-8000-00000000000a", "00000000-0000-7000-8000-00000000000b")
POLICY = LockPolicy(lock_timeout_ms=200, statement_timeout_ms=600_000, max_total_wait_s=60)
TABLE = "bench_items"


async def prepare() -> tuple[str, str]:
    settings = get_database_settings()
    targets = await scratch_database("taskql_bench_migrations", settings)
    owner, app = targets.require_owner(), targets.require_server()
    DB.configure(owner, settings)
    await runner.forwards()
    return owner, app


async def measure(
    app_dsn: str, rows: int, action: Callable[[], Awaitable[object]]
) -> tuple[float, float, object]:
    load = Load(app_dsn, TABLE, TENANTS, rows)
    started = time.perf_counter()
    result = await load.during(action)
    duration = time.perf_counter() - started - 0.4  # the load runs 0.2 s before and after
    if load.failures:
        raise RuntimeError(f"writes failed: {load.failures[:3]}")
    return load.longest_write_stall, duration, result


async def main(rows: int) -> None:
    owner_dsn, app_dsn = await prepare()
    owner = await asyncpg.connect(owner_dsn)
    await create_proving_table(owner, TABLE, TENANTS, rows)

    async def step(s: Step, backwards: bool = False) -> None:
        await s.run(owner, POLICY, backwards=backwards)

    async def naive(sql: str) -> None:
        await owner.execute(sql)

    recipes: list[tuple[str, Step, str, str]] = [
        (
            "add column with default",
            AddColumn(TABLE, "flag", "boolean", default="false"),
            f"ALTER TABLE {TABLE} ADD COLUMN flag uuid DEFAULT gen_random_uuid()",
            f"ALTER TABLE {TABLE} DROP COLUMN flag",
        ),
        (
            "set not null",
            SetNotNull(TABLE, "note"),
            f"ALTER TABLE {TABLE} ALTER COLUMN note SET NOT NULL",
            f"ALTER TABLE {TABLE} ALTER COLUMN note DROP NOT NULL",
        ),
        (
            "check constraint",
            AddConstraint(TABLE, "bench_n_positive", "CHECK (n > 0)"),
            f"ALTER TABLE {TABLE} ADD CONSTRAINT bench_n_positive CHECK (n > 0)",
            f"ALTER TABLE {TABLE} DROP CONSTRAINT bench_n_positive",
        ),
        (
            "foreign key",
            AddConstraint(
                TABLE,
                "bench_tenant_fkey",
                f"FOREIGN KEY (tenant_id) REFERENCES {TABLE}_tenants (id)",
            ),
            f"ALTER TABLE {TABLE} ADD CONSTRAINT bench_tenant_fkey FOREIGN KEY (tenant_id) REFERENCES {TABLE}_tenants (id)",
            f"ALTER TABLE {TABLE} DROP CONSTRAINT bench_tenant_fkey",
        ),
        (
            "create index",
            CreateIndex("bench_n_idx", TABLE, "(tenant_id, n)"),
            f"CREATE INDEX bench_n_idx ON {TABLE} (tenant_id, n)",
            "DROP INDEX bench_n_idx",
        ),
        (
            "unique constraint",
            AddUniqueConstraint(TABLE, "bench_tenant_id_key", ("tenant_id", "id")),
            f"ALTER TABLE {TABLE} ADD CONSTRAINT bench_tenant_id_key UNIQUE (tenant_id, id)",
            f"ALTER TABLE {TABLE} DROP CONSTRAINT bench_tenant_id_key",
        ),
        (
            "type change int -> bigint",
            ExpandColumn(
                TABLE,
                old="n",
                new="n_big",
                new_type="bigint",
                to_new="{row}.n::bigint",
                to_old="{row}.n_big::integer",
                batch_size=10_000,
            ),
            f"ALTER TABLE {TABLE} ALTER COLUMN n TYPE bigint",
            f"ALTER TABLE {TABLE} ALTER COLUMN n TYPE integer",
        ),
    ]
    print(
        f"{rows:,} rows; writer and reader running throughout; lock_timeout {POLICY.lock_timeout_ms} ms\n"
    )
    print(
        f"| {'recipe':28} | {'safe: longest write stall':>26} | {'naive: longest write stall':>27} | {'safe total':>10} | {'naive total':>11} |"
    )
    print(f"|{'-' * 30}|{'-' * 28}:|{'-' * 29}:|{'-' * 11}:|{'-' * 12}:|")
    for name, safe, naive_sql, undo in recipes:
        safe_stall, safe_time, _ = await measure(app_dsn, rows, lambda s=safe: step(s))
        await step(safe, backwards=True)
        naive_stall, naive_time, _ = await measure(app_dsn, rows, lambda q=naive_sql: naive(q))
        await owner.execute(undo)
        print(
            f"| {name:28} | {safe_stall * 1000:23.0f} ms | {naive_stall * 1000:24.0f} ms | {safe_time:8.2f} s | {naive_time:9.2f} s |"
        )

    await owner.execute(f"ALTER TABLE {TABLE} ADD COLUMN doubled bigint")
    backfill = Backfill(
        "bench_doubled", TABLE, "doubled = t.n * 2", "t.doubled IS NULL", batch_size=10_000
    )
    safe_stall, safe_time, result = await measure(
        app_dsn, rows, lambda: backfill.run(owner, POLICY, show_progress=False)
    )
    async with owner.transaction():
        await owner.execute("SET LOCAL ROLE taskql_maintenance")
        await owner.execute(f"UPDATE {TABLE} SET doubled = NULL")
    await owner.execute(f"DROP TABLE IF EXISTS {PROGRESS_TABLE}")

    async def one_update() -> None:
        async with owner.transaction():
            await owner.execute("SET LOCAL ROLE taskql_maintenance")
            await owner.execute(
                f"UPDATE {TABLE} AS t SET doubled = t.n * 2 WHERE t.doubled IS NULL"
            )

    naive_stall, naive_time, _ = await measure(app_dsn, rows, one_update)
    print(
        f"| {'backfill (' + f'{rows:,}' + ' rows)':28} | {safe_stall * 1000:23.0f} ms | {naive_stall * 1000:24.0f} ms | {safe_time:8.2f} s | {naive_time:9.2f} s |"
    )
    print(
        f"\nbackfill throughput: batched {result.rows_updated / safe_time:,.0f} rows/s "  # type: ignore[attr-defined]
        f"(10,000-row batches, each committed), single UPDATE {rows / naive_time:,.0f} rows/s"
    )
    await owner.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    asyncio.run(main(parser.parse_args().rows))
