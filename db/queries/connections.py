"""Keyset-paginated children of many parents in one statement (a DataLoader's batch).

``unnest`` the parents' ids and take each one's page with a LATERAL sub-query: one index
range scan per parent, ``LIMIT size + 1`` rows each (the extra row says whether there is a
next page). The statement count does not grow with the number of parents.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from uuid import UUID

import asyncpg

from db.executor import Executor
from db.sql import Page, Params

#: Adds WHERE fragments (over alias ``t``) for a connection's filter, binding its values.
Filter = Callable[[Params], list[str]]


def no_filter(params: Params) -> list[str]:
    return []


@dataclass(frozen=True)
class Source:
    """Where a connection's rows come from."""

    #: Table name (a constant).
    table: str
    #: The column holding the parent's id.
    parent_column: str


async def page_by_parent(
    executor: Executor,
    source: Source,
    organization_id: UUID | None,
    parent_ids: Sequence[UUID],
    page: Page,
    where: Filter = no_filter,
) -> dict[UUID, list[asyncpg.Record]]:
    """Up to ``page.size + 1`` rows per parent, in the page's order (already flipped back
    for backward pages). ``organization_id`` scopes the query to the tenant explicitly (RLS
    does too); None only for the current user's own memberships, which span tenants."""
    params = Params()
    parents = params(list(parent_ids), "::uuid[]")
    order = page.fetch_order
    conditions = [f"t.{source.parent_column} = p.parent_id"]
    if organization_id is not None:
        conditions.insert(0, f"t.organization_id = {params(organization_id, '::uuid')}")
    conditions += where(params)
    if page.cursor is not None:
        conditions.append(order.after(params, page.cursor))
    limit = params(page.size + 1)
    sql = f"""
        SELECT p.parent_id AS _parent, ({order.key})::text AS _key, t.*
        FROM unnest({parents}) AS p(parent_id)
        CROSS JOIN LATERAL (
            SELECT t.* FROM {source.table} AS t
            WHERE {" AND ".join(conditions)}
            ORDER BY {order.order_by()}
            LIMIT {limit}
        ) AS t
        ORDER BY p.parent_id, {order.order_by()}
    """
    grouped: dict[UUID, list[asyncpg.Record]] = defaultdict(list)
    for row in await executor.fetch(sql, *params.values):
        grouped[row["_parent"]].append(row)
    if page.backwards:
        for rows in grouped.values():
            rows.reverse()
    return grouped


async def count_by_parent(
    executor: Executor,
    source: Source,
    organization_id: UUID | None,
    parent_ids: Sequence[UUID],
    where: Filter = no_filter,
) -> dict[UUID, int]:
    params = Params()
    parents = params(list(parent_ids), "::uuid[]")
    conditions = [f"t.{source.parent_column} = ANY({parents})"]
    if organization_id is not None:
        conditions.insert(0, f"t.organization_id = {params(organization_id, '::uuid')}")
    conditions += where(params)
    sql = f"""
        SELECT t.{source.parent_column} AS parent, count(*) AS total
        FROM {source.table} AS t WHERE {" AND ".join(conditions)}
        GROUP BY t.{source.parent_column}
    """
    return {row["parent"]: row["total"] for row in await executor.fetch(sql, *params.values)}
