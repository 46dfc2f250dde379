"""Invitations: an admin invites an e-mail address with a role; the person signed in with
that e-mail accepts (becoming a member with that role) or declines; an admin revokes.

``inviteMember`` answers the same whether or not the e-mail has an account: it never reads
other users, so it cannot tell. The role rules are those of membership: admins and owners
invite, only owners invite (or revoke the invitation of) an owner. Row-level security
enforces the same rules (migration 16).
"""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import strawberry

from api import validation
from api.context import Info
from api.ids import decode_id
from api.mutations.base import Failed, Run, mutation
from api.mutations.organizations import guard_owner_change
from api.types.errors import UserError, conflict, not_found
from api.types.errors import validation as invalid
from api.types.invitations import Invitation
from api.types.node import Role
from api.types.users import Member
from db.queries import invitations, organizations


@strawberry.input
class InviteMemberInput:
    email: str = strawberry.field(
        description="Whoever signs in with this e-mail (now or later) can accept."
    )
    role: Role = Role.MEMBER


@strawberry.input
class RevokeInvitationInput:
    id: strawberry.ID


@strawberry.input
class AcceptInvitationInput:
    id: strawberry.ID


@strawberry.input
class DeclineInvitationInput:
    id: strawberry.ID


@strawberry.type
class InvitationPayload:
    invitation: Invitation | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class AcceptInvitationPayload:
    member: Member | None = None
    invitation: Invitation | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


def _answered(row: asyncpg.Record) -> UserError | None:
    """The error for an invitation that can no longer be answered, if it is one."""
    for column, word in (
        ("accepted_at", "accepted"),
        ("declined_at", "declined"),
        ("revoked_at", "revoked"),
    ):
        if row[column] is not None:
            return conflict(f"this invitation was already {word}", "id")
    return None


async def _invitee_invitation(run: Run, global_id: str) -> asyncpg.Record:
    """The invitation addressed to the caller's own e-mail, still open; NOT_FOUND for any
    other (another person's invitation is not visible, so it does not exist here)."""
    email = run.viewer.email  # UNAUTHENTICATED first
    invitation_id = decode_id(global_id, "Invitation")
    row = await invitations.get(run.context.db, invitation_id)
    if row is None or row["email"].lower() != email.lower():
        raise Failed(not_found("no such invitation", "id"))
    if (error := _answered(row)) is not None:
        raise Failed(error)
    return row


@strawberry.type
class InvitationMutations:
    @strawberry.mutation(
        description="Invite an e-mail address to the current organization with a role "
        "(admins; owners to invite an owner). Re-inviting replaces a pending invitation. The "
        "answer does not depend on whether the e-mail has an account."
    )
    async def invite_member(self, info: Info, input: InviteMemberInput) -> InvitationPayload:
        async with mutation(info) as run:
            tenant = run.tenant("admin")
            guard_owner_change(run, "", input.role.value)
            email = input.email.strip()
            if problem := validation.email_problem(email):
                raise Failed(invalid(problem, "email"))
            db = info.context.db
            if await invitations.member_with_email(db, tenant.organization_id, email):
                raise Failed(conflict("already a member of this organization", "email"))
            pending = await invitations.pending_for(db, tenant.organization_id, email)
            if pending is not None:
                guard_owner_change(run, pending["role"], None)
                await invitations.answer(db, tenant.organization_id, pending["id"], "revoked_at")
            row = await invitations.create(
                db,
                tenant.organization_id,
                email,
                input.role.value,
                run.viewer.user_id,
                timedelta(seconds=info.context.settings.taskql_invitation_ttl_seconds),
            )
            return InvitationPayload(invitation=Invitation.from_row(row))
        return InvitationPayload(errors=run.errors)

    @strawberry.mutation(
        description="Revoke a pending invitation of the current organization (admins; owners "
        "for an owner's invitation)."
    )
    async def revoke_invitation(
        self, info: Info, input: RevokeInvitationInput
    ) -> InvitationPayload:
        async with mutation(info) as run:
            tenant = run.tenant("admin")
            db = info.context.db
            invitation_id = decode_id(input.id, "Invitation")
            row = await invitations.get(db, invitation_id)
            if row is None or row["organization_id"] != tenant.organization_id:
                raise Failed(not_found("no such invitation", "id"))
            if (error := _answered(row)) is not None:
                raise Failed(error)
            guard_owner_change(run, row["role"], None)
            revoked = await invitations.answer(
                db, tenant.organization_id, invitation_id, "revoked_at"
            )
            if revoked is None:
                raise Failed(conflict("this invitation was answered meanwhile", "id"))
            return InvitationPayload(invitation=Invitation.from_row(revoked))
        return InvitationPayload(errors=run.errors)

    @strawberry.mutation(
        description="Accept an invitation addressed to your e-mail: you become a member of its "
        "organization with its role. Send no X-Organization (you are not a member yet)."
    )
    async def accept_invitation(
        self, info: Info, input: AcceptInvitationInput
    ) -> AcceptInvitationPayload:
        async with mutation(info) as run:
            row = await _invitee_invitation(run, input.id)
            if row["expired"]:
                raise Failed(conflict("this invitation has expired: ask for a new one", "id"))
            db = info.context.db
            organization_id = row["organization_id"]
            if await organizations.membership(db, organization_id, run.viewer.user_id):
                raise Failed(conflict("you are already a member of this organization", "id"))
            # The membership first: its row-level security check needs the invitation pending.
            member = await invitations.join(
                db, organization_id, run.viewer.user_id, row["role"], row["invited_by"]
            )
            accepted = await invitations.answer(db, organization_id, row["id"], "accepted_at")
            if accepted is None:  # revoked or answered by a concurrent request
                raise Failed(conflict("this invitation was answered meanwhile", "id"))
            return AcceptInvitationPayload(
                member=Member.from_row(member), invitation=Invitation.from_row(accepted)
            )
        return AcceptInvitationPayload(errors=run.errors)

    @strawberry.mutation(description="Decline an invitation addressed to your e-mail.")
    async def decline_invitation(
        self, info: Info, input: DeclineInvitationInput
    ) -> InvitationPayload:
        async with mutation(info) as run:
            row = await _invitee_invitation(run, input.id)
            declined = await invitations.answer(
                info.context.db, row["organization_id"], row["id"], "declined_at"
            )
            if declined is None:
                raise Failed(conflict("this invitation was answered meanwhile", "id"))
            return InvitationPayload(invitation=Invitation.from_row(declined))
        return InvitationPayload(errors=run.errors)
