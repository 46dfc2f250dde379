"""Zero-downtime schema changes, as steps of a migration.

A toolkit migration lists its steps; the runner executes them in order on one owner
connection, each step in its own short transaction(s) (or none, for CONCURRENTLY), every
DDL statement under a short ``lock_timeout`` with jittered retries (``db.migrate.locks``).
Backwards runs the steps' backwards in reverse. ``sql()`` renders what a step will run, for
the linter (``taskql migrations lint``) and for review.

Each step's docstring says which lock it takes and for how long.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import asyncpg

from db.migrate import ReviewedMigrationManager
from db.migrate.backfill import Backfill
from db.migrate.locks import DEFAULT_POLICY, LockPolicy, run_ddl

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
#: Our steps drop only constraints they themselves add (a leftover of a failed attempt, or
#: the temporary CHECK of SetNotNull): squawk's ban-drop-constraint does not apply.
OWN_CONSTRAINT = "-- squawk-ignore ban-drop-constraint\n"


def ident(name: str) -> str:
    """A schema name used by a step: plain lower-case identifiers only (migrations are code,
    but a typo should fail loudly, not produce odd SQL)."""
    if not _IDENT.match(name):
        raise ValueError(f"not a plain identifier: {name!r}")
    return name


class UnsafeChange(Exception):
    """The step would block the table for longer than a lock timeout; use the recipe given."""


@dataclass(frozen=True)
class Statement:
    sql: str
    #: Run inside a transaction (with other statements of the same group) or alone.
    transactional: bool = True


class Step(ABC):
    """One change, forwards and backwards."""

    @abstractmethod
    def forwards(self) -> list[list[Statement]]:
        """Groups of statements; each group is one transaction (or one bare statement)."""

    @abstractmethod
    def backwards(self) -> list[list[Statement]]:
        """The groups that undo ``forwards``."""

    async def check(self, connection: asyncpg.Connection) -> None:  # noqa: B027 - optional hook
        """Refuse to run if the change is unsafe on this table as it is now (default: safe)."""

    async def run(
        self, connection: asyncpg.Connection, policy: LockPolicy, backwards: bool = False
    ) -> None:
        if not backwards:
            await self.check(connection)
        for group in self.backwards() if backwards else self.forwards():
            await run_group(connection, group, policy)

    def sql(self, backwards: bool = False) -> list[list[Statement]]:
        return self.backwards() if backwards else self.forwards()


async def run_group(
    connection: asyncpg.Connection, group: Sequence[Statement], policy: LockPolicy
) -> None:
    if len(group) == 1 and not group[0].transactional:
        await run_ddl(connection, group[0].sql, policy)
        return
    async with connection.transaction():
        for statement in group:
            await run_ddl(connection, statement.sql, policy)


@dataclass(frozen=True)
class AddColumn(Step):
    """Add a nullable column, or one with a constant default.

    Lock: ACCESS EXCLUSIVE on the table for a catalog update only (milliseconds): PostgreSQL
    stores a non-volatile default once instead of rewriting rows. A volatile default
    (``random()``, ``clock_timestamp()``, ``uuidv7()``...) would rewrite the whole table under
    that lock, so it is refused on tables over ``rewrite_limit`` rows: add the column
    nullable, backfill it, then set the default for new rows.
    """

    table: str
    column: str
    type: str
    default: str | None = None
    rewrite_limit: int = 10_000

    def forwards(self) -> list[list[Statement]]:
        default = f" DEFAULT {self.default}" if self.default is not None else ""
        return [
            [
                Statement(
                    f"ALTER TABLE {ident(self.table)} ADD COLUMN IF NOT EXISTS {ident(self.column)} {self.type}{default}"
                )
            ]
        ]

    def backwards(self) -> list[list[Statement]]:
        return [
            [
                Statement(
                    f"ALTER TABLE {ident(self.table)} DROP COLUMN IF EXISTS {ident(self.column)}"
                )
            ]
        ]

    async def check(self, connection: asyncpg.Connection) -> None:
        if self.default is None:
            return
        rows = await connection.fetchval(
            "SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = $1::regclass",
            self.table,
        )
        if rows <= self.rewrite_limit:
            return
        async with connection.transaction():
            await connection.execute(
                "CREATE TEMP TABLE taskql_default_probe (x int) ON COMMIT DROP"
            )
            await connection.execute(
                f"ALTER TABLE taskql_default_probe ADD COLUMN probe {self.type} DEFAULT {self.default}"
            )
            stored_once = await connection.fetchval(
                "SELECT atthasmissing FROM pg_attribute "
                "WHERE attrelid = 'taskql_default_probe'::regclass AND attname = 'probe'"
            )
        if not stored_once:
            raise UnsafeChange(
                f"DEFAULT {self.default} is volatile: adding it would rewrite {self.table} "
                f"(~{rows} rows) under an ACCESS EXCLUSIVE lock. Add {self.column} without a "
                "default, backfill it (Backfill), then ALTER COLUMN ... SET DEFAULT for new rows."
            )


@dataclass(frozen=True)
class RawSql(Step):
    """Plain SQL in one short transaction, for what needs no recipe (an extension, a function).
    Locks: whatever the statements take; keep them catalog-only."""

    forwards_sql: str
    backwards_sql: str

    def forwards(self) -> list[list[Statement]]:
        return [[Statement(self.forwards_sql)]]

    def backwards(self) -> list[list[Statement]]:
        return [[Statement(self.backwards_sql)]]


@dataclass(frozen=True)
class SetDefault(Step):
    """Set a column's default for new rows. Lock: ACCESS EXCLUSIVE, catalog only."""

    table: str
    column: str
    default: str

    def forwards(self) -> list[list[Statement]]:
        return [
            [
                Statement(
                    f"ALTER TABLE {ident(self.table)} ALTER COLUMN {ident(self.column)} SET DEFAULT {self.default}"
                )
            ]
        ]

    def backwards(self) -> list[list[Statement]]:
        return [
            [
                Statement(
                    f"ALTER TABLE {ident(self.table)} ALTER COLUMN {ident(self.column)} DROP DEFAULT"
                )
            ]
        ]


@dataclass(frozen=True)
class SetNotNull(Step):
    """Make a column NOT NULL without a long lock.

    1. ``ADD CONSTRAINT … CHECK (col IS NOT NULL) NOT VALID``: ACCESS EXCLUSIVE, catalog only;
       new writes are checked from now on.
    2. ``VALIDATE CONSTRAINT``: SHARE UPDATE EXCLUSIVE while it scans: reads and writes go on.
    3. ``SET NOT NULL``: ACCESS EXCLUSIVE, but no scan: the valid CHECK proves it (PG 12+).
    4. ``DROP CONSTRAINT`` the now redundant CHECK: ACCESS EXCLUSIVE, catalog only.
    Each in its own transaction. A plain ``SET NOT NULL`` scans the table under ACCESS
    EXCLUSIVE: every read and write waits for the scan.
    """

    table: str
    column: str

    @property
    def check_name(self) -> str:
        return f"{self.table}_{self.column}_not_null"[:63]

    def forwards(self) -> list[list[Statement]]:
        t, c, k = ident(self.table), ident(self.column), self.check_name
        return [
            [
                Statement(f"{OWN_CONSTRAINT}ALTER TABLE {t} DROP CONSTRAINT IF EXISTS {k}"),
                Statement(f"ALTER TABLE {t} ADD CONSTRAINT {k} CHECK ({c} IS NOT NULL) NOT VALID"),
            ],
            [Statement(f"ALTER TABLE {t} VALIDATE CONSTRAINT {k}")],
            [
                Statement(f"ALTER TABLE {t} ALTER COLUMN {c} SET NOT NULL"),
                Statement(f"{OWN_CONSTRAINT}ALTER TABLE {t} DROP CONSTRAINT {k}"),
            ],
        ]

    def backwards(self) -> list[list[Statement]]:
        return [
            [
                Statement(
                    f"ALTER TABLE {ident(self.table)} ALTER COLUMN {ident(self.column)} DROP NOT NULL"
                )
            ]
        ]


@dataclass(frozen=True)
class AddConstraint(Step):
    """Add a foreign key or CHECK constraint without a long lock.

    1. ``ADD CONSTRAINT … NOT VALID``: brief lock (ACCESS EXCLUSIVE for CHECK; SHARE ROW
       EXCLUSIVE on both tables for a foreign key); new writes are checked from now on.
    2. ``VALIDATE CONSTRAINT`` in its own transaction: SHARE UPDATE EXCLUSIVE on the table
       (ROW SHARE on the referenced one) while it scans: reads and writes go on.
    """

    table: str
    name: str
    #: e.g. ``"CHECK (estimate >= 0)"`` or ``"FOREIGN KEY (a, b) REFERENCES t (a, b) ON DELETE …"``
    definition: str

    def forwards(self) -> list[list[Statement]]:
        t, n = ident(self.table), ident(self.name)
        return [
            [
                Statement(f"{OWN_CONSTRAINT}ALTER TABLE {t} DROP CONSTRAINT IF EXISTS {n}"),
                Statement(f"ALTER TABLE {t} ADD CONSTRAINT {n} {self.definition} NOT VALID"),
            ],
            [Statement(f"ALTER TABLE {t} VALIDATE CONSTRAINT {n}")],
        ]

    def backwards(self) -> list[list[Statement]]:
        return [
            [
                Statement(
                    f"ALTER TABLE {ident(self.table)} DROP CONSTRAINT IF EXISTS {ident(self.name)}"
                )
            ]
        ]


@dataclass(frozen=True)
class CreateIndex(Step):
    """Build an index without blocking writes.

    ``CREATE INDEX CONCURRENTLY``: SHARE UPDATE EXCLUSIVE for the whole build (reads and
    writes go on; only other schema changes wait); it waits for transactions older than it
    to end. Not inside a transaction, so its migration is non-transactional. A build that
    failed earlier leaves an INVALID index: it is dropped (concurrently) before retrying.
    A plain CREATE INDEX holds SHARE for the build: every write waits.
    """

    name: str
    table: str
    #: What follows ``ON table``, e.g. ``"(organization_id, estimate)"`` or ``"USING gin (…)"``.
    definition: str
    unique: bool = False

    def forwards(self) -> list[list[Statement]]:
        unique = "UNIQUE " if self.unique else ""
        return [
            [
                Statement(
                    f"CREATE {unique}INDEX CONCURRENTLY IF NOT EXISTS {ident(self.name)} ON {ident(self.table)} {self.definition}",
                    transactional=False,
                )
            ]
        ]

    def backwards(self) -> list[list[Statement]]:
        return [
            [
                Statement(
                    f"DROP INDEX CONCURRENTLY IF EXISTS {ident(self.name)}", transactional=False
                )
            ]
        ]

    async def check(self, connection: asyncpg.Connection) -> None:
        valid = await connection.fetchval(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)", self.name
        )
        if valid is False:
            await run_ddl(connection, f"DROP INDEX CONCURRENTLY IF EXISTS {ident(self.name)}")


@dataclass(frozen=True)
class DropIndex(Step):
    """Drop an index without blocking: ``DROP INDEX CONCURRENTLY`` (waits for queries using
    it, blocks nobody). Backwards rebuilds it concurrently from ``recreate``."""

    name: str
    recreate: CreateIndex

    def forwards(self) -> list[list[Statement]]:
        return self.recreate.backwards()

    def backwards(self) -> list[list[Statement]]:
        return self.recreate.forwards()


@dataclass(frozen=True)
class AddUniqueConstraint(Step):
    """A UNIQUE constraint from an index built concurrently.

    1. ``CREATE UNIQUE INDEX CONCURRENTLY`` (see CreateIndex).
    2. ``ADD CONSTRAINT … UNIQUE USING INDEX``: ACCESS EXCLUSIVE, catalog only.
    """

    table: str
    name: str
    columns: tuple[str, ...]

    def _index(self) -> CreateIndex:
        return CreateIndex(
            self.name,
            self.table,
            "(" + ", ".join(ident(c) for c in self.columns) + ")",
            unique=True,
        )

    def forwards(self) -> list[list[Statement]]:
        return [
            *self._index().forwards(),
            [
                Statement(
                    f"ALTER TABLE {ident(self.table)} ADD CONSTRAINT {ident(self.name)} UNIQUE USING INDEX {ident(self.name)}"
                )
            ],
        ]

    def backwards(self) -> list[list[Statement]]:
        return [
            [
                Statement(
                    f"ALTER TABLE {ident(self.table)} DROP CONSTRAINT IF EXISTS {ident(self.name)}"
                )
            ]
        ]

    async def check(self, connection: asyncpg.Connection) -> None:
        await self._index().check(connection)


@dataclass(frozen=True)
class RunBackfill(Step):
    """A batched backfill (see ``db.migrate.backfill.Backfill``); backwards does nothing
    (the column it filled is dropped by its own step's backwards)."""

    backfill: Backfill

    def forwards(self) -> list[list[Statement]]:
        b = self.backfill
        return [
            [
                Statement(
                    f"-- in committed batches of {b.batch_size}, keyset on ({', '.join(b.key)}):\n"
                    f"UPDATE {b.table} SET {b.assignments} WHERE {b.pending}",
                    transactional=False,
                )
            ]
        ]

    def backwards(self) -> list[list[Statement]]:
        return []

    async def run(
        self, connection: asyncpg.Connection, policy: LockPolicy, backwards: bool = False
    ) -> None:
        if not backwards:
            await self.backfill.run(connection, policy)


@dataclass(frozen=True)
class ExpandColumn(Step):
    """Expand: a new column that shadows an old one, for a rename or a type change.

    Adds ``new`` (nullable), and a trigger that keeps both in sync while old and new
    application versions run side by side: a write to either is copied to the other.
    ``to_new`` and ``to_old`` are SQL templates over ``{row}`` (e.g. ``"{row}.n::bigint"``);
    identity by default (a rename). Then backfills ``new`` from ``old`` in batches and
    verifies, NULL-safely (IS DISTINCT FROM), that every row agrees.
    Locks: brief ACCESS EXCLUSIVE for the column and the trigger; the backfill's row locks.
    Contract (ContractColumn) drops ``old`` in a LATER migration, after every reader moved.
    """

    table: str
    old: str
    new: str
    new_type: str
    to_new: str = ""
    to_old: str = ""
    key: tuple[str, ...] = ("id",)
    batch_size: int = 5000
    pause: float = 0.0

    @property
    def function(self) -> str:
        return f"{self.table}_sync_{self.old}_{self.new}"[:63]

    def convert(self, row: str, to: str) -> str:
        if to == "new":
            return (self.to_new or "{row}." + ident(self.old)).format(row=row)
        return (self.to_old or "{row}." + ident(self.new)).format(row=row)

    def fill(self, column: str, name: str) -> Backfill:
        """Backfill ``column`` (``"new"`` or ``"old"``) from the other one."""
        target = ident(self.new if column == "new" else self.old)
        source = self.convert("t", column)
        return Backfill(
            name=f"{name}_{self.table}_{target}"[:63],
            table=self.table,
            assignments=f"{target} = {source}",
            pending=f"t.{target} IS DISTINCT FROM {source}",
            key=self.key,
            batch_size=self.batch_size,
            pause=self.pause,
        )

    def sync_trigger(self) -> list[Statement]:
        t, old, new, fn = ident(self.table), ident(self.old), ident(self.new), ident(self.function)
        to_new, to_old = self.convert("NEW", "new"), self.convert("NEW", "old")
        return [
            Statement(f"""CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.{new} IS NULL THEN NEW.{new} := {to_new}; ELSIF NEW.{old} IS NULL THEN NEW.{old} := {to_old}; END IF;
    ELSIF NEW.{old} IS DISTINCT FROM OLD.{old} THEN
        NEW.{new} := {to_new};
    ELSIF NEW.{new} IS DISTINCT FROM OLD.{new} THEN
        NEW.{old} := {to_old};
    END IF;
    RETURN NEW;
END $$"""),
            Statement(f"DROP TRIGGER IF EXISTS {fn} ON {t}"),
            Statement(
                f"CREATE TRIGGER {fn} BEFORE INSERT OR UPDATE ON {t} FOR EACH ROW EXECUTE FUNCTION {fn}()"
            ),
        ]

    def forwards(self) -> list[list[Statement]]:
        return [
            [
                Statement(
                    f"ALTER TABLE {ident(self.table)} ADD COLUMN IF NOT EXISTS {ident(self.new)} {self.new_type}"
                )
            ],
            self.sync_trigger(),
            *RunBackfill(self.fill("new", "expand")).forwards(),
        ]

    def backwards(self) -> list[list[Statement]]:
        t, fn = ident(self.table), ident(self.function)
        return [
            [
                Statement(f"DROP TRIGGER IF EXISTS {fn} ON {t}"),
                Statement(f"DROP FUNCTION IF EXISTS {fn}()"),
                Statement(f"ALTER TABLE {t} DROP COLUMN IF EXISTS {ident(self.new)}"),
            ]
        ]

    async def run(
        self, connection: asyncpg.Connection, policy: LockPolicy, backwards: bool = False
    ) -> None:
        if backwards:
            for group in self.backwards():
                await run_group(connection, group, policy)
            return
        for group in self.forwards()[:2]:
            await run_group(connection, group, policy)
        await self.fill("new", "expand").run(connection, policy)
        await verify_in_sync(connection, self.fill("new", "expand"))


async def verify_in_sync(connection: asyncpg.Connection, backfill: Backfill) -> None:
    """Every row agrees (NULL-safe); else the expand is not complete and must not go on."""
    async with connection.transaction():
        if backfill.role:
            await connection.execute(f'SET LOCAL ROLE "{backfill.role}"')
        differing = await connection.fetchval(
            f"SELECT count(*) FROM {ident(backfill.table)} AS t WHERE {backfill.pending}"
        )
    if differing:
        raise UnsafeChange(f"{differing} rows of {backfill.table} still differ: {backfill.pending}")


@dataclass(frozen=True)
class ContractColumn(Step):
    """Contract: drop the old column and the sync trigger, once no code uses the old column.

    Lock: ACCESS EXCLUSIVE, catalog only (DROP COLUMN does not rewrite the table). Ship it
    in a migration AFTER the deploy that stopped reading and writing ``old``. Backwards
    re-adds ``old`` (as ``old_type``), restores the sync trigger and backfills ``old`` from
    ``new``: rolling back returns to the expanded state, both columns in sync.
    """

    expand: ExpandColumn
    old_type: str

    def forwards(self) -> list[list[Statement]]:
        e = self.expand
        t, fn = ident(e.table), ident(e.function)
        return [
            [
                Statement(f"DROP TRIGGER IF EXISTS {fn} ON {t}"),
                Statement(f"DROP FUNCTION IF EXISTS {fn}()"),
                Statement(f"ALTER TABLE {t} DROP COLUMN IF EXISTS {ident(e.old)}"),
            ]
        ]

    def backwards(self) -> list[list[Statement]]:
        e = self.expand
        return [
            [
                Statement(
                    f"ALTER TABLE {ident(e.table)} ADD COLUMN IF NOT EXISTS {ident(e.old)} {self.old_type}"
                )
            ],
            e.sync_trigger(),
            *RunBackfill(e.fill("old", "restore")).forwards(),
        ]

    async def run(
        self, connection: asyncpg.Connection, policy: LockPolicy, backwards: bool = False
    ) -> None:
        if not backwards:
            for group in self.forwards():
                await run_group(connection, group, policy)
            return
        for group in self.backwards()[:2]:
            await run_group(connection, group, policy)
        restore = self.expand.fill("old", "restore")
        await restore.run(connection, policy)
        await verify_in_sync(connection, restore)


Connect = Callable[[], Awaitable[asyncpg.Connection]]


async def _owner_connection() -> asyncpg.Connection:
    from db.engine import DB

    return await DB.get_new_connection()


@dataclass
class ToolkitMigration:
    """The steps of a migration and how to run them (on a connection of the owner role)."""

    steps: Sequence[Step]
    policy: LockPolicy = field(default_factory=lambda: DEFAULT_POLICY)
    connect: Connect = _owner_connection

    async def run(self, backwards: bool = False) -> None:
        connection = await self.connect()
        try:
            for step in reversed(self.steps) if backwards else self.steps:
                await step.run(connection, self.policy, backwards=backwards)
        finally:
            await connection.close()


def toolkit_migration(
    migration_id: str,
    description: str,
    steps: Sequence[Step],
    policy: LockPolicy = DEFAULT_POLICY,
    connect: Connect = _owner_connection,
) -> ReviewedMigrationManager:
    """A non-transactional Piccolo migration running ``steps`` (each step manages its own
    short transactions: CONCURRENTLY and batched backfills cannot run inside one)."""
    manager = ReviewedMigrationManager(
        migration_id=migration_id,
        app_name="taskql",
        description=description,
        wrap_in_transaction=False,
    )
    plan = ToolkitMigration(steps, policy, connect)

    async def run_forwards() -> None:
        await plan.run()

    async def run_backwards() -> None:
        await plan.run(backwards=True)

    manager.add_raw(run_forwards)
    manager.add_raw_backwards(run_backwards)
    return manager
