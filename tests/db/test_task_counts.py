"""Maintained task counts (migration 27): ``task_counts`` always equals ``count(*)`` of tasks
grouped by project and status, whatever the writes, their concurrency and their outcome;
the server role reads its own tenant's counters and cannot write any; the count statements
read no row of tasks."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from db.queries import tasks
from db.tenancy import SET_CONTEXT_SQL, TenantContext, request_transaction
from db.uuid7 import uuid7
from tests.conftest import ScratchDatabase
from tests.db.test_migrations import fresh_pool as fresh_pool
from tests.db.test_migrations import ok, taskql
from tests.seed import Tenant

STATUSES = ("todo", "in_progress", "blocked", "done", "cancelled")

Counts = dict[tuple[UUID, str], int]


async def counted(maintenance: asyncpg.Connection, orgs: list[UUID]) -> tuple[Counts, Counts]:
    """(the counters' sums, count(*) of tasks), per (project, status), non-zero only."""
    kept = await maintenance.fetch(
        "SELECT project_id, status, sum(total) AS n FROM task_counts "
        "WHERE organization_id = ANY($1::uuid[]) GROUP BY project_id, status HAVING sum(total) <> 0",
        orgs,
    )
    truth = await maintenance.fetch(
        "SELECT project_id, status, count(*) AS n FROM tasks "
        "WHERE organization_id = ANY($1::uuid[]) GROUP BY project_id, status",
        orgs,
    )
    return (
        {(r["project_id"], r["status"]): r["n"] for r in kept},
        {(r["project_id"], r["status"]): r["n"] for r in truth},
    )


async def assert_exact(maintenance: asyncpg.Connection, orgs: list[UUID]) -> None:
    kept, truth = await counted(maintenance, orgs)
    assert kept == truth


async def second_project(tenant: Tenant) -> UUID:
    project_id = uuid7()
    async with request_transaction(tenant.context()) as (_, executor):
        await executor.execute(
            "INSERT INTO projects (id, organization_id, name) VALUES ($1, $2, 'second')",
            project_id,
            tenant.organization_id,
        )
    return project_id


class Rollback(Exception):
    """Raised inside a transaction to roll it back."""


#: One write: (kind, tenant index, project index, a task pick, statuses).
Step = tuple[str, int, int, int, tuple[str, ...]]

steps = st.tuples(
    st.sampled_from(["create", "create_many", "status", "move", "delete", "pair"]),
    st.integers(0, 1),
    st.integers(0, 1),
    st.integers(0, 1000),
    st.lists(st.sampled_from(STATUSES), min_size=1, max_size=4).map(tuple),
)


async def run_step(
    step: Step, tenants: list[Tenant], projects: list[list[UUID]], maintenance: asyncpg.Connection
) -> None:
    """One write as the server role in the tenant's transaction, with the statements the
    mutations send (db/queries/tasks.py); "pair" is two writes in one transaction (a
    document with two mutations)."""
    kind, t, p, pick, statuses = step
    tenant = tenants[t]
    ids = [
        r["id"]
        for r in await maintenance.fetch(
            "SELECT id FROM tasks WHERE organization_id = $1 ORDER BY id", tenant.organization_id
        )
    ]
    task = ids[pick % len(ids)] if ids else None
    async with request_transaction(tenant.context()) as (_, executor):
        if kind in ("create", "create_many", "pair") or task is None:
            # createTask, or createTasks whose second task is the first one's subtask.
            count = 1 if kind == "create" else len(statuses)
            new = [uuid7() for _ in range(count)]
            await tasks.create_many(
                executor,
                tenant.organization_id,
                tenant.owner_id,
                [
                    tasks.NewTask(
                        id=new[i],
                        project_id=projects[t][p],
                        title=f"t{i}",
                        parent_task_id=new[0] if i == 1 else None,
                        status=statuses[i % len(statuses)],
                    )
                    for i in range(count)
                ],
            )
            if kind == "pair" and task is not None:
                await tasks.update(executor, task, status=statuses[-1])
        elif kind == "status":
            await tasks.update(executor, task, status=statuses[0])
        elif kind == "move":
            # To the tenant's other project, with its subtree (it becomes a root there).
            await executor.execute(
                "WITH RECURSIVE sub (id) AS (SELECT $1::uuid UNION ALL "
                "SELECT t.id FROM tasks t JOIN sub ON t.parent_task_id = sub.id) "
                "UPDATE tasks SET project_id = CASE WHEN project_id = $2 THEN $3 ELSE $2 END, "
                "parent_task_id = CASE WHEN id = $1 THEN NULL ELSE parent_task_id END "
                "WHERE id IN (SELECT id FROM sub)",
                task,
                projects[t][0],
                projects[t][1],
            )
        else:
            await tasks.delete(executor, task)


@pytest.fixture
async def two_tenants(tenant_a: Tenant, tenant_b: Tenant) -> tuple[list[Tenant], list[list[UUID]]]:
    tenants = [tenant_a, tenant_b]
    return tenants, [[t.project_id, await second_project(t)] for t in tenants]


@settings(
    max_examples=30,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sequence=st.lists(st.tuples(steps, st.booleans()), min_size=1, max_size=6))
async def test_the_counters_equal_count_star_after_every_write(
    two_tenants: tuple[list[Tenant], list[list[UUID]]],
    maintenance: asyncpg.Connection,
    sequence: list[tuple[Step, bool]],
) -> None:
    """Random createTask / createTasks / status changes / moves to the other project /
    deletes (with their cascades) of two tenants, some rolled back: after each one, every
    counter equals count(*)."""
    tenants, projects = two_tenants
    orgs = [t.organization_id for t in tenants]
    for step, rolled_back in sequence:
        if rolled_back:
            before = await counted(maintenance, orgs)
            with pytest.raises(Rollback):
                async with asyncio.timeout(30):
                    await _rolled_back(step, tenants, projects, maintenance)
            assert await counted(maintenance, orgs) == before
        else:
            await run_step(step, tenants, projects, maintenance)
        await assert_exact(maintenance, orgs)


async def _rolled_back(
    step: Step, tenants: list[Tenant], projects: list[list[UUID]], maintenance: asyncpg.Connection
) -> None:
    # Writes like the step's, then a failure inside the same transaction.
    _, t, p, _, statuses = step
    tenant = tenants[t]
    async with request_transaction(tenant.context()) as (_, executor):
        await tasks.create_many(
            executor,
            tenant.organization_id,
            tenant.owner_id,
            [
                tasks.NewTask(id=uuid7(), project_id=projects[t][p], title="x", status=s)
                for s in statuses
            ],
        )
        await executor.execute(
            "UPDATE tasks SET status = $1 WHERE organization_id = $2",
            statuses[0],
            tenant.organization_id,
        )
        raise Rollback


async def test_deleting_a_project_or_a_subtree_keeps_the_counters_exact(
    two_tenants: tuple[list[Tenant], list[list[UUID]]], maintenance: asyncpg.Connection
) -> None:
    (a, b), _ = two_tenants
    async with request_transaction(a.context()) as (_, executor):
        await tasks.delete(executor, a.root_task_id)  # cascades to its child
    await assert_exact(maintenance, [a.organization_id, b.organization_id])
    async with request_transaction(b.context()) as (_, executor):
        await executor.execute("DELETE FROM projects WHERE id = $1", b.project_id)
    await assert_exact(maintenance, [a.organization_id, b.organization_id])
    # The deleted project's counters went with it.
    assert not await maintenance.fetchval(
        "SELECT count(*) FROM task_counts WHERE project_id = $1", b.project_id
    )


async def _writer(dsn: str, context: TenantContext, project: UUID, rounds: int, seed: int) -> int:
    """Transactions of one connection in one project: inserts, status changes and deletes of
    its own tasks, some of two statements. Returns how many deadlocks it met."""
    rng = random.Random(seed)
    connection = await asyncpg.connect(dsn)
    own: list[UUID] = []
    deadlocks = 0
    try:
        for _ in range(rounds):
            try:
                async with connection.transaction():
                    await connection.execute(SET_CONTEXT_SQL, *context.parameters())
                    for _ in range(rng.choice((1, 2))):
                        action = rng.choice(("insert", "insert", "status", "delete"))
                        if action == "insert" or not own:
                            new = uuid7()
                            await connection.execute(
                                "INSERT INTO tasks (id, organization_id, project_id, title, status) "
                                "VALUES ($1, $2, $3, 'c', $4)",
                                new,
                                context.organization_id,
                                project,
                                rng.choice(STATUSES),
                            )
                            own.append(new)
                        elif action == "status":
                            await connection.execute(
                                "UPDATE tasks SET status = $2 WHERE id = $1",
                                rng.choice(own),
                                rng.choice(STATUSES),
                            )
                        else:
                            await connection.execute("DELETE FROM tasks WHERE id = $1", own.pop())
            except asyncpg.DeadlockDetectedError:
                deadlocks += 1
    finally:
        await connection.close()
    return deadlocks


async def test_concurrent_writers_in_one_project_commit_without_deadlock_and_exact_counts(
    two_tenants: tuple[list[Tenant], list[list[UUID]]],
    maintenance: asyncpg.Connection,
    test_database: ScratchDatabase,
) -> None:
    (a, b), _ = two_tenants
    writers = [
        _writer(test_database.server_dsn, a.context(), a.project_id, 40, seed) for seed in range(10)
    ] + [
        _writer(test_database.server_dsn, b.context(), b.project_id, 40, 100 + s) for s in range(2)
    ]
    deadlocks = await asyncio.gather(*writers)
    assert deadlocks == [0] * len(writers)
    await assert_exact(maintenance, [a.organization_id, b.organization_id])
    # More than one slot of a counter was used: the writers did not all queue on one row.
    slots = await maintenance.fetchval(
        "SELECT max(n) FROM (SELECT count(*) AS n FROM task_counts WHERE project_id = $1 "
        "GROUP BY status) AS s",
        a.project_id,
    )
    assert slots > 1


async def test_the_server_role_reads_only_its_tenants_counters_and_writes_none(
    two_tenants: tuple[list[Tenant], list[list[UUID]]],
) -> None:
    (a, b), _ = two_tenants
    for tenant, other in ((a, b), (b, a)):
        async with request_transaction(tenant.context(role="viewer")) as (tx, _):
            seen = await tx.connection.fetch("SELECT DISTINCT organization_id FROM task_counts")
            assert {r["organization_id"] for r in seen} == {tenant.organization_id}
            assert not await tx.connection.fetchval(
                "SELECT count(*) FROM task_counts WHERE project_id = $1", other.project_id
            )
    writes = [
        "INSERT INTO task_counts (organization_id, project_id, status, slot, total) "
        "VALUES ($1, $2, 'todo', 0, 1000)",
        "UPDATE task_counts SET total = total + 1000 WHERE organization_id = $1 AND project_id = $2",
        "DELETE FROM task_counts WHERE organization_id = $1 AND project_id = $2",
    ]
    for sql in writes:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with request_transaction(a.context()) as (tx, _):
                await tx.connection.execute(sql, a.organization_id, a.project_id)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with request_transaction(a.context()) as (tx, _):
            await tx.connection.execute("TRUNCATE task_counts")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with request_transaction(a.context()) as (tx, _):
            await tx.connection.execute("SELECT task_counts_recompute()")


async def uncounted_tasks(owner: asyncpg.Connection, tenant: Tenant, count: int) -> None:
    """``count`` tasks the counters never saw (as if written before migration 27, or by the
    bulk seed): the insert trigger off while they are written, through the API's query."""
    await owner.execute("ALTER TABLE tasks DISABLE TRIGGER tasks_counts_insert")
    try:
        async with request_transaction(tenant.context()) as (_, executor):
            await tasks.create_many(
                executor,
                tenant.organization_id,
                tenant.owner_id,
                [
                    tasks.NewTask(id=uuid7(), project_id=tenant.project_id, title="uncounted")
                    for _ in range(count)
                ],
            )
    finally:
        await owner.execute("ALTER TABLE tasks ENABLE TRIGGER tasks_counts_insert")


async def test_recompute_is_exact_with_concurrent_writers_and_after_a_load_without_triggers(
    two_tenants: tuple[list[Tenant], list[list[UUID]]],
    maintenance: asyncpg.Connection,
    test_database: ScratchDatabase,
) -> None:
    """The migration's fill: corrections added while writers run, and the bulk seed's case
    (tasks written with the counting triggers off)."""
    (a, b), _ = two_tenants
    orgs = [a.organization_id, b.organization_id]
    owner = await asyncpg.connect(test_database.owner_dsn)
    try:
        # Tasks the counters never saw (as if written before migration 27, or by the seed).
        await uncounted_tasks(owner, a, 50)
        kept, truth = await counted(maintenance, orgs)
        assert kept != truth
        stop = asyncio.Event()

        async def keep_writing() -> None:
            while not stop.is_set():
                await _writer(test_database.server_dsn, a.context(), a.project_id, 5, 7)

        writing = asyncio.gather(*(keep_writing() for _ in range(3)))
        await asyncio.sleep(0.2)
        for org in orgs:
            await maintenance.fetchval("SELECT task_counts_recompute($1)", org)
        await asyncio.sleep(0.2)
        stop.set()
        await writing
        await assert_exact(maintenance, orgs)
        # Again: nothing left to correct.
        assert (
            await maintenance.fetchval("SELECT task_counts_recompute($1)", a.organization_id) == 0
        )
    finally:
        await owner.close()


def _relations(plan: object) -> set[str]:
    found: set[str] = set()
    if isinstance(plan, dict):
        if "Relation Name" in plan:
            found.add(plan["Relation Name"])
        for value in plan.values():
            found |= _relations(value)
    elif isinstance(plan, list):
        for item in plan:
            found |= _relations(item)
    return found


async def test_the_count_statements_read_task_counts_and_no_row_of_tasks(
    two_tenants: tuple[list[Tenant], list[list[UUID]]],
) -> None:
    (a, _), _ = two_tenants
    statements = [
        (tasks.project_counts("$1::uuid", "= ANY($2::uuid[])", by_status=True), ()),
        (tasks.project_counts("$1::uuid", "= ANY($2::uuid[])"), ()),
        (tasks.project_counts("$1::uuid", "= ANY($2::uuid[])", "$3::text[]"), (["todo"],)),
    ]
    async with request_transaction(a.context()) as (tx, _):
        for sql, extra in statements:
            plan = json.loads(
                await tx.connection.fetchval(
                    f"EXPLAIN (FORMAT JSON) {sql}", a.organization_id, [a.project_id], *extra
                )
            )
            assert _relations(plan) == {"task_counts"}, (sql, plan)


async def test_two_recomputes_at_once_add_the_correction_once(
    two_tenants: tuple[list[Tenant], list[list[UUID]]],
    maintenance: asyncpg.Connection,
    test_database: ScratchDatabase,
) -> None:
    (a, b), _ = two_tenants
    owner = await asyncpg.connect(test_database.owner_dsn)
    second = await asyncpg.connect(test_database.owner_dsn)
    try:
        await uncounted_tasks(owner, a, 9)
        await owner.execute("SET ROLE taskql_maintenance")
        await second.execute("SET ROLE taskql_maintenance")
        first = owner.transaction()
        await first.start()
        assert await owner.fetchval("SELECT task_counts_recompute($1)", a.organization_id) > 0
        # The second waits for the first to commit, then finds nothing left to correct.
        waiting = asyncio.create_task(
            second.fetchval("SELECT task_counts_recompute($1)", a.organization_id)
        )
        await asyncio.sleep(0.3)
        assert not waiting.done()
        await first.commit()
        assert await waiting == 0
        await assert_exact(maintenance, [a.organization_id, b.organization_id])
        with pytest.raises(asyncpg.RaiseError, match="READ COMMITTED"):
            async with second.transaction(isolation="repeatable_read"):
                await second.fetchval("SELECT task_counts_recompute()")
    finally:
        await owner.close()
        await second.close()


async def test_migration_27_fills_the_counters_of_a_populated_database(
    two_tenants: tuple[list[Tenant], list[list[UUID]]],
    test_database: ScratchDatabase,
    fresh_pool: asyncpg.Pool,
) -> None:
    """Reversed and applied again on a database with tasks: its second step (the fill, per
    organization) leaves every counter exact."""
    (a, b), _ = two_tenants
    ok(taskql(test_database, "migrate", "backwards", "--to", MIGRATION_27, "--yes"))
    owner = await asyncpg.connect(test_database.owner_dsn)
    try:
        assert await owner.fetchval("SELECT to_regclass('task_counts')") is None
    finally:
        await owner.close()
    ok(taskql(test_database, "migrate", "forwards"))
    checker = await asyncpg.connect(test_database.owner_dsn)
    try:
        await checker.execute("SET ROLE taskql_maintenance")
        kept, truth = await counted(checker, [a.organization_id, b.organization_id])
        assert truth
        assert kept == truth
        # Every tenant of the database, not only these two.
        assert await checker.fetchval(FULL_CHECK) == 0
    finally:
        await checker.close()


MIGRATION_27 = "2026-11-24T09:00:27:000000"
FULL_CHECK = """
SELECT count(*) FROM (SELECT project_id, status, count(*) AS n FROM tasks GROUP BY 1, 2) AS t
FULL JOIN (SELECT project_id, status, sum(total) AS n FROM task_counts GROUP BY 1, 2
           HAVING sum(total) <> 0) AS k USING (project_id, status)
WHERE t.n IS DISTINCT FROM k.n
"""


def test_only_a_status_filter_is_counted_from_the_counters() -> None:
    """Every other field of TaskFilter, set alone, sends the count back to the rows (a field
    added later included: the rule reads the dataclass, not a list of names)."""
    samples: dict[type, Any] = {
        bool: True,
        int: 3,
        str: "x",
        UUID: uuid7(),
        datetime: datetime.now(UTC),
    }
    for field in dataclasses.fields(tasks.TaskFilter):
        if field.name == "statuses":
            continue
        kind = next(k for k in samples if k.__name__ in str(field.type))
        assert tasks.counted(tasks.TaskFilter(**{field.name: samples[kind]})) is None, field
    assert tasks.counted(tasks.TaskFilter()) == tasks.TaskFilter()
    only_done = tasks.TaskFilter(statuses=("done",))
    assert tasks.counted(only_done) == only_done
    assert tasks.counted("no filter object") is None
