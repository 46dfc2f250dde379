"""`taskql db health` on the real test database: its JSON, and real problems making it exit 1."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import asyncpg

from db import embedded
from tests.conftest import ScratchDatabase

CHECKS = {
    "statements",
    "unused_indexes",
    "duplicate_indexes",
    "table_bloat",
    "index_bloat",
    "dead_tuples",
    "long_transactions",
    "audit_partitions",
    "sequences",
    "replication",
}


async def health(database: ScratchDatabase, *args: str) -> subprocess.CompletedProcess[str]:
    """The command in a subprocess, pointed at ``database`` (run off the event loop, so the
    test's own connections stay served)."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "api.cli", "db", "health", *args],
        env={**database.env(), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_the_json_report_has_every_check_and_a_healthy_database_exits_0(
    test_database: ScratchDatabase,
) -> None:
    result = await health(test_database, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert set(report) == {
        "database",
        "server_version",
        "checked_at",
        "ok",
        "problems",
        "findings",
        "checks",
    }
    assert report["ok"] is True
    assert report["problems"] == []
    assert set(report["checks"]) == CHECKS
    for finding in report["findings"]:
        assert set(finding) == {"check", "severity", "message"}
        assert finding["severity"] in ("warning", "notice")
    checks = report["checks"]
    assert checks["audit_partitions"]["ahead"] >= 1
    assert any(r["partition"] == "audit_logs_default" for r in checks["audit_partitions"]["rows"])
    assert checks["duplicate_indexes"]["rows"] == []
    assert {r["table"] for r in checks["dead_tuples"]["rows"]} >= {"tasks", "organizations"}
    assert checks["replication"]["in_recovery"] is False
    statements = checks["statements"]
    if test_database.admin_dsn is not None:
        # The embedded server preloads pg_stat_statements and bootstrap created it.
        assert statements["installed"]
        assert statements["loaded"]
        assert statements["rows"], "no statement recorded"
        assert {"calls", "total_ms", "mean_ms", "percent", "query"} <= set(statements["rows"][0])
    elif not (statements["installed"] and statements["loaded"]):
        assert any(f["check"] == "statements" for f in report["findings"])


async def test_a_long_transaction_makes_it_exit_1_and_names_the_backend(
    test_database: ScratchDatabase, server_connection: asyncpg.Connection
) -> None:
    pid = server_connection.get_server_pid()
    transaction = server_connection.transaction()
    await transaction.start()
    try:
        await server_connection.execute("SELECT 1")
        await asyncio.sleep(1.5)
        result = await health(test_database, "--json", "--long-transaction-seconds", "1")
        assert result.returncode == 1, result.stdout + result.stderr
        report = json.loads(result.stdout)
        assert report["ok"] is False
        assert [p["check"] for p in report["problems"]] == ["long_transactions"]
        assert f"pid {pid} " in report["problems"][0]["message"]
        rows = report["checks"]["long_transactions"]["rows"]
        assert [r["pid"] for r in rows] == [pid]
        assert rows[0]["state"] == "idle in transaction"

        human = await health(test_database, "--long-transaction-seconds", "1")
        assert human.returncode == 1
        assert f"pid {pid} " in human.stdout
        assert "1 problem(s)" in human.stdout
    finally:
        await transaction.rollback()
    assert (
        await health(test_database, "--json", "--long-transaction-seconds", "1")
    ).returncode == 0


async def test_a_missing_next_month_audit_partition_makes_it_exit_1(
    test_database: ScratchDatabase, owner: asyncpg.Connection
) -> None:
    today = date.today()
    following = date(today.year + today.month // 12, today.month % 12 + 1, 1)
    name = f"audit_logs_y{following.year:04d}m{following.month:02d}"
    assert await owner.fetchval("SELECT to_regclass($1)", f"public.{name}") is not None
    after = date(following.year + following.month // 12, following.month % 12 + 1, 1)
    # Detached, not dropped: rows other tests wrote for that month come back with it.
    await owner.execute(f"ALTER TABLE audit_logs DETACH PARTITION {name}")
    try:
        result = await health(test_database, "--json")
        assert result.returncode == 1, result.stdout + result.stderr
        report = json.loads(result.stdout)
        assert report["checks"]["audit_partitions"]["ahead"] == 0
        assert [p["check"] for p in report["problems"]] == ["audit_partitions"]
        assert "next month's partition is missing" in report["problems"][0]["message"]
    finally:
        await owner.execute(
            f"ALTER TABLE audit_logs ATTACH PARTITION {name} "
            f"FOR VALUES FROM ('{following}') TO ('{after}')"
        )
    assert (await health(test_database, "--json")).returncode == 0


async def test_without_the_extension_the_report_says_it_is_missing_and_still_runs(
    test_database: ScratchDatabase, fresh_database: ScratchDatabase
) -> None:
    """As on a server that does not ship or preload pg_stat_statements (CI's PostgreSQL 15):
    a notice, never a failure. The fresh database is not migrated: that is its problem."""
    from urllib.parse import unquote, urlsplit

    from db.roles import database_url

    assert fresh_database.admin_dsn is not None
    name = unquote(urlsplit(fresh_database.owner_dsn).path.lstrip("/"))
    admin = await asyncpg.connect(database_url(fresh_database.admin_dsn, name))
    try:
        await admin.execute("DROP EXTENSION IF EXISTS pg_stat_statements")
    finally:
        await admin.close()
    result = await health(fresh_database, "--json")
    report = json.loads(result.stdout)
    assert report["checks"]["statements"] == {
        "installed": False,
        "loaded": report["checks"]["statements"]["loaded"],
        "rows": [],
    }
    notices = [f for f in report["findings"] if f["check"] == "statements"]
    assert len(notices) == 1
    assert notices[0]["severity"] == "notice"
    assert "pg_stat_statements is missing" in notices[0]["message"]
    assert [p["check"] for p in report["problems"]] == ["audit_partitions"]
    assert result.returncode == 1


def test_the_embedded_cluster_is_configured_once_before_it_starts(tmp_path: Path) -> None:
    conf = tmp_path / "postgresql.conf"
    conf.write_text("max_connections = 100\n")
    assert embedded.configure(tmp_path) is True
    assert embedded.configure(tmp_path) is False
    text = conf.read_text()
    assert text.startswith("max_connections = 100\n")
    assert text.count("shared_preload_libraries = 'pg_stat_statements'") == 1
    assert embedded.configure(tmp_path / "missing") is False
