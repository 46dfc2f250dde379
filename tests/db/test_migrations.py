"""Migrations: forwards, backwards and forwards again leave the same schema, on an empty
database and on one holding data; `taskql migrate status` tells the truth."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from db.migrate import runner
from tests.conftest import ScratchDatabase

CATALOG = {
    "relations": "SELECT relname, relkind::text, relrowsecurity, relforcerowsecurity, relacl::text, "
    "pg_get_expr(relpartbound, oid) FROM pg_class WHERE relnamespace = 'public'::regnamespace "
    "AND relname NOT LIKE 'migration%' ORDER BY 1",
    "columns": "SELECT table_name, column_name, data_type, is_nullable, column_default, "
    "is_generated, generation_expression FROM information_schema.columns "
    "WHERE table_schema = 'public' AND table_name <> 'migration' ORDER BY 1, 2",
    "constraints": "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
    "FROM pg_constraint WHERE connamespace = 'public'::regnamespace "
    "AND conrelid::regclass::text <> 'migration' ORDER BY 1, 2",
    "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
    "AND tablename <> 'migration' ORDER BY 1, 2",
    "triggers": "SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid) FROM pg_trigger "
    "WHERE NOT tgisinternal ORDER BY 1, 2",
    "policies": "SELECT tablename, policyname, permissive, roles::text, cmd, qual, with_check "
    "FROM pg_policies WHERE schemaname = 'public' ORDER BY 1, 2",
    "functions": "SELECT proname, pg_get_function_identity_arguments(oid), pg_get_functiondef(oid), "
    "proacl::text FROM pg_proc WHERE pronamespace = 'public'::regnamespace AND prokind = 'f' ORDER BY 1, 2",
    # Bootstrap's pg_stat_statements (schema monitoring, db/roles.py) is not the migrations'.
    "extensions": "SELECT extname FROM pg_extension "
    "WHERE extnamespace IS DISTINCT FROM to_regnamespace('monitoring') ORDER BY 1",
    "schema_acl": "SELECT nspacl::text FROM pg_namespace WHERE nspname = 'public'",
}


async def catalog(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    connection = await asyncpg.connect(dsn)
    try:
        return {
            name: [tuple(r) for r in await connection.fetch(sql)] for name, sql in CATALOG.items()
        }
    finally:
        await connection.close()


def taskql(database: ScratchDatabase, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        env=database.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture
async def fresh_pool(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Pool]:
    """Tests here drop and recreate every table: pooled connections' cached plans must go."""
    yield pool
    await pool.expire_connections()


async def test_forwards_backwards_forwards_on_an_empty_database(
    test_database: ScratchDatabase, fresh_pool: asyncpg.Pool
) -> None:
    ok(taskql(test_database, "migrate", "backwards", "--yes"))
    emptied = await catalog(test_database.owner_dsn)
    assert emptied["relations"] == []
    assert emptied["policies"] == []
    assert emptied["functions"] == []
    assert emptied["extensions"] == [("plpgsql",)]

    ok(taskql(test_database, "migrate", "forwards"))
    first = await catalog(test_database.owner_dsn)
    ok(taskql(test_database, "migrate", "backwards", "--yes"))
    assert await catalog(test_database.owner_dsn) == emptied
    ok(taskql(test_database, "migrate", "forwards"))
    assert await catalog(test_database.owner_dsn) == first


async def test_round_trip_with_demo_data_restores_the_same_schema(
    test_database: ScratchDatabase, fresh_pool: asyncpg.Pool
) -> None:
    before = await catalog(test_database.owner_dsn)
    assert "Loaded" in ok(taskql(test_database, "seed-demo"))
    ok(taskql(test_database, "migrate", "backwards", "--yes"))
    ok(taskql(test_database, "migrate", "forwards"))
    assert await catalog(test_database.owner_dsn) == before
    # The data went with the tables; loading it again works on the rebuilt schema.
    assert "Loaded" in ok(taskql(test_database, "seed-demo"))


async def test_status_reports_up_to_date(test_database: ScratchDatabase) -> None:
    output = ok(taskql(test_database, "migrate", "status"))
    assert "database is up to date" in output
    assert output.count("applied  ") == len(runner.migration_files())


async def test_status_reports_a_migration_from_elsewhere(
    test_database: ScratchDatabase, owner: asyncpg.Connection
) -> None:
    await owner.execute(
        "INSERT INTO migration (name, app_name, ran_on) VALUES ('2099-01-01T00:00:00:000000', 'taskql', now())"
    )
    try:
        result = taskql(test_database, "migrate", "status")
    finally:
        await owner.execute("DELETE FROM migration WHERE name = '2099-01-01T00:00:00:000000'")
    assert result.returncode == 1
    assert "UNKNOWN  2099-01-01T00:00:00:000000" in result.stdout


async def test_status_reports_a_half_applied_migration(
    test_database: ScratchDatabase, owner: asyncpg.Connection
) -> None:
    audit_migration = "2026-11-24T09:00:04:000000"
    ran_on = await owner.fetchval("SELECT ran_on FROM migration WHERE name = $1", audit_migration)
    await owner.execute("DELETE FROM migration WHERE name = $1", audit_migration)
    try:
        result = taskql(test_database, "migrate", "status")
    finally:
        await owner.execute(
            "INSERT INTO migration (name, app_name, ran_on) VALUES ($1, 'taskql', $2)",
            audit_migration,
            ran_on,
        )
    assert result.returncode == 1
    assert (
        f"PROBLEM  {audit_migration} is not recorded as applied but its tables exist: audit_logs"
        in result.stdout
    )
    assert f"ORDER    {audit_migration}" in result.stdout


def test_piccolos_own_command_works_from_the_project_root(test_database: ScratchDatabase) -> None:
    piccolo = Path(sys.executable).parent / "piccolo"
    result = subprocess.run(
        [str(piccolo), "migrations", "forwards", "all"],
        env=test_database.env(),
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "No migrations need to be run" in result.stdout


async def test_status_exits_1_while_a_migration_is_pending(
    test_database: ScratchDatabase, owner: asyncpg.Connection
) -> None:
    """Guards: `migrate status` exited 0 with 14 migrations pending (the README says 1)."""
    newest = runner.migration_files()[-1].id
    ran_on = await owner.fetchval("SELECT ran_on FROM migration WHERE name = $1", newest)
    await owner.execute("DELETE FROM migration WHERE name = $1", newest)
    try:
        result = taskql(test_database, "migrate", "status")
    finally:
        await owner.execute(
            "INSERT INTO migration (name, app_name, ran_on) VALUES ($1, 'taskql', $2)",
            newest,
            ran_on,
        )
    assert result.returncode == 1, result.stdout
    assert f"pending  {newest}" in result.stdout
    # The newest migration may create tables, which status then also reports as present.
    assert "1 migration(s) pending" in result.stdout or "its tables exist" in result.stdout


ROOT = Path(__file__).resolve().parents[2]
PICCOLO = str(Path(sys.executable).parent / "piccolo")


async def _spawn(database: ScratchDatabase, *argv: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *argv,
        env=database.env(),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


async def _finish(process: asyncio.subprocess.Process, seconds: float) -> str:
    output, _ = await asyncio.wait_for(process.communicate(), seconds)
    return output.decode()


async def test_two_concurrent_piccolo_runs_take_turns_on_a_fresh_database(
    fresh_database: ScratchDatabase,
) -> None:
    """Guards: `piccolo migrations forwards all` ignored the migration advisory lock; of two
    concurrent runs one failed (`extension "pg_trgm" already exists`)."""
    runs = [
        await _spawn(fresh_database, PICCOLO, "migrations", "forwards", "all") for _ in range(2)
    ]
    outputs = [await _finish(run, 300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], "\n---\n".join(outputs)
    # One applied everything; the other waited for the lock and found nothing to do.
    assert sum("No migrations need to be run" in output for output in outputs) == 1, outputs
    connection = await asyncpg.connect(fresh_database.owner_dsn)
    try:
        recorded = await connection.fetch(
            "SELECT name, count(*) AS n FROM migration WHERE app_name = 'taskql' GROUP BY name"
        )
    finally:
        await connection.close()
    assert sorted(r["name"] for r in recorded) == [m.id for m in runner.migration_files()]
    assert all(r["n"] == 1 for r in recorded)
    assert (await runner.status(fresh_database.owner_dsn)).up_to_date


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-m", "api.cli", "migrate", "backwards", "--to", "{newest}", "--yes"],
        [PICCOLO, "migrations", "backwards", "taskql", "{newest}", "--auto_agree"],
    ],
    ids=["taskql", "piccolo"],
)
async def test_reversing_waits_for_the_migration_lock(
    test_database: ScratchDatabase,
    owner: asyncpg.Connection,
    fresh_pool: asyncpg.Pool,
    command: list[str],
) -> None:
    """Guards: `taskql migrate backwards` (and Piccolo's backwards) ignored the lock."""
    from db.migrate.locks import MIGRATION_LOCK_KEY

    newest = runner.migration_files()[-1].id
    holder = await asyncpg.connect(test_database.owner_dsn)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        process = await _spawn(test_database, *(part.format(newest=newest) for part in command))
        try:
            await asyncio.sleep(4)
            assert process.returncode is None, await _finish(process, 10)
            assert await owner.fetchval("SELECT count(*) FROM migration WHERE name = $1", newest)
        finally:
            await holder.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
        output = await _finish(process, 120)
        assert process.returncode == 0, output
        assert not await owner.fetchval("SELECT count(*) FROM migration WHERE name = $1", newest)
    finally:
        await holder.close()
        ok(taskql(test_database, "migrate", "forwards"))
