"""Organizations (tenants) and their members."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

import asyncpg

from db.executor import Executor
from db.queries.connections import Source

MEMBERS = Source(table="organization_members", parent_column="organization_id")
#: The current user's memberships across organizations (parent: the user).
MEMBERSHIPS = Source(table="organization_members", parent_column="user_id")


async def by_ids(executor: Executor, ids: Sequence[UUID]) -> list[asyncpg.Record]:
    return await executor.fetch("SELECT * FROM organizations WHERE id = ANY($1::uuid[])", list(ids))


async def by_slug(executor: Executor, slug: str) -> asyncpg.Record | None:
    return await executor.fetchrow("SELECT * FROM organizations WHERE slug = $1", slug)


async def enter(executor: Executor, organization_id: UUID | None, role: str | None) -> None:
    """Make ``organization_id`` the transaction's tenant (None: no tenant)."""
    await executor.execute(
        "SELECT set_config('app.organization_id', $1, true), set_config('app.role', $2, true)",
        str(organization_id) if organization_id else "",
        role or "",
    )


async def create(
    executor: Executor, organization_id: UUID, name: str, slug: str, owner_id: UUID
) -> asyncpg.Record:
    """Insert the organization and its first owner (the tenant must be entered first)."""
    row = await executor.fetchrow(
        "WITH org AS (INSERT INTO organizations (id, name, slug) VALUES ($1, $2, $3) RETURNING *), "
        "owner AS (INSERT INTO organization_members (organization_id, user_id, role) "
        "          SELECT id, $4, 'owner' FROM org) "
        "SELECT * FROM org",
        organization_id,
        name,
        slug,
        owner_id,
    )
    assert row is not None
    return row


async def update(
    executor: Executor, organization_id: UUID, name: str | None, slug: str | None
) -> asyncpg.Record | None:
    return await executor.fetchrow(
        "UPDATE organizations SET name = coalesce($2, name), slug = coalesce($3, slug) "
        "WHERE id = $1 RETURNING *",
        organization_id,
        name,
        slug,
    )


async def members_by_ids(executor: Executor, ids: Sequence[UUID]) -> list[asyncpg.Record]:
    return await executor.fetch(
        "SELECT * FROM organization_members WHERE id = ANY($1::uuid[])", list(ids)
    )


async def membership(
    executor: Executor, organization_id: UUID, user_id: UUID
) -> asyncpg.Record | None:
    return await executor.fetchrow(
        "SELECT * FROM organization_members WHERE organization_id = $1 AND user_id = $2",
        organization_id,
        user_id,
    )


async def lock_owners(executor: Executor, organization_id: UUID) -> list[UUID]:
    """The organization's owners, locked until the transaction ends: two concurrent
    demotions or removals cannot both see another owner left."""
    rows = await executor.fetch(
        "SELECT user_id FROM organization_members "
        "WHERE organization_id = $1 AND role = 'owner' ORDER BY id FOR UPDATE",
        organization_id,
    )
    return [row["user_id"] for row in rows]


async def change_role(
    executor: Executor, organization_id: UUID, user_id: UUID, role: str
) -> asyncpg.Record | None:
    return await executor.fetchrow(
        "UPDATE organization_members SET role = $3 WHERE organization_id = $1 AND user_id = $2 "
        "RETURNING *",
        organization_id,
        user_id,
        role,
    )


async def remove_member(executor: Executor, organization_id: UUID, user_id: UUID) -> bool:
    status = await executor.execute(
        "DELETE FROM organization_members WHERE organization_id = $1 AND user_id = $2",
        organization_id,
        user_id,
    )
    return status == "DELETE 1"


#: The deferred constraint trigger that keeps an owner in every organization (migration 15).
KEEP_AN_OWNER = "organization_members_keep_an_owner"


async def check_owners(executor: Executor) -> None:
    """Run the last-owner check now instead of at commit, so a violation fails the statement
    (inside the mutation's savepoint: a typed CONFLICT) rather than the commit; then defer it
    again for the rest of the transaction."""
    await executor.execute(
        f"SET CONSTRAINTS {KEEP_AN_OWNER} IMMEDIATE; SET CONSTRAINTS {KEEP_AN_OWNER} DEFERRED"
    )
