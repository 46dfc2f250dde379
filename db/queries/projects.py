"""Projects of a tenant."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

import asyncpg

from db.executor import Executor
from db.queries.connections import Source
from db.sql import Params

PROJECTS = Source(table="projects", parent_column="organization_id")

#: Columns returned for a project (never the generated search vector).
COLUMNS = "id, organization_id, name, description, status, created_by, created_at, updated_at, archived_at"


@dataclass(frozen=True)
class ProjectFilter:
    statuses: tuple[str, ...] | None = None
    include_archived: bool = False
    search: str | None = None

    def __call__(self, params: Params) -> list[str]:
        conditions = []
        if not self.include_archived:
            conditions.append("t.archived_at IS NULL")
        if self.statuses is not None:
            conditions.append(f"t.status = ANY({params(list(self.statuses), '::text[]')})")
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
        f"SELECT {COLUMNS} FROM projects WHERE organization_id = $1 AND id = ANY($2::uuid[])",
        organization_id,
        list(ids),
    )


async def create(
    executor: Executor,
    organization_id: UUID,
    name: str,
    description: str | None,
    status: str,
    created_by: UUID,
) -> asyncpg.Record:
    row = await executor.fetchrow(
        "INSERT INTO projects (organization_id, name, description, status, created_by) "
        f"VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}",
        organization_id,
        name,
        description,
        status,
        created_by,
    )
    assert row is not None
    return row


async def update(
    executor: Executor,
    project_id: UUID,
    name: str | None,
    description: str | None,
    clear_description: bool,
    status: str | None,
) -> asyncpg.Record | None:
    return await executor.fetchrow(
        "UPDATE projects SET name = coalesce($2, name), "
        "description = CASE WHEN $4 THEN NULL ELSE coalesce($3, description) END, "
        f"status = coalesce($5, status) WHERE id = $1 RETURNING {COLUMNS}",
        project_id,
        name,
        description,
        clear_description,
        status,
    )


async def set_archived(
    executor: Executor, project_id: UUID, archived: bool
) -> asyncpg.Record | None:
    return await executor.fetchrow(
        "UPDATE projects SET archived_at = CASE WHEN $2 THEN coalesce(archived_at, now()) END "
        f"WHERE id = $1 RETURNING {COLUMNS}",
        project_id,
        archived,
    )
