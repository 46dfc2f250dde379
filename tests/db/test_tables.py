"""``db/tables.py`` tells the truth about the migrated schema, and Piccolo's auto-migration
snapshot matches it (``piccolo migrations new taskql --auto`` finds nothing to do).

The drift test reads the catalog of the freshly migrated test database and compares it with
every Table class, both ways: tables, columns, types, nullability, defaults, the primary-key
column, and single-column foreign keys (target, ON DELETE, ON UPDATE)."""

from __future__ import annotations

import ipaddress
import json
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from piccolo.apps.migrations.commands.new import AutoMigrationManager
from piccolo.columns import ForeignKey, Text
from piccolo.columns.base import Column
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.conf.apps import Finder
from piccolo.table import Table

from db import tables
from db.migrate import runner, sql_migration
from db.tenancy import TenantContext, tenant_transaction
from db.uuid7 import UUIDv7
from tests.conftest import ScratchDatabase
from tests.db.test_migrations import catalog as full_catalog
from tests.db.test_migrations import ok, taskql
from tests.seed import Tenant

#: Tables the migrations create that have no class, and why.
NO_CLASS = {
    "migration": "Piccolo's own history table (piccolo.apps.migrations.tables)",
    "migration_backfill_progress": "the migration toolkit's backfill positions "
    "(db.migrate.backfill); migration 28 is the first migration with a backfill",
}
#: Database defaults a class cannot express, and why (see db/tables.py's docstring).
UNEXPRESSED_DEFAULTS = {
    ("realtime_events", "xid"): "pg_current_xact_id(): no Python counterpart; triggers write"
}
#: Piccolo's column type (lower case) -> information_schema's udt_name, where they differ.
UDT = {
    "smallint": "int2",
    "integer": "int4",
    "bigint": "int8",
    "serial": "int4",
    "bigserial": "int8",
    "boolean": "bool",
    "double precision": "float8",
    "real": "float4",
}
#: pg_constraint's confdeltype / confupdtype -> Piccolo's OnDelete / OnUpdate value.
ACTIONS = {
    "a": "NO ACTION",
    "r": "RESTRICT",
    "c": "CASCADE",
    "n": "SET NULL",
    "d": "SET DEFAULT",
}

TABLES_SQL = """
SELECT c.relname FROM pg_class c
WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relispartition
ORDER BY 1
"""
COLUMNS_SQL = """
SELECT table_name, column_name, udt_name, is_nullable = 'YES' AS nullable, column_default,
       is_identity = 'YES' AS identity, is_generated = 'ALWAYS' AS generated
FROM information_schema.columns
WHERE table_schema = 'public' AND table_name = ANY($1::text[])
"""
KEYS_SQL = """
SELECT con.conrelid::regclass::text AS table_name, con.contype::text AS kind,
       array_agg(a.attname::text ORDER BY k.ord) AS columns,
       con.confrelid::regclass::text AS target,
       (SELECT array_agg(t.attname::text ORDER BY f.ord)
        FROM unnest(con.confkey) WITH ORDINALITY f(attnum, ord)
        JOIN pg_attribute t ON t.attrelid = con.confrelid AND t.attnum = f.attnum) AS target_columns,
       con.confdeltype::text AS on_delete, con.confupdtype::text AS on_update
FROM pg_constraint con
CROSS JOIN LATERAL unnest(con.conkey) WITH ORDINALITY k(attnum, ord)
JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
WHERE con.connamespace = 'public'::regnamespace AND con.contype IN ('p', 'f')
  AND con.conrelid::regclass::text = ANY($1::text[]) AND con.conparentid = 0
GROUP BY con.oid
"""


def table_classes() -> list[type[Table]]:
    return [
        value
        for value in vars(tables).values()
        if isinstance(value, type)
        and issubclass(value, Table)
        and value is not Table
        and value.__module__ == tables.__name__
    ]


def udt(column: Column) -> str:
    column_type = str(column.column_type).lower()
    return UDT.get(column_type, column_type)


def expected_default(column: Column) -> str | None:
    """The ``column_default`` PostgreSQL reports for the class's default (None: none)."""
    default = column.default
    if default is None:
        return None
    if isinstance(default, UUIDv7):
        return "uuidv7()"
    if isinstance(default, TimestamptzNow):
        return "now()"
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, int):
        return str(default)
    if udt(column) == "jsonb":  # Piccolo keeps a JSON default serialised
        text = default if isinstance(default, str) else json.dumps(default)
        return "'{}'::jsonb".format(text.replace("'", "''"))
    if isinstance(default, str):
        return "'{}'::text".format(default.replace("'", "''"))
    return f"<unmapped default {default!r}>"


Row = dict[str, Any]


async def catalog(connection: asyncpg.Connection) -> dict[str, Any]:
    """The migrated schema: tables, their columns, primary and foreign keys (plain dicts, so
    the self-test can alter them)."""
    names = [r["relname"] for r in await connection.fetch(TABLES_SQL)]
    columns: dict[str, dict[str, Row]] = {}
    for r in await connection.fetch(COLUMNS_SQL, names):
        columns.setdefault(r["table_name"], {})[r["column_name"]] = dict(r)
    keys = [dict(r) for r in await connection.fetch(KEYS_SQL, names)]
    return {"tables": names, "columns": columns, "keys": keys}


def column_drift(
    where: str, column: Column, row: Row, primary_key: list[str], foreign_key: Row | None
) -> list[str]:
    """The differences between one declared column and its catalog row."""
    problems = []
    name = column._meta.db_column_name
    if row["generated"]:
        problems.append(f"{where}: generated in the database; do not declare it")
    if udt(column) != row["udt_name"]:
        problems.append(f"{where}: type {udt(column)} declared, {row['udt_name']} in the database")
    if column._meta.null != row["nullable"]:
        problems.append(f"{where}: null={column._meta.null} declared, nullable={row['nullable']}")
    if column._meta.primary_key and name not in primary_key:
        problems.append(f"{where}: the class's key column is not in the primary key")

    unexpressed = tuple(where.split(".")) in UNEXPRESSED_DEFAULTS
    if row["identity"]:
        if "serial" not in str(column.column_type).lower():
            problems.append(f"{where}: an identity column; declare it (Big)Serial")
    elif not unexpressed and expected_default(column) != row["column_default"]:
        problems.append(
            f"{where}: default {expected_default(column)} declared, "
            f"{row['column_default']} in the database"
        )
    required = not (row["nullable"] or row["identity"] or row["column_default"] is not None)
    if required != column._meta.required:
        problems.append(
            f"{where}: required={column._meta.required} declared; NOT NULL without a default "
            f"in the database: {required}"
        )

    if isinstance(column, ForeignKey):
        meta = column._foreign_key_meta
        declared = (
            meta.resolved_references._meta.tablename,
            meta.resolved_target_column._meta.db_column_name,
            meta.on_delete.value,
            meta.on_update.value,
        )
        if foreign_key is None:
            problems.append(f"{where}: a ForeignKey {declared}, no such key in the database")
        else:
            in_db = (
                foreign_key["target"],
                foreign_key["target_columns"][0],
                ACTIONS[foreign_key["on_delete"]],
                ACTIONS[foreign_key["on_update"]],
            )
            if in_db != declared:
                problems.append(f"{where}: ForeignKey {declared} declared, {in_db} in the database")
    elif foreign_key is not None:
        problems.append(f"{where}: references {foreign_key['target']}; declare a ForeignKey")
    return problems


def drift(found: dict[str, Any]) -> list[str]:
    """Every difference between the catalog and the classes, one line each."""
    problems = []
    classes = {cls._meta.tablename: cls for cls in table_classes()}
    for name in found["tables"]:
        if name not in classes and name not in NO_CLASS:
            problems.append(f"{name}: a table in the database without a class in db/tables.py")
    for name in classes:
        if name not in found["tables"]:
            problems.append(f"{name}: a class in db/tables.py without a table in the database")
    primary = {r["table_name"]: r["columns"] for r in found["keys"] if r["kind"] == "p"}
    foreign = {
        (r["table_name"], r["columns"][0]): r
        for r in found["keys"]
        if r["kind"] == "f" and len(r["columns"]) == 1
    }
    for name, cls in classes.items():
        rows: dict[str, Row] = found["columns"].get(name, {})
        declared = {c._meta.db_column_name: c for c in cls._meta.columns}
        for column_name, row in rows.items():
            if column_name not in declared and not row["generated"]:
                problems.append(f"{name}.{column_name}: in the database, not in {cls.__name__}")
        for column_name, column in declared.items():
            where = f"{name}.{column_name}"
            if column_name not in rows:
                problems.append(f"{where}: declared in {cls.__name__}, not in the database")
                continue
            problems += column_drift(
                where,
                column,
                rows[column_name],
                primary.get(name, []),
                foreign.get((name, column_name)),
            )
    return problems


async def test_the_table_classes_match_the_migrated_schema(
    owner: asyncpg.Connection,
) -> None:
    assert drift(await catalog(owner)) == []


async def test_the_drift_test_finds_drift(owner: asyncpg.Connection) -> None:
    """Each kind of drift, made in a copy of the catalog, is reported."""
    found = await catalog(owner)
    found["tables"].append("orphans")
    columns = found["columns"]
    del columns["tasks"]["title"]
    columns["projects"]["extra"] = {**columns["projects"]["name"], "column_name": "extra"}
    columns["sessions"]["ip_address"]["udt_name"] = "varchar"
    columns["users"]["display_name"]["nullable"] = True
    columns["tasks"]["status"]["column_default"] = "'open'::text"
    columns["tasks"]["created_by"]["column_default"] = "now()"
    for key in found["keys"]:
        if key["table_name"] == "sessions" and key["kind"] == "f":
            key["on_delete"] = "n"
        if key["table_name"] == "task_comments" and key["columns"] == ["author_id"]:
            key["columns"] = ["author_id", "organization_id"]  # now a composite key
    problems = "\n".join(drift(found))
    for expected in (
        "orphans: a table in the database without a class",
        "tasks.title: declared in Task, not in the database",
        "projects.extra: in the database, not in Project",
        "sessions.ip_address: type inet declared, varchar in the database",
        "users.display_name: null=False declared, nullable=True",
        "users.display_name: required=True declared",
        "tasks.status: default 'todo'::text declared, 'open'::text in the database",
        "tasks.created_by: default None declared, now() in the database",
        "sessions.user_id: ForeignKey ('users', 'id', 'CASCADE', 'NO ACTION') declared, "
        "('users', 'id', 'SET NULL', 'NO ACTION') in the database",
        "task_comments.author_id: a ForeignKey",
    ):
        assert expected in problems


async def test_piccolo_auto_finds_no_change() -> None:
    """What ``piccolo migrations new taskql --auto`` computes before writing a file: the
    snapshot of every migration's MigrationManager against ``db/tables.py``."""
    app_config = Finder().get_app_config("taskql")
    statements = await AutoMigrationManager(auto_input="y").get_alter_statements(
        app_config=app_config
    )
    assert [s for alter in statements for s in alter.statements] == []


SNAPSHOT = "2026-11-24T09:00:26:000000"


async def test_the_snapshot_migration_runs_no_sql_either_way(
    test_database: ScratchDatabase, pool: asyncpg.Pool
) -> None:
    """Reversing and re-applying it leaves every table, column, key, index, trigger, policy
    and grant as it was: its add_table/add_column records never run."""
    before = await full_catalog(test_database.owner_dsn)
    try:
        ok(taskql(test_database, "migrate", "backwards", "--to", SNAPSHOT, "--yes"))
        status = await runner.status(test_database.owner_dsn)
        assert SNAPSHOT in status.pending
        if runner.migration_ids()[-1] == SNAPSHOT:  # later migrations were reversed too
            assert await full_catalog(test_database.owner_dsn) == before
    finally:
        ok(taskql(test_database, "migrate", "forwards"))
        await pool.expire_connections()
    assert await full_catalog(test_database.owner_dsn) == before
    assert (await runner.status(test_database.owner_dsn)).up_to_date


async def test_the_custom_columns_write_and_read(tenant_a: Tenant) -> None:
    """``inet`` through ``db.columns.Inet``: a string in, an ``ipaddress`` object out."""
    session = tables.Session(
        user_id=tenant_a.owner_id,
        token_hash=os.urandom(32),
        expires_at=datetime.now(UTC) + timedelta(hours=1),
        ip_address="2001:db8::7",
        user_agent="test_tables",
    )
    async with tenant_transaction(TenantContext(user_id=tenant_a.owner_id)):
        await tables.Session.insert(session)
        row = await (
            tables.Session.select(tables.Session.ip_address)
            .where(tables.Session.id == session.id)
            .first()
        )
        await tables.Session.delete().where(tables.Session.id == session.id)
    assert row is not None
    assert row["ip_address"] == ipaddress.ip_address("2001:db8::7")


async def test_a_migrations_snapshot_records_never_run(
    pool: asyncpg.Pool, owner: asyncpg.Connection
) -> None:
    """A sql_migration carrying an add_column record runs its SQL only, either way. (As the
    server role, which owns nothing: had the record run, ALTER TABLE would have failed.)"""
    manager = sql_migration("2030-01-01T00:00:00:000000", "test", "SELECT 1;", "SELECT 2;")
    manager.add_column(
        table_class_name="Task",
        tablename="tasks",
        column_name="never_added",
        column_class=Text,
        params={"null": True, "default": None},
    )
    manager.add_table(class_name="Never", tablename="never_created")
    await manager.run()
    await manager.run(backwards=True)
    assert not await owner.fetchval(
        "SELECT count(*) FROM information_schema.columns "
        "WHERE table_name IN ('tasks', 'never_created') AND column_name = 'never_added'"
    )
    assert await owner.fetchval("SELECT to_regclass('never_created')") is None
