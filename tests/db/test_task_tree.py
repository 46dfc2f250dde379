"""The task tree's maximum depth, enforced by the database (migration 18), and the moves and
inserts that must still work at its edge. Issue 13: a 10,000-deep chain was accepted, and a
move's cycle check grew with the square of the depth."""

from __future__ import annotations

from uuid import UUID

import asyncpg
import pytest

from db import tables
from db.tenancy import tenant_transaction
from db.uuid7 import uuid7
from tests.seed import Tenant

LIMIT = 100  # the default of TASKQL_MAX_TASK_DEPTH, set on every pooled connection


async def chain(tenant: Tenant, length: int, under: UUID | None = None) -> list[UUID]:
    """``length`` tasks, each the child of the one before, in one statement."""
    ids = [uuid7() for _ in range(length)]
    parents = [under, *ids[:-1]]
    rows = [
        tables.Task(
            id=task_id,
            organization_id=tenant.organization_id,
            project_id=tenant.project_id,
            parent_task_id=parent,
            title="link",
            created_by=tenant.member_id,
        )
        for task_id, parent in zip(ids, parents, strict=True)
    ]
    async with tenant_transaction(tenant.context(user_id=tenant.member_id, role="member")):
        await tables.Task.insert(*rows)  # one INSERT ... VALUES, in this order
    return ids


async def move(tenant: Tenant, task: UUID, parent: UUID | None) -> None:
    async with tenant_transaction(tenant.context(user_id=tenant.member_id, role="member")) as tx:
        await tx.connection.execute(
            "UPDATE tasks SET parent_task_id = $2 WHERE id = $1", task, parent
        )


async def test_the_pool_carries_the_limit(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as connection:
        assert await connection.fetchval("SELECT app_max_task_depth()") == LIMIT


async def test_a_chain_stops_at_the_limit(tenant_a: Tenant, tenant_b: Tenant) -> None:
    links = await chain(tenant_a, LIMIT)
    with pytest.raises(asyncpg.CheckViolationError) as refused:
        await chain(tenant_a, 1, under=links[-1])
    assert refused.value.constraint_name == "tasks_max_depth"
    # One statement building a chain past the limit is refused whole.
    with pytest.raises(asyncpg.CheckViolationError):
        await chain(tenant_b, LIMIT + 1)
    async with tenant_transaction(tenant_b.context()) as tx:
        assert await tx.connection.fetchval("SELECT count(*) FROM tasks WHERE title = 'link'") == 0
    # The other tenant's tasks are not its ancestors: its own chain may be as deep.
    await chain(tenant_b, LIMIT)


async def test_a_move_counts_the_height_of_the_moved_subtree(tenant_a: Tenant) -> None:
    deep = await chain(tenant_a, LIMIT - 1)  # its tip is at depth 99
    pair = await chain(tenant_a, 2)  # a root with one child: height 2
    with pytest.raises(asyncpg.CheckViolationError) as refused:
        await move(tenant_a, pair[0], deep[-1])
    assert refused.value.constraint_name == "tasks_max_depth"
    await move(tenant_a, pair[1], deep[-1])  # the leaf alone fits: depth 100
    await move(tenant_a, pair[1], None)  # back to the root


async def test_cycles_are_still_refused_at_any_depth(tenant_a: Tenant) -> None:
    links = await chain(tenant_a, 50)
    for descendant in (links[1], links[25], links[-1]):
        with pytest.raises(asyncpg.CheckViolationError) as refused:
            await move(tenant_a, links[0], descendant)
        assert refused.value.constraint_name == "tasks_no_cycle"


async def test_a_lower_limit_set_for_a_connection_applies(
    test_database: object, tenant_a: Tenant
) -> None:
    from tests.conftest import ScratchDatabase

    assert isinstance(test_database, ScratchDatabase)
    connection = await asyncpg.connect(
        test_database.server_dsn, server_settings={"taskql.max_task_depth": "3"}
    )
    try:
        async with connection.transaction():
            await connection.execute(
                "SELECT set_config('app.organization_id', $1, true), "
                "set_config('app.user_id', $2, true), set_config('app.role', 'member', true)",
                str(tenant_a.organization_id),
                str(tenant_a.member_id),
            )
            ids = [uuid7() for _ in range(4)]
            for n, task in enumerate(ids[:3]):
                await connection.execute(
                    "INSERT INTO tasks (id, organization_id, project_id, parent_task_id, title, "
                    "created_by) VALUES ($1, $2, $3, $4, 'short', $5)",
                    task,
                    tenant_a.organization_id,
                    tenant_a.project_id,
                    ids[n - 1] if n else None,
                    tenant_a.member_id,
                )
            with pytest.raises(asyncpg.CheckViolationError):
                await connection.execute(
                    "INSERT INTO tasks (id, organization_id, project_id, parent_task_id, title, "
                    "created_by) VALUES ($1, $2, $3, $4, 'short', $5)",
                    ids[3],
                    tenant_a.organization_id,
                    tenant_a.project_id,
                    ids[2],
                    tenant_a.member_id,
                )
    finally:
        await connection.close()
