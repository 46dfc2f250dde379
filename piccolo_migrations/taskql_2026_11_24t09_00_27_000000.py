"""Maintained task counts: ``task_counts``, so a project's ``totalCount`` and
``taskCountsByStatus`` read a few counter rows instead of scanning its tasks (issue 17).

**The table.** One row per (project, status, slot), at most 16 slots: ``total`` is that
slot's share of the project's tasks in that status; a count is the sum over the slots. A
counter row stays locked until its writer commits, so writers in one project spread over
the slots: ``task_counts_add()`` adds to the first slot no other transaction holds, from
the connection's own slot (``pg_backend_pid() % 16``) on, with ``FOR UPDATE SKIP LOCKED``
(never waits); if every existing slot is held it opens a new one; only when all 16 exist and
are held does it wait (for its own slot). So writers queue only beyond 16 concurrent
transactions on one counter, and two transactions can deadlock on counters only then (or
when two of them create the same new slot at once). A slot's total may be negative (a slot
that only saw deletes); only the sum means anything. Primary key ``(organization_id,
project_id, status, slot)``, led by the tenant like every tenant key;
``(organization_id, project_id) → projects`` ON DELETE CASCADE.

**Who writes.** Statement-level triggers on ``tasks`` with transition tables (insert,
delete, update): the statement's changes summed per (project, status), one
``task_counts_add()`` per changed counter, in key order, so ``createTasks`` of 1,000 tasks
adds to each counter once, and an update that changes neither status nor project writes
nothing (its deltas cancel; the trigger cannot be ``UPDATE OF status, project_id``, as
PostgreSQL refuses transition tables on a trigger with a column list). ``task_counts_apply()`` and ``task_counts_add()`` are SECURITY
DEFINER and owned by ``taskql_maintenance`` (BYPASSRLS), like
``organization_members_keep_an_owner``: a task write may run while the transaction's
tenant setting names another organization or none (cascades, ``taskql tenant`` import, the
maintenance role), and RLS must not hide a counter it has to add to; it also skips counters
of a project that the same statement's cascade has just deleted (their rows went with it).
The server role has SELECT only on ``task_counts`` (RLS: the current tenant's rows), no
INSERT, UPDATE, DELETE or TRUNCATE: it cannot forge a count.

**Visibility.** Every member of a tenant sees every task of the tenant (the tasks policy is
the tenant's; the per-role policies restrict writes only), so a per-project count is what
any member would count.

**Filling an existing database without downtime, and why it is exact.** Step 1 (one short
transaction) creates the table, the functions and the triggers. ``CREATE TRIGGER`` takes
SHARE ROW EXCLUSIVE on tasks, which waits for every transaction that has written tasks to
end (under the toolkit's lock_timeout, retried), and every write after it fires the trigger.
So a task change is either in a transaction committed before step 1 (call it *old*) or has
its delta in ``task_counts``, written by the same transaction (*new*). Step 2 runs
``task_counts_recompute(org)`` per organization, each in its own committed transaction:
one statement, one snapshot S, that adds to a slot the correction
``count(*) in S - sum(total) in S`` per (project, status). S sees every old change (they
committed before step 1, which committed before S) and, for each new transaction, either
both its task changes and its deltas (committed before S) or neither (atomicity); so
``count(*) in S`` = old + new-in-S, ``sum in S`` = new-in-S, and the correction is exactly
the old changes. New transactions not in S add their deltas themselves. Nothing is counted
twice or missed, with no lock on tasks and no pause of the writers: the only locks step 2
takes are the counter rows it adds to, for one statement. The correction is additive (an
ON CONFLICT adds it to whatever the row holds by then), so running it again is harmless:
the next run finds nothing to correct. Two runs at once would each add the same correction,
so they take turns on an advisory lock, and the second's snapshot is taken after the first
has committed (it refuses to run outside READ COMMITTED, where that would not hold).
The bulk seed (db/bulk.py), which loads with the triggers disabled, calls
``task_counts_recompute()`` (every organization) after loading: the same argument with no
deltas at all.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import asyncpg
from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import UUID, BigInt, SmallInt, Text
from piccolo.columns.indexes import IndexMethod

from db.migrate.locks import LockPolicy
from db.migrate.toolkit import RawSql, Statement, Step, toolkit_migration

ID = "2026-11-24T09:00:27:000000"
VERSION = "1.38.0"
DESCRIPTION = "task_counts: per-project task counts by status, kept by statement triggers"

LINT_ALLOW = {
    "prefer-bigint-over-smallint": "task_counts.slot holds 0..15 (CHECK); it is not an id.",
}

ORG = "(SELECT NULLIF(current_setting('app.organization_id', true), '')::uuid)"
#: Slots per (project, status); a writer's slot is its backend pid modulo this.
SLOTS = 16
#: The advisory lock recomputes take turns on ("taskcn" in ASCII; the migration runners'
#: is "taskql").
RECOMPUTE_LOCK_KEY = 0x7461736B636E

#: The delta rows of one statement, ``(organization_id, project_id, status, n)``, per event
#: (the transition tables of the other events do not exist in the function, hence three).
_DELTAS = {
    "INSERT": "SELECT organization_id, project_id, status, 1 AS n FROM new_rows",
    "DELETE": "SELECT organization_id, project_id, status, -1 AS n FROM old_rows",
    "UPDATE": (
        "SELECT organization_id, project_id, status, 1 AS n FROM new_rows "
        "UNION ALL SELECT organization_id, project_id, status, -1 FROM old_rows"
    ),
}


def _apply(event: str) -> str:
    return f"""
        FOR d IN
            SELECT c.organization_id, c.project_id, c.status, sum(c.n) AS n
            FROM ({_DELTAS[event]}) AS c
            -- A project deleted by this statement's cascade took its counters with it.
            WHERE EXISTS (SELECT FROM projects AS p
                          WHERE p.organization_id = c.organization_id AND p.id = c.project_id)
            GROUP BY c.organization_id, c.project_id, c.status
            HAVING sum(c.n) <> 0
            ORDER BY c.organization_id, c.project_id, c.status
        LOOP
            PERFORM task_counts_add(d.organization_id, d.project_id, d.status, d.n);
        END LOOP;"""


_TRIGGERS = """
CREATE TRIGGER tasks_counts_insert AFTER INSERT ON tasks
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION task_counts_apply();
CREATE TRIGGER tasks_counts_update AFTER UPDATE ON tasks
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION task_counts_apply();
CREATE TRIGGER tasks_counts_delete AFTER DELETE ON tasks
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION task_counts_apply();
"""

CREATE = (
    rf"""
CREATE TABLE task_counts (
    organization_id uuid     NOT NULL,
    project_id      uuid     NOT NULL,
    status          text     NOT NULL,
    slot            smallint NOT NULL,
    total           bigint   NOT NULL,
    PRIMARY KEY (organization_id, project_id, status, slot),
    CONSTRAINT task_counts_project_fkey FOREIGN KEY (organization_id, project_id)
        REFERENCES projects (organization_id, id) ON DELETE CASCADE,
    CONSTRAINT task_counts_slot_range CHECK (slot >= 0 AND slot < {SLOTS})
);
ALTER TABLE task_counts ENABLE ROW LEVEL SECURITY;
ALTER TABLE task_counts FORCE ROW LEVEL SECURITY;
-- The tenant policy of tasks. Writes pass it too, but the server role has no privilege to
-- write; the trigger function's owner bypasses RLS.
CREATE POLICY task_counts_tenant_isolation ON task_counts
    USING (organization_id = {ORG}) WITH CHECK (organization_id = {ORG});
GRANT SELECT ON task_counts TO taskql_server;
GRANT SELECT, INSERT, UPDATE, DELETE ON task_counts TO taskql_maintenance;

-- Add n to one counter, in a slot no other transaction holds: the first unlocked one from
-- this connection's own slot on (SKIP LOCKED: never waits); if every existing slot is held,
-- a new one (the first missing from the own slot on); if all 16 exist and are held, wait for
-- the own slot. So a writer waits only when 16 others hold the same counter.
CREATE FUNCTION task_counts_add(organization uuid, project uuid, state text, n bigint)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
DECLARE
    own_slot integer := pg_backend_pid() % {SLOTS};
    chosen smallint;
    free smallint;
BEGIN
    -- Two statements, not an UPDATE joined to a locking sub-select: the join may run that
    -- sub-select again per row, and under concurrency it can then pick two slots.
    SELECT k.slot INTO chosen FROM task_counts AS k
    WHERE k.organization_id = organization AND k.project_id = project AND k.status = state
    ORDER BY (k.slot - own_slot + {SLOTS}) % {SLOTS}
    LIMIT 1 FOR UPDATE SKIP LOCKED;
    IF FOUND THEN
        UPDATE task_counts AS c SET total = c.total + n
        WHERE c.organization_id = organization AND c.project_id = project AND c.status = state
          AND c.slot = chosen;
        RETURN;
    END IF;
    SELECT g.slot INTO free
    FROM (SELECT ((own_slot + i) % {SLOTS})::smallint AS slot, i
          FROM generate_series(0, {SLOTS - 1}) AS i) AS g
    WHERE NOT EXISTS (SELECT FROM task_counts AS k
                      WHERE k.organization_id = organization AND k.project_id = project
                        AND k.status = state AND k.slot = g.slot)
    ORDER BY g.i LIMIT 1;
    INSERT INTO task_counts AS c (organization_id, project_id, status, slot, total)
    VALUES (organization, project, state, coalesce(free, own_slot::smallint), n)
    ON CONFLICT (organization_id, project_id, status, slot)
    DO UPDATE SET total = c.total + EXCLUDED.total;
END
$$;
REVOKE EXECUTE ON FUNCTION task_counts_add(uuid, uuid, text, bigint) FROM PUBLIC;

-- Per statement (transition tables): one call per changed counter, in key order.
CREATE FUNCTION task_counts_apply() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
DECLARE
    d record;
BEGIN
    IF TG_OP = 'INSERT' THEN{_apply("INSERT")}
    ELSIF TG_OP = 'DELETE' THEN{_apply("DELETE")}
    ELSE{_apply("UPDATE")}
    END IF;
    RETURN NULL;
END
$$;
REVOKE EXECUTE ON FUNCTION task_counts_apply() FROM PUBLIC;

-- Make the counters exact (of one organization, or of all with NULL): adds, per (project,
-- status), count(*) minus the counters' sum, both read in one statement's snapshot.
-- Exact with concurrent writers whose triggers fire (see the migration's docstring) and
-- after a load with the triggers disabled. Two recomputes take turns (a transaction-level
-- advisory lock), and the counting statement's snapshot is taken after the lock is granted
-- (READ COMMITTED: each statement of a volatile function has its own), so the second sees
-- the first's corrections instead of adding them again. Returns the counters corrected.
CREATE FUNCTION task_counts_recompute(organization uuid DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
DECLARE
    corrected bigint;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'task_counts_recompute() needs READ COMMITTED (a snapshot per statement)';
    END IF;
    PERFORM pg_advisory_xact_lock({RECOMPUTE_LOCK_KEY});
    WITH counted AS (
        SELECT t.organization_id, t.project_id, t.status, count(*) AS total
        FROM tasks AS t
        WHERE organization IS NULL OR t.organization_id = organization
        GROUP BY t.organization_id, t.project_id, t.status
    ), kept AS (
        SELECT k.organization_id, k.project_id, k.status, sum(k.total) AS total
        FROM task_counts AS k
        WHERE organization IS NULL OR k.organization_id = organization
        GROUP BY k.organization_id, k.project_id, k.status
    ), written AS (
        INSERT INTO task_counts AS c (organization_id, project_id, status, slot, total)
        SELECT organization_id, project_id, status, (pg_backend_pid() % {SLOTS})::smallint,
               coalesce(counted.total, 0) - coalesce(kept.total, 0)
        FROM counted FULL JOIN kept USING (organization_id, project_id, status)
        WHERE coalesce(counted.total, 0) <> coalesce(kept.total, 0)
        ORDER BY organization_id, project_id, status
        ON CONFLICT (organization_id, project_id, status, slot)
        DO UPDATE SET total = c.total + EXCLUDED.total
        RETURNING 1
    )
    SELECT count(*) INTO corrected FROM written;
    RETURN corrected;
END
$$;
REVOKE EXECUTE ON FUNCTION task_counts_recompute(uuid) FROM PUBLIC;
-- Owning a function in public needs CREATE there: granted for the change only (as in 15).
GRANT CREATE ON SCHEMA public TO taskql_maintenance;
ALTER FUNCTION task_counts_add(uuid, uuid, text, bigint) OWNER TO taskql_maintenance;
ALTER FUNCTION task_counts_apply() OWNER TO taskql_maintenance;
ALTER FUNCTION task_counts_recompute(uuid) OWNER TO taskql_maintenance;
REVOKE CREATE ON SCHEMA public FROM taskql_maintenance;
"""
    + _TRIGGERS
)

DROP = r"""
DROP TRIGGER IF EXISTS tasks_counts_delete ON tasks;
DROP TRIGGER IF EXISTS tasks_counts_update ON tasks;
DROP TRIGGER IF EXISTS tasks_counts_insert ON tasks;
DROP FUNCTION IF EXISTS task_counts_recompute(uuid);
DROP FUNCTION IF EXISTS task_counts_apply();
DROP FUNCTION IF EXISTS task_counts_add(uuid, uuid, text, bigint);
DROP TABLE IF EXISTS task_counts;
"""


@dataclass(frozen=True)
class FillCounts(Step):
    """``task_counts_recompute(org)`` for each organization, each in its own committed
    transaction, as ``taskql_maintenance`` (BYPASSRLS). Locks: ACCESS SHARE on tasks (a
    read), and the counter rows it corrects, for one statement; writers carry on."""

    def forwards(self) -> list[list[Statement]]:
        return [
            [
                Statement(
                    "-- as taskql_maintenance, one committed transaction per organization:\n"
                    "SELECT task_counts_recompute(id) FROM organizations",
                    transactional=False,
                )
            ]
        ]

    def backwards(self) -> list[list[Statement]]:
        return []

    async def run(
        self, connection: asyncpg.Connection, policy: LockPolicy, backwards: bool = False
    ) -> None:
        if backwards:
            return
        async with connection.transaction():
            await connection.execute("SET LOCAL ROLE taskql_maintenance")
            organizations = [
                r["id"] for r in await connection.fetch("SELECT id FROM organizations ORDER BY id")
            ]
        for organization in organizations:
            for attempt in range(20):
                try:
                    async with connection.transaction():
                        await connection.execute(
                            "SET LOCAL ROLE taskql_maintenance; "
                            f"SET LOCAL lock_timeout = {int(policy.lock_timeout_ms)}; "
                            f"SET LOCAL statement_timeout = {int(policy.statement_timeout_ms)}"
                        )
                        await connection.fetchval("SELECT task_counts_recompute($1)", organization)
                    break
                except (asyncpg.LockNotAvailableError, asyncpg.DeadlockDetectedError):
                    if attempt == 19:
                        raise
                    await asyncio.sleep(min(5.0, policy.base_backoff_s * 2**attempt))


STEPS = [RawSql(CREATE, DROP), FillCounts()]


async def forwards() -> MigrationManager:
    manager = toolkit_migration(ID, DESCRIPTION, STEPS)
    # Snapshot records (never run): generated by `piccolo migrations new taskql --auto`.

    manager.add_table(class_name="TaskCount", tablename="task_counts", schema=None, columns=None)

    manager.add_column(
        table_class_name="TaskCount",
        tablename="task_counts",
        column_name="organization_id",
        db_column_name="organization_id",
        column_class_name="UUID",
        column_class=UUID,
        params={
            "default": None,
            "null": False,
            "primary_key": False,
            "unique": False,
            "index": False,
            "index_method": IndexMethod.btree,
            "choices": None,
            "db_column_name": None,
            "secret": False,
        },
        schema=None,
    )

    manager.add_column(
        table_class_name="TaskCount",
        tablename="task_counts",
        column_name="project_id",
        db_column_name="project_id",
        column_class_name="UUID",
        column_class=UUID,
        params={
            "default": None,
            "null": False,
            "primary_key": True,
            "unique": False,
            "index": False,
            "index_method": IndexMethod.btree,
            "choices": None,
            "db_column_name": None,
            "secret": False,
        },
        schema=None,
    )

    manager.add_column(
        table_class_name="TaskCount",
        tablename="task_counts",
        column_name="status",
        db_column_name="status",
        column_class_name="Text",
        column_class=Text,
        params={
            "default": None,
            "null": False,
            "primary_key": False,
            "unique": False,
            "index": False,
            "index_method": IndexMethod.btree,
            "choices": None,
            "db_column_name": None,
            "secret": False,
        },
        schema=None,
    )

    manager.add_column(
        table_class_name="TaskCount",
        tablename="task_counts",
        column_name="slot",
        db_column_name="slot",
        column_class_name="SmallInt",
        column_class=SmallInt,
        params={
            "default": None,
            "null": False,
            "primary_key": False,
            "unique": False,
            "index": False,
            "index_method": IndexMethod.btree,
            "choices": None,
            "db_column_name": None,
            "secret": False,
        },
        schema=None,
    )

    manager.add_column(
        table_class_name="TaskCount",
        tablename="task_counts",
        column_name="total",
        db_column_name="total",
        column_class_name="BigInt",
        column_class=BigInt,
        params={
            "default": None,
            "null": False,
            "primary_key": False,
            "unique": False,
            "index": False,
            "index_method": IndexMethod.btree,
            "choices": None,
            "db_column_name": None,
            "secret": False,
        },
        schema=None,
    )

    return manager
