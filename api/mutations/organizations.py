"""Organizations and membership. Admins manage members; only owners manage owners and the
organization itself; the last owner can neither leave nor be demoted."""

from __future__ import annotations

import strawberry

from api import validation
from api.context import Info
from api.ids import decode_id
from api.mutations.base import Failed, Run, mutation
from api.types.errors import UserError, conflict, forbidden, not_found
from api.types.errors import validation as invalid
from api.types.node import Role
from api.types.organizations import Organization
from api.types.users import Member
from db.queries import organizations
from db.uuid7 import uuid7


@strawberry.input
class CreateOrganizationInput:
    name: str
    slug: str


@strawberry.input
class UpdateOrganizationInput:
    name: str | None = None
    slug: str | None = None


@strawberry.input
class ChangeMemberRoleInput:
    user_id: strawberry.ID
    role: Role


@strawberry.input
class RemoveMemberInput:
    user_id: strawberry.ID


@strawberry.type
class OrganizationPayload:
    organization: Organization | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class MemberPayload:
    member: Member | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class RemoveMemberPayload:
    removed_user_id: strawberry.ID | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


def _check_name_and_slug(name: str | None, slug: str | None) -> None:
    problems = []
    if name is not None and (p := validation.text_problem(name, 200)):
        problems.append(invalid(p, "name"))
    if slug is not None and (p := validation.slug_problem(slug)):
        problems.append(invalid(p, "slug"))
    if problems:
        raise Failed(*problems)


def guard_owner_change(run: Run, target_role: str, new_role: str | None) -> None:
    """Only owners may touch an owner's membership or make someone an owner."""
    actor = run.tenant("admin")
    if (target_role == "owner" or new_role == "owner") and actor.role != "owner":
        raise Failed(forbidden("only an owner can change an owner or make one", "owner"))


async def _last_owner(run: Run, user_id: object) -> bool:
    owners = await organizations.lock_owners(run.context.db, run.context.scope_id)
    return owners == [user_id]


@strawberry.type
class OrganizationMutations:
    @strawberry.mutation(description="Create an organization; you become its owner.")
    async def create_organization(
        self, info: Info, input: CreateOrganizationInput
    ) -> OrganizationPayload:
        async with mutation(info) as run:
            viewer = run.viewer
            slug = input.slug.strip().lower()
            _check_name_and_slug(input.name, slug)
            db = info.context.db
            organization_id = uuid7()
            # The new organization is the tenant of this write only; the operation's tenant
            # (X-Organization, if any) is restored right after.
            await organizations.enter(db, organization_id, "owner")
            row = await organizations.create(
                db, organization_id, input.name.strip(), slug, viewer.user_id
            )
            tenant = info.context.auth.tenant
            await organizations.enter(
                db, tenant.organization_id if tenant else None, tenant.role if tenant else None
            )
            return OrganizationPayload(organization=Organization.from_row(row))
        return OrganizationPayload(errors=run.errors)

    @strawberry.mutation(description="Rename the current organization or change its slug (owners).")
    async def update_organization(
        self, info: Info, input: UpdateOrganizationInput
    ) -> OrganizationPayload:
        async with mutation(info) as run:
            tenant = run.tenant("owner")
            slug = input.slug.strip().lower() if input.slug is not None else None
            _check_name_and_slug(input.name, slug)
            row = await organizations.update(
                info.context.db,
                tenant.organization_id,
                input.name.strip() if input.name else None,
                slug,
            )
            if row is None:
                raise Failed(not_found("no such organization"))
            return OrganizationPayload(organization=Organization.from_row(row))
        return OrganizationPayload(errors=run.errors)

    @strawberry.mutation(description="Change a member's role (admins; owners for owner changes).")
    async def change_member_role(self, info: Info, input: ChangeMemberRoleInput) -> MemberPayload:
        async with mutation(info) as run:
            run.tenant("admin")
            db = info.context.db
            user_id = decode_id(input.user_id, "User")
            current = await organizations.membership(db, info.context.scope_id, user_id)
            if current is None:
                raise Failed(not_found("not a member of this organization", "userId"))
            guard_owner_change(run, current["role"], input.role.value)
            if (
                current["role"] == "owner"
                and input.role is not Role.OWNER
                and await _last_owner(run, user_id)
            ):
                raise Failed(
                    conflict(
                        "the last owner cannot be demoted: make someone else owner first", "role"
                    )
                )
            row = await organizations.change_role(
                db, info.context.scope_id, user_id, input.role.value
            )
            assert row is not None
            await organizations.check_owners(db)
            return MemberPayload(member=Member.from_row(row))
        return MemberPayload(errors=run.errors)

    @strawberry.mutation(
        description="Remove a member (admins), or leave (anyone). The last owner cannot leave."
    )
    async def remove_member(self, info: Info, input: RemoveMemberInput) -> RemoveMemberPayload:
        async with mutation(info) as run:
            tenant = run.tenant("viewer")
            db = info.context.db
            user_id = decode_id(input.user_id, "User")
            current = await organizations.membership(db, tenant.organization_id, user_id)
            if current is None:
                raise Failed(not_found("not a member of this organization", "userId"))
            if user_id != run.viewer.user_id:
                guard_owner_change(run, current["role"], None)
            if current["role"] == "owner" and await _last_owner(run, user_id):
                raise Failed(
                    conflict("the last owner cannot leave: make someone else owner first", "userId")
                )
            await organizations.remove_member(db, tenant.organization_id, user_id)
            await organizations.check_owners(db)
            return RemoveMemberPayload(removed_user_id=input.user_id)
        return RemoveMemberPayload(errors=run.errors)
