"""Invitations to join an organization (migration 16). Row-level security shows an
invitation to its organization's admins and owners, and to its invitee (the user signed in
with its e-mail); the queries also scope themselves."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from uuid import UUID

import asyncpg

from db.executor import Executor
from db.queries.connections import Source
from db.sql import Page, Params

#: An organization's invitations (parent: the organization).
BY_ORGANIZATION = Source(table="organization_invitations", parent_column="organization_id")
PENDING = "t.accepted_at IS NULL AND t.declined_at IS NULL AND t.revoked_at IS NULL"


def pending(params: Params) -> list[str]:
    """Connection filter: not answered nor revoked (expired ones included)."""
    return [PENDING]


async def by_ids(executor: Executor, ids: Sequence[UUID]) -> list[asyncpg.Record]:
    return await executor.fetch(
        "SELECT * FROM organization_invitations WHERE id = ANY($1::uuid[])", list(ids)
    )


async def get(executor: Executor, invitation_id: UUID) -> asyncpg.Record | None:
    return await executor.fetchrow(
        "SELECT *, expires_at <= now() AS expired FROM organization_invitations WHERE id = $1",
        invitation_id,
    )


async def for_invitee(executor: Executor, email: str, page: Page) -> list[asyncpg.Record]:
    """Up to ``page.size + 1`` pending, unexpired invitations addressed to ``email``, in
    every organization, in the page's order (flipped back for backward pages)."""
    params = Params()
    order = page.fetch_order
    conditions = [
        f"lower(t.email) = lower({params(email, '::text')})",
        PENDING,
        "t.expires_at > now()",
    ]
    if page.cursor is not None:
        conditions.append(order.after(params, page.cursor))
    sql = (
        f"SELECT ({order.key})::text AS _key, t.* FROM organization_invitations AS t "
        f"WHERE {' AND '.join(conditions)} ORDER BY {order.order_by()} "
        f"LIMIT {params(page.size + 1)}"
    )
    rows = await executor.fetch(sql, *params.values)
    return list(reversed(rows)) if page.backwards else rows


async def count_for_invitee(executor: Executor, email: str) -> int:
    total: int = await executor.fetchval(
        "SELECT count(*) FROM organization_invitations AS t "
        f"WHERE lower(t.email) = lower($1) AND {PENDING} AND t.expires_at > now()",
        email,
    )
    return total


async def member_with_email(executor: Executor, organization_id: UUID, email: str) -> bool:
    """Whether a member of the organization has this e-mail. Only the organization's own
    members are visible here (users policy): it says nothing about other accounts."""
    found: bool = await executor.fetchval(
        "SELECT EXISTS (SELECT 1 FROM organization_members m JOIN users u ON u.id = m.user_id "
        "WHERE m.organization_id = $1 AND lower(u.email) = lower($2))",
        organization_id,
        email,
    )
    return found


async def pending_for(
    executor: Executor, organization_id: UUID, email: str
) -> asyncpg.Record | None:
    """The organization's pending invitation of ``email`` (expired or not), if any."""
    return await executor.fetchrow(
        "SELECT * FROM organization_invitations AS t "
        f"WHERE t.organization_id = $1 AND lower(t.email) = lower($2) AND {PENDING} FOR UPDATE",
        organization_id,
        email,
    )


async def create(
    executor: Executor,
    organization_id: UUID,
    email: str,
    role: str,
    invited_by: UUID,
    valid_for: timedelta,
) -> asyncpg.Record:
    row = await executor.fetchrow(
        "INSERT INTO organization_invitations "
        "(organization_id, email, role, invited_by, expires_at) "
        "VALUES ($1, $2, $3, $4, now() + $5::interval) RETURNING *",
        organization_id,
        email,
        role,
        invited_by,
        valid_for,
    )
    assert row is not None
    return row


async def answer(
    executor: Executor, organization_id: UUID, invitation_id: UUID, column: str
) -> asyncpg.Record | None:
    """Set ``column`` (accepted_at, declined_at or revoked_at) of a pending invitation."""
    if column not in ("accepted_at", "declined_at", "revoked_at"):
        raise ValueError(column)
    return await executor.fetchrow(
        f"UPDATE organization_invitations AS t SET {column} = now() "
        f"WHERE t.organization_id = $1 AND t.id = $2 AND {PENDING} RETURNING t.*",
        organization_id,
        invitation_id,
    )


async def join(
    executor: Executor,
    organization_id: UUID,
    user_id: UUID,
    role: str,
    invited_by: UUID | None,
) -> asyncpg.Record:
    """The invitee's membership (the members policy checks the invitation that grants it)."""
    row = await executor.fetchrow(
        "INSERT INTO organization_members (organization_id, user_id, role, invited_by) "
        "VALUES ($1, $2, $3, $4) RETURNING *",
        organization_id,
        user_id,
        role,
        invited_by,
    )
    assert row is not None
    return row
