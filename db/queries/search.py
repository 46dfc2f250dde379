"""Ranked search across a tenant's projects and tasks: full text, plus trigram similarity on
task titles so that a typo still finds its task."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from db.executor import Executor
from db.sql import Params

KINDS = ("project", "task")


async def search(
    executor: Executor,
    organization_id: UUID,
    text: str,
    size: int,
    cursor: tuple[str, UUID] | None,
) -> list[asyncpg.Record]:
    """Up to ``size + 1`` hits (kind, id, rank), best first; keyset on (rank, id)."""
    params = Params()
    tenant = params(organization_id, "::uuid")
    words = params(text, "::text")
    after = ""
    if cursor is not None:
        after = f"WHERE (hit.rank, hit.id) < (({params(cursor[0], '::text')})::real, {params(cursor[1], '::uuid')})"
    limit = params(size + 1)
    sql = f"""
        WITH query AS (SELECT websearch_to_tsquery('english', {words}) AS q)
        SELECT hit.kind, hit.id, hit.rank, hit.rank::text AS _key FROM (
            SELECT 'task' AS kind, t.id,
                   greatest(ts_rank_cd(t.search_vector, query.q), similarity(t.title, {words}))::real AS rank
            FROM tasks AS t, query
            WHERE t.organization_id = {tenant} AND (t.search_vector @@ query.q OR t.title % {words})
            UNION ALL
            SELECT 'project', p.id,
                   greatest(ts_rank_cd(p.search_vector, query.q), similarity(p.name, {words}))::real
            FROM projects AS p, query
            WHERE p.organization_id = {tenant} AND (p.search_vector @@ query.q OR p.name % {words})
        ) AS hit
        {after}
        ORDER BY hit.rank DESC, hit.id DESC
        LIMIT {limit}
    """
    return await executor.fetch(sql, *params.values)


async def count(executor: Executor, organization_id: UUID, text: str) -> int:
    """How many projects and tasks match (the search connection's totalCount)."""
    return int(
        await executor.fetchval(
            """
            WITH query AS (SELECT websearch_to_tsquery('english', $2) AS q)
            SELECT (SELECT count(*) FROM tasks AS t, query
                    WHERE t.organization_id = $1 AND (t.search_vector @@ query.q OR t.title % $2))
                 + (SELECT count(*) FROM projects AS p, query
                    WHERE p.organization_id = $1 AND (p.search_vector @@ query.q OR p.name % $2))
            """,
            organization_id,
            text,
        )
    )
