"""Invitations at the database level, as the server role (migration 16): row-level security
shows an invitation to its tenant's admins and owners and to its invitee only; the invitee
can join with exactly what the invitation grants; an invitation is answered once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import asyncpg
import pytest

from db import tables
from db.tenancy import TenantContext, tenant_transaction
from db.uuid7 import uuid7
from tests.seed import Tenant, create_user


def member_email(tenant: Tenant) -> str:
    return f"member-{tenant.slug}@example.test"


async def invite(
    tenant: Tenant, email: str, role: str = "member", *, expired: bool = False
) -> UUID:
    """An invitation written by the tenant's owner."""
    now = datetime.now(UTC)
    created, expires = (
        (now - timedelta(days=8), now - timedelta(days=1))
        if expired
        else (now, now + timedelta(days=7))
    )
    invitation = tables.OrganizationInvitation(
        organization_id=tenant.organization_id,
        email=email,
        role=role,
        invited_by=tenant.owner_id,
        created_at=created,
        expires_at=expires,
    )
    async with tenant_transaction(tenant.context()):
        await tables.OrganizationInvitation.insert(invitation)
    invitation_id: UUID = invitation.id
    return invitation_id


async def visible(context: TenantContext) -> set[UUID]:
    async with tenant_transaction(context) as tx:
        rows = await tx.connection.fetch("SELECT id FROM organization_invitations")
    return {r["id"] for r in rows}


def as_user(user_id: UUID) -> TenantContext:
    return TenantContext(user_id=user_id)


async def test_only_the_tenants_admins_and_the_invitee_see_an_invitation(
    tenant_a: Tenant, tenant_b: Tenant
) -> None:
    a_to_b_member = await invite(tenant_a, member_email(tenant_b).upper())
    a_to_nobody = await invite(tenant_a, f"nobody-{uuid7().hex[-8:]}@example.test", "admin")
    b_to_a_member = await invite(tenant_b, member_email(tenant_a))

    assert await visible(TenantContext()) == set()
    assert await visible(tenant_a.context()) == {a_to_b_member, a_to_nobody}
    assert await visible(tenant_a.context(role="admin")) == {a_to_b_member, a_to_nobody}
    assert await visible(tenant_b.context()) == {b_to_a_member}
    # A member of A, in A: none of A's (admins only), but B's invitation addressed to them.
    assert await visible(tenant_a.context(user_id=tenant_a.member_id, role="member")) == {
        b_to_a_member
    }
    # The invitee without any tenant: their own invitations, whatever the e-mail's case.
    assert await visible(as_user(tenant_b.member_id)) == {a_to_b_member}
    assert await visible(as_user(tenant_a.member_id)) == {b_to_a_member}
    stranger = await create_user(f"stranger-{uuid7().hex[-8:]}@example.test")
    assert await visible(as_user(stranger)) == set()
    # A forged tenant without a role sees nothing of it either.
    assert await visible(TenantContext(organization_id=tenant_a.organization_id)) == set()


async def test_an_invitation_cannot_be_written_into_another_tenant(
    tenant_a: Tenant, tenant_b: Tenant
) -> None:
    insert = (
        "INSERT INTO organization_invitations (organization_id, email, role, invited_by, expires_at) "
        "VALUES ($1, 'x@example.test', 'member', $2, now() + interval '1 day')"
    )
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        async with tenant_transaction(tenant_a.context()) as tx:
            await tx.connection.execute(insert, tenant_b.organization_id, tenant_a.owner_id)
    # Members below admin cannot invite; nobody invites in someone else's name.
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        async with tenant_transaction(
            tenant_a.context(user_id=tenant_a.member_id, role="member")
        ) as tx:
            await tx.connection.execute(insert, tenant_a.organization_id, tenant_a.member_id)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        async with tenant_transaction(tenant_a.context()) as tx:
            await tx.connection.execute(insert, tenant_a.organization_id, tenant_a.member_id)
    # Even with the settings forged, the inviter must be a member of the same tenant
    # (composite foreign key: RLS does not apply to foreign-key checks).
    forged = tenant_a.context(user_id=tenant_b.owner_id)
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        async with tenant_transaction(forged) as tx:
            await tx.connection.execute(insert, tenant_a.organization_id, tenant_b.owner_id)
    # B's owner cannot revoke A's invitation: it is not visible to them.
    a_invitation = await invite(tenant_a, member_email(tenant_b))
    async with tenant_transaction(tenant_b.context()) as tx:
        status = await tx.connection.execute(
            "UPDATE organization_invitations SET revoked_at = now() WHERE id = $1", a_invitation
        )
    assert status == "UPDATE 0"


async def test_the_invitee_joins_with_exactly_what_the_invitation_grants(
    tenant_a: Tenant, tenant_b: Tenant
) -> None:
    invitee = tenant_b.member_id
    invitation = await invite(tenant_a, member_email(tenant_b), "member")
    join = (
        "INSERT INTO organization_members (organization_id, user_id, role, invited_by) "
        "VALUES ($1, $2, $3, $4)"
    )
    refused = [
        (tenant_a.organization_id, invitee, "owner", tenant_a.owner_id),  # another role
        (tenant_a.organization_id, invitee, "admin", tenant_a.owner_id),
        (tenant_a.organization_id, invitee, "member", None),  # another inviter
        (tenant_a.organization_id, tenant_a.owner_id, "member", tenant_a.owner_id),  # another user
    ]
    for values in refused:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            async with tenant_transaction(as_user(invitee)) as tx:
                await tx.connection.execute(join, *values)
    # Someone else with the invitation's id cannot use it: A's member is not the invitee.
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        async with tenant_transaction(as_user(tenant_a.member_id)) as tx:
            await tx.connection.execute(
                join, tenant_a.organization_id, tenant_a.member_id, "member", tenant_a.owner_id
            )
    # Nor can an admin accept in the invitee's name.
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        async with tenant_transaction(tenant_a.context()) as tx:
            await tx.connection.execute(
                "UPDATE organization_invitations SET accepted_at = now() WHERE id = $1", invitation
            )
    # The invitee cannot change what was offered, nor revoke it.
    with pytest.raises(asyncpg.CheckViolationError) as changed:
        async with tenant_transaction(as_user(invitee)) as tx:
            await tx.connection.execute(
                "UPDATE organization_invitations SET role = 'owner' WHERE id = $1", invitation
            )
    assert changed.value.constraint_name == "organization_invitations_immutable"
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        async with tenant_transaction(as_user(invitee)) as tx:
            await tx.connection.execute(
                "UPDATE organization_invitations SET revoked_at = now() WHERE id = $1", invitation
            )

    async with tenant_transaction(as_user(invitee)) as tx:
        await tx.connection.execute(
            join, tenant_a.organization_id, invitee, "member", tenant_a.owner_id
        )
        accepted = await tx.connection.execute(
            "UPDATE organization_invitations SET accepted_at = now() WHERE id = $1", invitation
        )
    assert accepted == "UPDATE 1"
    async with tenant_transaction(as_user(invitee)) as tx:
        role = await tx.connection.fetchval(
            "SELECT role FROM organization_members WHERE organization_id = $1 AND user_id = $2",
            tenant_a.organization_id,
            invitee,
        )
        # Answered: no second answer (the restrictive policy hides it from updates).
        again = await tx.connection.execute(
            "UPDATE organization_invitations SET accepted_at = NULL, declined_at = now() WHERE id = $1",
            invitation,
        )
    assert (role, again) == ("member", "UPDATE 0")


async def test_an_expired_invitation_grants_nothing(tenant_a: Tenant, tenant_b: Tenant) -> None:
    invitee = tenant_b.member_id
    invitation = await invite(tenant_a, member_email(tenant_b), expired=True)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        async with tenant_transaction(as_user(invitee)) as tx:
            await tx.connection.execute(
                "INSERT INTO organization_members (organization_id, user_id, role, invited_by) "
                "VALUES ($1, $2, 'member', $3)",
                tenant_a.organization_id,
                invitee,
                tenant_a.owner_id,
            )
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        async with tenant_transaction(as_user(invitee)) as tx:
            await tx.connection.execute(
                "UPDATE organization_invitations SET accepted_at = now() WHERE id = $1", invitation
            )
    async with tenant_transaction(as_user(invitee)) as tx:
        declined = await tx.connection.execute(
            "UPDATE organization_invitations SET declined_at = now() WHERE id = $1", invitation
        )
    assert declined == "UPDATE 1"


async def test_the_invitee_sees_the_inviting_organization_while_the_invitation_is_open(
    tenant_a: Tenant, tenant_b: Tenant
) -> None:
    invitee = tenant_b.member_id

    async def organizations() -> set[UUID]:
        async with tenant_transaction(as_user(invitee)) as tx:
            return {r["id"] for r in await tx.connection.fetch("SELECT id FROM organizations")}

    assert await organizations() == {tenant_b.organization_id}
    invitation = await invite(tenant_a, member_email(tenant_b))
    assert await organizations() == {tenant_b.organization_id, tenant_a.organization_id}
    # Not A's other data: its members, projects and users stay hidden.
    async with tenant_transaction(as_user(invitee)) as tx:
        members = await tx.connection.fetchval(
            "SELECT count(*) FROM organization_members WHERE organization_id = $1",
            tenant_a.organization_id,
        )
        projects = await tx.connection.fetchval("SELECT count(*) FROM projects")
    assert (members, projects) == (0, 0)
    async with tenant_transaction(as_user(invitee)) as tx:
        await tx.connection.execute(
            "UPDATE organization_invitations SET declined_at = now() WHERE id = $1", invitation
        )
    assert await organizations() == {tenant_b.organization_id}


async def test_one_pending_invitation_per_email_and_every_change_audited(
    tenant_a: Tenant, owner: asyncpg.Connection
) -> None:
    email = f"twice-{uuid7().hex[-8:]}@example.test"
    first = await invite(tenant_a, email)
    with pytest.raises(asyncpg.UniqueViolationError) as duplicate:
        await invite(tenant_a, email.upper())
    assert duplicate.value.constraint_name == "organization_invitations_pending_key"
    async with tenant_transaction(tenant_a.context(request_id="revoke-1")) as tx:
        await tx.connection.execute(
            "UPDATE organization_invitations SET revoked_at = now() WHERE id = $1", first
        )
    second = await invite(tenant_a, email)  # revoked: a new one may be pending
    async with tenant_transaction(tenant_a.context()) as tx:
        rows = await tx.connection.fetch(
            "SELECT action, entity_id, actor_id, request_id FROM audit_entries "
            "WHERE entity_type = 'organization_invitations' ORDER BY created_at, id"
        )
    assert [(r["action"], r["entity_id"], r["actor_id"]) for r in rows] == [
        ("insert", first, tenant_a.owner_id),
        ("update", first, tenant_a.owner_id),
        ("insert", second, tenant_a.owner_id),
    ]
    assert rows[1]["request_id"] == "revoke-1"


async def test_an_invitation_outlives_its_inviter_leaving(
    tenant_a: Tenant, tenant_b: Tenant
) -> None:
    """The composite key's SET NULL (invited_by) passes the immutability trigger, and the
    invitee then joins with no inviter recorded."""
    inviter = tenant_a.member_id
    async with tenant_transaction(tenant_a.context()) as tx:
        await tx.connection.execute(
            "UPDATE organization_members SET role = 'admin' WHERE organization_id = $1 AND user_id = $2",
            tenant_a.organization_id,
            inviter,
        )
    async with tenant_transaction(tenant_a.context(user_id=inviter, role="admin")) as tx:
        invitation = await tx.connection.fetchval(
            "INSERT INTO organization_invitations (organization_id, email, role, invited_by, expires_at) "
            "VALUES ($1, $2, 'viewer', $3, now() + interval '1 day') RETURNING id",
            tenant_a.organization_id,
            member_email(tenant_b),
            inviter,
        )
    async with tenant_transaction(tenant_a.context()) as tx:
        removed = await tx.connection.execute(
            "DELETE FROM organization_members WHERE organization_id = $1 AND user_id = $2",
            tenant_a.organization_id,
            inviter,
        )
    assert removed == "DELETE 1"
    async with tenant_transaction(as_user(tenant_b.member_id)) as tx:
        left = await tx.connection.fetchrow(
            "SELECT invited_by, accepted_at FROM organization_invitations WHERE id = $1", invitation
        )
        await tx.connection.execute(
            "INSERT INTO organization_members (organization_id, user_id, role, invited_by) "
            "VALUES ($1, $2, 'viewer', NULL)",
            tenant_a.organization_id,
            tenant_b.member_id,
        )
    assert dict(left) == {"invited_by": None, "accepted_at": None}
