"""Tasks: the tree, its pages, filters, and the writes the API offers."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from db.executor import Executor
from db.queries.connections import Source
from db.sql import Order, Params

PROJECT_TASKS = Source(table="tasks", parent_column="project_id")
SUBTASKS = Source(table="tasks", parent_column="parent_task_id")

COLUMNS = (
    "id, organization_id, project_id, parent_task_id, title, description, status, priority, "
    "assignee_id, created_by, due_date, completed_at, created_at, updated_at"
)

#: Orderings a client may choose; each has its keyset index (see the migrations).
ORDERS = {
    "CREATED_AT": Order("t.created_at", "timestamptz"),
    "UPDATED_AT": Order("t.updated_at", "timestamptz"),
    "PRIORITY": Order("t.priority", "smallint"),
    # Tasks without a due date come last ascending (first descending).
    "DUE_DATE": Order("coalesce(t.due_date, 'infinity'::timestamptz)", "timestamptz"),
}


@dataclass(frozen=True)
class TaskFilter:
    statuses: tuple[str, ...] | None = None
    assignee_id: UUID | None = None
    unassigned: bool = False
    priority_min: int | None = None
    priority_max: int | None = None
    due_before: datetime | None = None
    due_after: datetime | None = None
    root_only: bool = False
    search: str | None = None

    def __call__(self, params: Params) -> list[str]:
        conditions = []
        if self.statuses is not None:
            conditions.append(f"t.status = ANY({params(list(self.statuses), '::text[]')})")
        if self.assignee_id is not None:
            conditions.append(f"t.assignee_id = {params(self.assignee_id, '::uuid')}")
        if self.unassigned:
            conditions.append("t.assignee_id IS NULL")
        if self.priority_min is not None:
            conditions.append(f"t.priority >= {params(self.priority_min, '::smallint')}")
        if self.priority_max is not None:
            conditions.append(f"t.priority <= {params(self.priority_max, '::smallint')}")
        if self.due_before is not None:
            conditions.append(f"t.due_date < {params(self.due_before, '::timestamptz')}")
        if self.due_after is not None:
            conditions.append(f"t.due_date > {params(self.due_after, '::timestamptz')}")
        if self.root_only:
            conditions.append("t.parent_task_id IS NULL")
        if self.search:
            conditions.append(
                f"t.search_vector @@ websearch_to_tsquery('english', {params(self.search, '::text')})"
            )
        return conditions


async def by_ids(
    executor: Executor, organization_id: UUID | None, ids: Sequence[UUID]
) -> list[asyncpg.Record]:
    """By id, in one tenant: the statement names it (RLS would filter the same rows), so a
    sharded database routes it to that tenant's shard (docs/operations/sharding.md)."""
    return await executor.fetch(
        f"SELECT {COLUMNS} FROM tasks WHERE organization_id = $1 AND id = ANY($2::uuid[])",
        organization_id,
        list(ids),
    )


@dataclass(frozen=True)
class NewTask:
    id: UUID
    project_id: UUID
    title: str
    description: str | None = None
    parent_task_id: UUID | None = None
    status: str = "todo"
    priority: int = 0
    assignee_id: UUID | None = None
    due_date: datetime | None = None


async def create_many(
    executor: Executor, organization_id: UUID, created_by: UUID, tasks: Sequence[NewTask]
) -> list[asyncpg.Record]:
    """Insert tasks in ONE statement, whatever their number: one array per column, unnested
    (no bind-parameter limit; COPY FROM is not allowed on tables with row-level security).
    Ids are chosen by the caller (UUIDv7), so tasks of one batch can be each other's parents;
    foreign keys are checked at the end of the statement. Rows come back in input order."""
    rows = await executor.fetch(
        f"""
        INSERT INTO tasks (id, organization_id, project_id, parent_task_id, title, description,
                           status, priority, assignee_id, due_date, created_by)
        SELECT n.id, $1, n.project_id, n.parent_task_id, n.title, n.description,
               n.status, n.priority, n.assignee_id, n.due_date, $2
        FROM unnest($3::uuid[], $4::uuid[], $5::uuid[], $6::text[], $7::text[], $8::text[],
                    $9::smallint[], $10::uuid[], $11::timestamptz[])
             WITH ORDINALITY AS n(id, project_id, parent_task_id, title, description, status,
                                  priority, assignee_id, due_date, position)
        ORDER BY n.position
        RETURNING {COLUMNS}
        """,
        organization_id,
        created_by,
        [t.id for t in tasks],
        [t.project_id for t in tasks],
        [t.parent_task_id for t in tasks],
        [t.title for t in tasks],
        [t.description for t in tasks],
        [t.status for t in tasks],
        [t.priority for t in tasks],
        [t.assignee_id for t in tasks],
        [t.due_date for t in tasks],
    )
    return rows


async def update(
    executor: Executor,
    task_id: UUID,
    *,
    title: str | None = None,
    description: str | None = None,
    clear_description: bool = False,
    status: str | None = None,
    priority: int | None = None,
    due_date: datetime | None = None,
    clear_due_date: bool = False,
) -> asyncpg.Record | None:
    return await executor.fetchrow(
        f"""
        UPDATE tasks SET
            title = coalesce($2, title),
            description = CASE WHEN $4 THEN NULL ELSE coalesce($3, description) END,
            status = coalesce($5, status),
            priority = coalesce($6, priority),
            due_date = CASE WHEN $8 THEN NULL ELSE coalesce($7, due_date) END
        WHERE id = $1
        RETURNING {COLUMNS}
        """,
        task_id,
        title,
        description,
        clear_description,
        status,
        priority,
        due_date,
        clear_due_date,
    )


async def move(executor: Executor, task_id: UUID, parent_id: UUID | None) -> asyncpg.Record | None:
    return await executor.fetchrow(
        f"UPDATE tasks SET parent_task_id = $2 WHERE id = $1 RETURNING {COLUMNS}",
        task_id,
        parent_id,
    )


async def assign(
    executor: Executor, task_id: UUID, assignee_id: UUID | None
) -> asyncpg.Record | None:
    return await executor.fetchrow(
        f"UPDATE tasks SET assignee_id = $2 WHERE id = $1 RETURNING {COLUMNS}", task_id, assignee_id
    )


async def delete(executor: Executor, task_id: UUID) -> bool:
    """Delete a task and (ON DELETE CASCADE) its subtree and comments."""
    return await executor.execute("DELETE FROM tasks WHERE id = $1", task_id) == "DELETE 1"


async def ancestors(
    executor: Executor, organization_id: UUID, task_ids: Sequence[UUID]
) -> list[asyncpg.Record]:
    """Each task's ancestors, nearest first, for many tasks in one recursive statement."""
    return await executor.fetch(
        f"""
        WITH RECURSIVE up (origin, id, depth) AS (
            SELECT t.id, t.parent_task_id, 1 FROM tasks AS t
            WHERE t.organization_id = $1 AND t.id = ANY($2::uuid[]) AND t.parent_task_id IS NOT NULL
            UNION ALL
            SELECT up.origin, t.parent_task_id, up.depth + 1
            FROM up JOIN tasks AS t ON t.organization_id = $1 AND t.id = up.id
            WHERE t.parent_task_id IS NOT NULL
        ) CYCLE id SET is_cycle USING path
        SELECT up.origin AS _origin, {", ".join(f"t.{c.strip()}" for c in COLUMNS.split(","))}
        FROM up JOIN tasks AS t ON t.organization_id = $1 AND t.id = up.id
        ORDER BY up.origin, up.depth
        """,
        organization_id,
        list(task_ids),
    )


def counted(where: object) -> TaskFilter | None:
    """The filter of a project tasks connection if its count can come from ``task_counts``
    (no filter, or a status filter only: its ``statuses`` say which), else None (a filter
    other than status applies: rows are counted). The one rule both read paths (compiler
    and resolvers) ask."""
    if not isinstance(where, TaskFilter):
        return None
    # Every field but the statuses at its default (derived from the filter itself, so a
    # field added to TaskFilter is never answered from the counters by mistake).
    if dataclasses.replace(where, statuses=None) != _NO_FILTER:
        return None
    return where


def project_counts(
    tenant: str, projects: str, statuses: str | None = None, by_status: bool = False
) -> str:
    """THE statement for "how many of a project's tasks" (per status if ``by_status``): a sum
    of the project's counter rows in ``task_counts`` (migration 27; a few rows per status, never
    a scan of tasks). ``tenant`` and ``projects`` are SQL expressions (a bound parameter or an
    outer column): ``projects`` follows ``c.project_id``, e.g. ``"= t.id"`` or
    ``"= ANY($2::uuid[])"``; ``statuses``, if given, a ``text[]`` expression. Read under RLS
    like the rows it counts; every member sees every task of the tenant, so it is what any
    member would count. The compiler and the resolvers' queries below both use it."""
    status = ", c.status" if by_status else ""
    kept = f" AND c.status = ANY({statuses})" if statuses is not None else ""
    return (
        f"SELECT c.project_id{status}, sum(c.total)::bigint AS total FROM task_counts AS c "
        f"WHERE c.organization_id = {tenant} AND c.project_id {projects}{kept} "
        f"GROUP BY c.project_id{status}"
    )


_NO_FILTER = TaskFilter()


async def counts_by_status(
    executor: Executor, organization_id: UUID, project_ids: Sequence[UUID]
) -> list[asyncpg.Record]:
    """Each project's task count per status (statuses without tasks may be absent)."""
    return await executor.fetch(
        project_counts("$1::uuid", "= ANY($2::uuid[])", by_status=True),
        organization_id,
        list(project_ids),
    )


async def count_by_project(
    executor: Executor,
    organization_id: UUID | None,
    project_ids: Sequence[UUID],
    statuses: tuple[str, ...] | None = None,
) -> dict[UUID, int]:
    """Each project's task count (of ``statuses`` only, if given), from the counters."""
    params = Params()
    tenant = params(organization_id, "::uuid")
    projects = f"= ANY({params(list(project_ids), '::uuid[]')})"
    kept = params(list(statuses), "::text[]") if statuses is not None else None
    rows = await executor.fetch(project_counts(tenant, projects, kept), *params.values)
    return {row["project_id"]: row["total"] for row in rows}
