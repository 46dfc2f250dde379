"""`taskql db backup` and `taskql db restore --to`, on a dedicated embedded server started for
the test (never the shared one): a point-in-time restore finds exactly the rows committed
before the chosen moment."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from db import backup, embedded


def taskql(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "MIGRATION_DATABASE_URL")
    }
    return subprocess.run(
        [sys.executable, "-m", "api.cli", "db", *args],
        env={**env, "TASKQL_DATA_DIR": str(data_dir)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


async def insert(server: embedded.EmbeddedServer, *ids: int) -> None:
    """Each id in a transaction of its own."""
    conn = await asyncpg.connect(server.dsn(embedded.SUPERUSER, "postgres"))
    try:
        for i in ids:
            await conn.execute("INSERT INTO pitr (id) VALUES ($1)", i)
    finally:
        await conn.close()


async def test_restore_to_a_moment_finds_exactly_the_rows_committed_before_it(
    tmp_path: Path,
) -> None:
    if os.environ.get("DATABASE_URL"):
        pytest.skip("backup and restore manage the embedded server")
    data = tmp_path / "pgdata"
    server = await asyncio.to_thread(embedded.start, data)
    try:
        conn = await asyncpg.connect(server.dsn(embedded.SUPERUSER, "postgres"))
        try:
            assert await conn.fetchval("SHOW archive_mode") == "on"
            await conn.execute("CREATE TABLE pitr (id int PRIMARY KEY)")
        finally:
            await conn.close()
        await insert(server, 1, 2, 3)
        made = await asyncio.to_thread(taskql, data, "backup")
        assert made.returncode == 0, made.stderr
        assert "base backup" in made.stdout
        await insert(server, 4, 5)
        conn = await asyncpg.connect(server.dsn(embedded.SUPERUSER, "postgres"))
        try:
            moment = await conn.fetchval("SELECT clock_timestamp()")
        finally:
            await conn.close()
        await asyncio.sleep(0.05)
        await insert(server, 6, 7)
        # What a crash would lose is the WAL not yet archived (at most archive_timeout):
        # archive it, so that the moment chosen lies within the archive.
        await backup.wait_archived(server)

        await asyncio.to_thread(embedded.stop, data)
        shutil.rmtree(data)  # the disaster

        restored = await asyncio.to_thread(taskql, data, "restore", "--to", moment.isoformat())
        assert restored.returncode == 0, restored.stderr
        assert "restored to" in restored.stdout
        server = await asyncio.to_thread(embedded.start, data)
        conn = await asyncpg.connect(server.dsn(embedded.SUPERUSER, "postgres"))
        try:
            ids = [r["id"] for r in await conn.fetch("SELECT id FROM pitr ORDER BY id")]
            in_recovery = await conn.fetchval("SELECT pg_is_in_recovery()")
            target = await conn.fetchval("SELECT current_setting('recovery_target_time')")
        finally:
            await conn.close()
        assert ids == [1, 2, 3, 4, 5]
        assert in_recovery is False
        assert target == ""  # the recovery settings are gone: a restart does not recover again

        again = await asyncio.to_thread(taskql, data, "restore", "--to", moment.isoformat())
        assert again.returncode == 1
        assert "is running" in again.stderr
    finally:
        await asyncio.to_thread(embedded.stop, data)
