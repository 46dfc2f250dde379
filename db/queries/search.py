"""Ranked search across a tenant's projects and tasks: full text, plus trigram similarity so
that a typo still finds its task. The matching runs in ``search_hits()`` (migration 8),
which the GIN indexes can serve despite row-level security; it takes the tenant from the
transaction's settings, never from its arguments."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from db.executor import Executor


async def search(
    executor: Executor,
    organization_id: UUID,
    text: str,
    size: int,
    cursor: tuple[str, UUID] | None,
) -> list[asyncpg.Record]:
    """Up to ``size + 1`` hits (kind, id, rank), best first; keyset on (rank, id).
    ``organization_id`` must be the transaction's tenant (it is what the function uses)."""
    after_rank, after_id = (float(cursor[0]), cursor[1]) if cursor is not None else (None, None)
    return await executor.fetch(
        "SELECT kind, id, rank, rank::text AS _key FROM search_hits($1, $2, $3, $4)",
        text,
        size + 1,
        after_rank,
        after_id,
    )


async def count(executor: Executor, organization_id: UUID, text: str) -> int:
    """How many projects and tasks match (the search connection's totalCount)."""
    return int(await executor.fetchval("SELECT search_count($1)", text))
