"""Proof under load: each zero-downtime recipe runs on a 200,000-row table while a writer and
a reader run throughout. No write fails, no write waits longer than the lock timeout plus a
margin, the data is intact, and backwards restores the schema. The naive forms, run the same
way, visibly block the writer: the harness detects what it guards against.

The margins are wide on purpose (shared, noisy machines): safe recipes stall writers for
milliseconds, naive ones for as long as they hold their lock (here: seconds).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from db.migrate.backfill import PROGRESS_TABLE, Backfill
from db.migrate.locks import LockNotGranted, LockPolicy, migration_lock, run_ddl
from db.migrate.proving import Load as ProvingLoad
from db.migrate.proving import create_proving_table
from db.migrate.toolkit import (
    AddColumn,
    AddConstraint,
    AddUniqueConstraint,
    ContractColumn,
    CreateIndex,
    ExpandColumn,
    RunBackfill,
    SetNotNull,
    Step,
    UnsafeChange,
)
from tests.conftest import ScratchDatabase

ROWS = 200_000
TENANTS = ("00000000-0000-7000-8000-00000000000a", "00000000-0000-7000-8000-00000000000b")
POLICY = LockPolicy(lock_timeout_ms=200, statement_timeout_ms=120_000, max_total_wait_s=30)
#: A safe recipe may make a write wait up to the lock timeout; the rest is scheduling noise.
MARGIN_S = 1.5
NAIVE_HOLD_S = 3.0

CATALOG = """
SELECT 'column' AS kind, attname::text AS name, format_type(atttypid, atttypmod) || CASE WHEN attnotnull THEN ' not null' ELSE '' END AS def
FROM pg_attribute WHERE attrelid = 'zdt_items'::regclass AND attnum > 0 AND NOT attisdropped
UNION ALL SELECT 'constraint', conname::text, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'zdt_items'::regclass
UNION ALL SELECT 'index', indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = 'zdt_items'::regclass
UNION ALL SELECT 'trigger', tgname::text, pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = 'zdt_items'::regclass AND NOT tgisinternal
ORDER BY 1, 2
"""


@pytest.fixture(scope="module")
async def big_table(test_database: ScratchDatabase, pool: asyncpg.Pool) -> AsyncIterator[None]:
    """zdt_items: 200,000 rows of two tenants, RLS enabled and forced like every tenant table."""
    owner = await asyncpg.connect(test_database.owner_dsn)
    try:
        await create_proving_table(owner, "zdt_items", TENANTS, ROWS)
        yield
        await owner.execute(f"DROP TABLE IF EXISTS zdt_items, zdt_items_tenants, {PROGRESS_TABLE}")
    finally:
        await owner.close()


@pytest.fixture
async def owner(
    test_database: ScratchDatabase, big_table: None
) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(test_database.owner_dsn)
    yield connection
    await connection.close()


def Load(dsn: str, insert_columns: dict[str, str] | None = None) -> ProvingLoad:
    return ProvingLoad(dsn, "zdt_items", TENANTS, ROWS, insert_columns=insert_columns or {})


def assert_healthy(load: ProvingLoad) -> None:
    assert load.failures == []
    assert len(load.write_times) > 10
    assert len(load.read_times) > 10
    assert load.longest_write_stall < POLICY.lock_timeout_ms / 1000 + MARGIN_S, (
        load.longest_write_stall
    )


async def catalog(connection: asyncpg.Connection) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in await connection.fetch(CATALOG)]


async def run_step(connection: asyncpg.Connection, step: Step, backwards: bool = False) -> None:
    await step.run(connection, POLICY, backwards=backwards)


async def row_count(connection: asyncpg.Connection) -> int:
    async with connection.transaction():
        await connection.execute("SET LOCAL ROLE taskql_maintenance")
        return int(await connection.fetchval("SELECT count(*) FROM zdt_items"))


async def prove(
    test_database: ScratchDatabase,
    owner: asyncpg.Connection,
    step: Step,
    load: ProvingLoad | None = None,
) -> ProvingLoad:
    """Run ``step`` forwards under load, check health and data, then backwards, and check
    the schema is back as it was."""
    before = await catalog(owner)
    rows = await row_count(owner)
    load = load or Load(test_database.server_dsn)
    await load.during(lambda: run_step(owner, step))
    assert_healthy(load)
    assert await row_count(owner) == rows + load.inserted
    assert await catalog(owner) != before
    await run_step(owner, step, backwards=True)
    assert await catalog(owner) == before
    return load


async def test_add_column_with_a_constant_default(
    test_database: ScratchDatabase, owner: asyncpg.Connection
) -> None:
    await prove(test_database, owner, AddColumn("zdt_items", "flag", "boolean", default="false"))


async def test_a_volatile_default_on_a_big_table_is_refused(owner: asyncpg.Connection) -> None:
    before = await catalog(owner)
    with pytest.raises(UnsafeChange, match="volatile"):
        await run_step(owner, AddColumn("zdt_items", "token", "uuid", default="gen_random_uuid()"))
    assert await catalog(owner) == before


async def test_set_not_null_without_a_long_lock(
    test_database: ScratchDatabase, owner: asyncpg.Connection
) -> None:
    await prove(test_database, owner, SetNotNull("zdt_items", "note"))


async def test_add_check_constraint_not_valid_then_validate(
    test_database: ScratchDatabase, owner: asyncpg.Connection
) -> None:
    await prove(
        test_database, owner, AddConstraint("zdt_items", "zdt_items_n_positive", "CHECK (n > 0)")
    )


async def test_add_foreign_key_not_valid_then_validate(
    test_database: ScratchDatabase, owner: asyncpg.Connection
) -> None:
    step = AddConstraint(
        "zdt_items",
        "zdt_items_tenant_fkey",
        "FOREIGN KEY (tenant_id) REFERENCES zdt_items_tenants (id)",
    )
    await prove(test_database, owner, step)


async def test_create_index_concurrently_replacing_an_invalid_leftover(
    test_database: ScratchDatabase, owner: asyncpg.Connection
) -> None:
    # A failed concurrent build (duplicates under UNIQUE) leaves an INVALID index behind.
    with pytest.raises(asyncpg.UniqueViolationError):
        await owner.execute(
            "CREATE UNIQUE INDEX CONCURRENTLY zdt_items_n_idx ON zdt_items (tenant_id)"
        )
    assert (
        await owner.fetchval(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'zdt_items_n_idx'::regclass"
        )
        is False
    )
    before = await catalog(owner)
    load = Load(test_database.server_dsn)
    step = CreateIndex("zdt_items_n_idx", "zdt_items", "(tenant_id, n)")
    await load.during(lambda: run_step(owner, step))
    assert_healthy(load)
    assert (
        await owner.fetchval(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'zdt_items_n_idx'::regclass"
        )
        is True
    )
    await run_step(owner, step, backwards=True)
    assert [row for row in before if row[1] != "zdt_items_n_idx"] == await catalog(owner)


async def test_unique_constraint_from_a_concurrent_index(
    test_database: ScratchDatabase, owner: asyncpg.Connection
) -> None:
    await prove(
        test_database,
        owner,
        AddUniqueConstraint("zdt_items", "zdt_items_tenant_id_key", ("tenant_id", "id")),
    )


async def test_backfill_in_batches_resumes_after_a_crash(
    test_database: ScratchDatabase, owner: asyncpg.Connection
) -> None:
    await run_step(owner, AddColumn("zdt_items", "doubled", "bigint"))
    existing = await row_count(owner)  # every row needs the backfill; the writer's new rows do not
    backfill = Backfill(
        name="zdt_doubled",
        table="zdt_items",
        assignments="doubled = t.n * 2",
        pending="t.doubled IS NULL",
        batch_size=10_000,
    )
    load = Load(test_database.server_dsn, insert_columns={"doubled": "$2 * 2"})

    async def crash_then_resume() -> tuple[int, int]:
        first = await backfill.run(owner, POLICY, show_progress=False, stop_after_batches=3)
        rest = await backfill.run(owner, POLICY, show_progress=False)
        return first.rows_updated, rest.rows_updated

    first, rest = await load.during(crash_then_resume)
    assert_healthy(load)
    assert first == 30_000
    assert first + rest == existing >= ROWS
    async with owner.transaction():
        await owner.execute("SET LOCAL ROLE taskql_maintenance")
        wrong = await owner.fetchval(
            "SELECT count(*) FROM zdt_items WHERE doubled IS DISTINCT FROM n::bigint * 2"
        )
    assert wrong == 0
    # Idempotent: run again, nothing left to do.
    assert (await backfill.run(owner, POLICY, show_progress=False)).rows_updated == 0
    await run_step(owner, AddColumn("zdt_items", "doubled", "bigint"), backwards=True)


async def test_expand_contract_rename(
    test_database: ScratchDatabase, owner: asyncpg.Connection
) -> None:
    before = await catalog(owner)
    expand = ExpandColumn("zdt_items", old="note", new="body", new_type="text", batch_size=20_000)
    contract = ContractColumn(expand, old_type="text")
    old_app = Load(test_database.server_dsn)
    await old_app.during(lambda: run_step(owner, expand))
    assert_healthy(old_app)
    new_app = Load(
        test_database.server_dsn,
        insert_columns={"body": "'written by the new version'", "note": "NULL"},
    )
    await new_app.during(lambda: run_step(owner, contract))
    assert new_app.failures == [] or all("note" in f for f in new_app.failures)
    columns = [r[1] for r in await catalog(owner) if r[0] == "column"]
    assert "note" not in columns
    assert "body" in columns
    await run_step(owner, contract, backwards=True)
    async with owner.transaction():
        await owner.execute("SET LOCAL ROLE taskql_maintenance")
        differing = await owner.fetchval(
            "SELECT count(*) FROM zdt_items WHERE note IS DISTINCT FROM body"
        )
    assert differing == 0
    await run_step(owner, expand, backwards=True)
    assert await catalog(owner) == before


async def test_expand_for_a_type_change(
    test_database: ScratchDatabase, owner: asyncpg.Connection
) -> None:
    expand = ExpandColumn(
        "zdt_items",
        old="n",
        new="n_big",
        new_type="bigint",
        to_new="{row}.n::bigint",
        to_old="{row}.n_big::integer",
        batch_size=20_000,
    )
    load = await prove(test_database, owner, expand, Load(test_database.server_dsn))
    assert load.inserted > 0


async def test_a_lock_timeout_is_retried_until_the_blocker_ends(
    owner: asyncpg.Connection, test_database: ScratchDatabase
) -> None:
    blocker = await asyncpg.connect(test_database.owner_dsn)
    transaction = blocker.transaction()
    await transaction.start()
    await blocker.execute("LOCK TABLE zdt_items IN ACCESS SHARE MODE")

    async def release_later() -> None:
        await asyncio.sleep(1.5)
        await transaction.commit()

    started = time.monotonic()
    release = asyncio.create_task(release_later())
    load = Load(test_database.server_dsn)
    await load.during(
        lambda: run_ddl(
            owner, "ALTER TABLE zdt_items ADD COLUMN IF NOT EXISTS retried boolean", POLICY
        )
    )
    await release
    await blocker.close()
    assert time.monotonic() - started >= 1.5  # it waited for the blocker, by retrying
    assert_healthy(load)  # while retrying, writers queued at most one lock timeout at a time
    await owner.execute("ALTER TABLE zdt_items DROP COLUMN retried")


async def test_a_lock_that_never_comes_gives_up_at_the_ceiling(
    owner: asyncpg.Connection, test_database: ScratchDatabase
) -> None:
    blocker = await asyncpg.connect(test_database.owner_dsn)
    try:
        async with blocker.transaction():
            await blocker.execute("LOCK TABLE zdt_items IN ACCESS SHARE MODE")
            with pytest.raises(LockNotGranted, match="gave up"):
                await run_ddl(
                    owner,
                    "ALTER TABLE zdt_items ADD COLUMN never boolean",
                    LockPolicy(lock_timeout_ms=100, max_total_wait_s=1.0),
                )
    finally:
        await blocker.close()


@pytest.mark.parametrize(
    "naive",
    [
        "CREATE INDEX zdt_items_naive_idx ON zdt_items (n)",
        "ALTER TABLE zdt_items ALTER COLUMN n SET NOT NULL, ALTER COLUMN note SET NOT NULL",
    ],
)
async def test_the_naive_forms_block_writers(
    test_database: ScratchDatabase, owner: asyncpg.Connection, naive: str
) -> None:
    """The brief's way: the DDL and the work after it (a backfill) in one transaction."""
    load = Load(test_database.server_dsn)

    async def naive_migration() -> None:
        async with owner.transaction():
            await owner.execute(naive)
            await asyncio.sleep(NAIVE_HOLD_S)
            raise _Rollback

    with pytest.raises(_Rollback):
        await load.during(naive_migration)
    assert load.longest_write_stall >= NAIVE_HOLD_S * 0.8


class _Rollback(Exception):
    """Undo the naive change after measuring it."""


async def test_only_one_migration_runner_at_a_time(test_database: ScratchDatabase) -> None:
    first = await asyncpg.connect(test_database.owner_dsn)
    second = await asyncpg.connect(test_database.owner_dsn)
    try:
        async with migration_lock(first):
            with pytest.raises(LockNotGranted, match="another migration runner"):
                async with migration_lock(second, wait_s=0.5):
                    pass
        async with migration_lock(second, wait_s=0.5):
            pass
    finally:
        await first.close()
        await second.close()


def test_backfill_renders_as_one_update_per_batch() -> None:
    step = RunBackfill(
        Backfill(name="x", table="tasks", assignments="estimate = 0", pending="t.estimate IS NULL")
    )
    [[statement]] = step.sql()
    assert not statement.transactional
    assert "UPDATE tasks SET estimate = 0 WHERE t.estimate IS NULL" in statement.sql


async def test_a_toolkit_migration_runs_through_piccolo_forwards_and_backwards(
    test_database: ScratchDatabase, owner: asyncpg.Connection
) -> None:
    from db.migrate.toolkit import toolkit_migration

    async def connect() -> asyncpg.Connection:
        return await asyncpg.connect(test_database.owner_dsn)

    steps = [
        AddColumn("zdt_items", "estimate", "bigint"),
        RunBackfill(
            Backfill(
                "zdt_estimate",
                "zdt_items",
                "estimate = t.n",
                "t.estimate IS NULL",
                batch_size=50_000,
            )
        ),
        SetNotNull("zdt_items", "estimate"),
        CreateIndex("zdt_items_estimate_idx", "zdt_items", "(tenant_id, estimate)"),
    ]
    manager = toolkit_migration("2099-01-01T00:00:00:000000", "test", steps, POLICY, connect)
    assert manager.wrap_in_transaction is False
    before = await catalog(owner)
    await manager.run()
    after = {(kind, name): definition for kind, name, definition in await catalog(owner)}
    assert after[("column", "estimate")] == "bigint not null"
    assert ("index", "zdt_items_estimate_idx") in after
    await manager.run(backwards=True)
    assert await catalog(owner) == before
