"""Comments on tasks: written and edited by their authors, soft-deleted."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

import asyncpg

from db.executor import Executor
from db.queries.connections import Source
from db.sql import Order, Params

TASK_COMMENTS = Source(table="task_comments", parent_column="task_id")
OLDEST_FIRST = Order("t.created_at", "timestamptz")

COLUMNS = (
    "id, organization_id, task_id, author_id, content, content_history, created_at, updated_at, "
    "edited_at, deleted_at"
)


def live(params: Params) -> list[str]:
    return ["t.deleted_at IS NULL"]


async def by_ids(
    executor: Executor, organization_id: UUID | None, ids: Sequence[UUID]
) -> list[asyncpg.Record]:
    """By id, in one tenant: the statement names it (RLS would filter the same rows), so a
    sharded database routes it to that tenant's shard (docs/operations/sharding.md)."""
    return await executor.fetch(
        f"SELECT {COLUMNS} FROM task_comments WHERE organization_id = $1 AND id = ANY($2::uuid[])",
        organization_id,
        list(ids),
    )


async def add(
    executor: Executor, organization_id: UUID, task_id: UUID, author_id: UUID, content: str
) -> asyncpg.Record:
    row = await executor.fetchrow(
        "INSERT INTO task_comments (organization_id, task_id, author_id, content) "
        f"VALUES ($1, $2, $3, $4) RETURNING {COLUMNS}",
        organization_id,
        task_id,
        author_id,
        content,
    )
    assert row is not None
    return row


async def edit(executor: Executor, comment_id: UUID, content: str) -> asyncpg.Record | None:
    return await executor.fetchrow(
        f"UPDATE task_comments SET content = $2 WHERE id = $1 AND deleted_at IS NULL RETURNING {COLUMNS}",
        comment_id,
        content,
    )


async def soft_delete(executor: Executor, comment_id: UUID) -> asyncpg.Record | None:
    return await executor.fetchrow(
        "UPDATE task_comments SET deleted_at = now() WHERE id = $1 AND deleted_at IS NULL "
        f"RETURNING {COLUMNS}",
        comment_id,
    )
