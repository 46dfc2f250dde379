"""Run and inspect migrations: forwards, backwards, and an honest status.

``status`` compares three things: the migration files in this checkout, the history table
Piccolo keeps (``migration``), and the tables that really exist. It reports migrations
recorded here but unknown to this checkout (applied from elsewhere), pending ones, pending
ones older than the newest applied (out of order), and half-applied states (tables of an
unrecorded migration present, or tables of a recorded one missing).
"""

from __future__ import annotations

import functools
import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import asyncpg

from db.errors import MigrationStateError, unavailable
from db.migrate import guard

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent.parent / "piccolo_migrations"
APP_NAME = "taskql"
_CREATE_TABLE = re.compile(
    r"^\s*CREATE TABLE (?:IF NOT EXISTS )?(\w+)", re.MULTILINE | re.IGNORECASE
)


@dataclass(frozen=True)
class MigrationFile:
    id: str
    description: str
    tables: tuple[str, ...]


@dataclass
class MigrationStatus:
    applied: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    out_of_order: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.unknown or self.out_of_order or self.problems)

    @property
    def up_to_date(self) -> bool:
        return self.ok and not self.pending


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"piccolo_migrations.{path.stem}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def migration_files() -> list[MigrationFile]:
    """The migrations in this checkout, in id order."""
    found = []
    for path in sorted(MIGRATIONS_DIR.glob("*.py")):
        if path.name == "__init__.py":
            continue
        module = _load(path)
        forwards_sql = getattr(module, "FORWARDS", "")
        found.append(
            MigrationFile(
                id=module.ID,
                description=getattr(module, "DESCRIPTION", ""),
                tables=tuple(_CREATE_TABLE.findall(forwards_sql)),
            )
        )
    return sorted(found, key=lambda m: m.id)


async def status(owner_dsn: str) -> MigrationStatus:
    try:
        conn = await asyncpg.connect(owner_dsn, timeout=10)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise unavailable(owner_dsn, exc) from None
    try:
        has_history = await conn.fetchval("SELECT to_regclass('public.migration') IS NOT NULL")
        recorded: list[str] = []
        if has_history:
            recorded = [
                r["name"]
                for r in await conn.fetch(
                    "SELECT name FROM migration WHERE app_name = $1 ORDER BY name", APP_NAME
                )
            ]
        existing = {
            r["relname"]
            for r in await conn.fetch(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')"
            )
        }
    finally:
        await conn.close()

    files = migration_files()
    known = {m.id for m in files}
    result = MigrationStatus()
    result.applied = [m.id for m in files if m.id in recorded]
    result.pending = [m.id for m in files if m.id not in recorded]
    result.unknown = [name for name in recorded if name not in known]
    newest_applied = max(recorded, default="")
    result.out_of_order = [m for m in result.pending if m < newest_applied]
    for m in files:
        present = [t for t in m.tables if t in existing]
        missing = [t for t in m.tables if t not in existing]
        if m.id in recorded and missing:
            result.problems.append(
                f"{m.id} is recorded as applied but its tables are missing: {', '.join(missing)}"
            )
        if m.id not in recorded and present:
            result.problems.append(
                f"{m.id} is not recorded as applied but its tables exist: {', '.join(present)} "
                "(half-applied, or applied by hand)"
            )
    return result


#: The migration that lets the server role read ``migration`` (``not_current`` needs it).
SERVER_READS_HISTORY = "2026-11-24T09:00:19:000000"


@functools.cache
def migration_ids() -> tuple[str, ...]:
    """The ids of this checkout's migrations, in order (read once per process)."""
    return tuple(m.id for m in migration_files())


async def not_current(connection: asyncpg.Connection) -> str | None:
    """Why the database is not migrated as far as this checkout (None: every migration of
    the checkout is recorded as applied), in one line. Works as the server role (it reads
    ``migration`` since SERVER_READS_HISTORY) and costs one round trip once it can.

    Migrations recorded but unknown here are fine: during a deploy the old code runs on the
    expanded schema (docs/operations/migrations.md)."""
    ids = list(migration_ids())
    row = await connection.fetchrow(
        "SELECT to_regclass('public.migration') IS NOT NULL AS present, "
        "coalesce(has_table_privilege(to_regclass('public.migration'), 'SELECT'), false) "
        "AS readable"
    )
    if not row["present"]:
        return "no migration has been applied (no migration table): run `taskql migrate forwards`"
    if not row["readable"]:
        return (
            f"migration {SERVER_READS_HISTORY} is not applied (this role cannot read the "
            "migration table): run `taskql migrate forwards`"
        )
    recorded = set(
        await connection.fetchval(
            "SELECT coalesce(array_agg(name), '{}') FROM migration "
            "WHERE app_name = $1 AND name = ANY($2::text[])",
            APP_NAME,
            ids,
        )
    )
    pending = [i for i in ids if i not in recorded]
    if pending:
        return (
            f"{len(pending)} of {len(ids)} migration(s) pending (newest {ids[-1]}): "
            "run `taskql migrate forwards`"
        )
    return None


async def server_check(server_dsn: str) -> str | None:
    """``not_current`` on a connection of its own (``taskql serve``'s start-up check)."""
    try:
        conn = await asyncpg.connect(server_dsn, timeout=10)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise unavailable(server_dsn, exc) from None
    try:
        return await not_current(conn)
    finally:
        await conn.close()


def describe(result: MigrationStatus) -> list[str]:
    lines = [f"applied  {m}" for m in result.applied]
    lines += [f"pending  {m}" for m in result.pending]
    lines += [
        f"UNKNOWN  {m} (recorded in the database, not in this checkout)" for m in result.unknown
    ]
    lines += [
        f"ORDER    {m} is pending but older than an applied migration" for m in result.out_of_order
    ]
    lines += [f"PROBLEM  {p}" for p in result.problems]
    if result.up_to_date:
        lines.append("database is up to date")
    elif result.ok:
        lines.append(f"{len(result.pending)} migration(s) pending: run `taskql migrate forwards`")
    return lines


async def forwards() -> None:
    """Apply every pending migration, as the owner role, holding the migration advisory
    lock (``db.migrate.guard``) so that two runners (two deploys, two CI jobs) never
    migrate at once."""
    from piccolo.apps.migrations.commands.forwards import run_forwards

    guard.install()
    result = await run_forwards(app_name=APP_NAME, migration_id="all")
    if not result.success:
        raise MigrationStateError(result.message or "migrations failed")


async def backwards(migration_id: str = "all") -> None:
    """Reverse applied migrations down to and including ``migration_id`` ("all": every one),
    holding the migration advisory lock."""
    from piccolo.apps.migrations.commands.backwards import run_backwards

    guard.install()
    result = await run_backwards(app_name=APP_NAME, migration_id=migration_id, auto_agree=True)
    if not result.success:
        raise MigrationStateError(result.message or "reversing migrations failed")
