"""Helpers for writing Piccolo migrations as reviewed SQL, and the zero-downtime toolkit.

Our schema needs what Piccolo's generated operations cannot express (composite foreign
keys, partitioned tables, CHECKs, triggers, row-level security), so migrations here are SQL
scripts, or lists of toolkit steps (``db.migrate.toolkit``), each with its backwards.
See docs/operations/migrations.md.
"""

from __future__ import annotations

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from db.engine import DB
from db.migrate.locks import DEFAULT_POLICY, LockPolicy, run_ddl


async def execute(sql: str, policy: LockPolicy = DEFAULT_POLICY) -> None:
    """Run a SQL script (several statements allowed) inside the running migration, under
    the policy's lock_timeout (retried on lock timeouts) and statement_timeout.

    Piccolo's ``run_ddl`` sends one prepared statement; this uses the simple query protocol
    on the migration's transaction connection, so a script runs atomically with it.
    """
    transaction = DB.current_transaction.get()
    if transaction is not None:
        await run_ddl(transaction.connection, sql, policy)
        return
    connection = await DB.get_new_connection()
    try:
        await run_ddl(connection, sql, policy)
    finally:
        await connection.close()


class ReviewedMigrationManager(MigrationManager):
    """The manager of every migration here: it runs its raw steps (reviewed SQL, toolkit
    steps) and nothing else. Its generated operations (``add_table``, ``add_column``,
    ``alter_column``...) are **records for Piccolo's auto-migration snapshot only**: Piccolo
    reads them to know what ``db/tables.py`` should look like (``piccolo migrations new
    --auto``), and they never run, forwards or backwards. The SQL is the migration; the
    records say what it did in Piccolo's terms (docs/architecture/database.md, "Piccolo's
    snapshot")."""

    async def run(self, backwards: bool = False) -> None:
        steps_only = MigrationManager(
            migration_id=self.migration_id,
            app_name=self.app_name,
            description=self.description,
            preview=self.preview,
            raw=self.raw,
            raw_backwards=self.raw_backwards,
            wrap_in_transaction=self.wrap_in_transaction,
        )
        await steps_only.run(backwards=backwards)


def snapshot_migration(migration_id: str, description: str) -> ReviewedMigrationManager:
    """A migration that runs no SQL either way: only its snapshot records (the caller adds
    them with ``add_table``/``add_column``)."""
    return ReviewedMigrationManager(
        migration_id=migration_id, app_name="taskql", description=description
    )


def sql_migration(
    migration_id: str, description: str, forwards_sql: str, backwards_sql: str
) -> ReviewedMigrationManager:
    """A migration that runs ``forwards_sql`` (or ``backwards_sql``) in one transaction.
    Snapshot records added to it describe the change for Piccolo and never run."""
    manager = ReviewedMigrationManager(
        migration_id=migration_id, app_name="taskql", description=description
    )

    async def run_forwards() -> None:
        await execute(forwards_sql)

    async def run_backwards() -> None:
        await execute(backwards_sql)

    manager.add_raw(run_forwards)
    manager.add_raw_backwards(run_backwards)
    return manager
