"""Invitations to join an organization, seen by its admins and by the invitee."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated
from uuid import UUID

import asyncpg
import strawberry

from api.context import Info
from api.loaders import load_one
from api.types.node import Node, Role, node_id
from api.types.users import User, load_user

if TYPE_CHECKING:
    from api.types.organizations import Organization


@strawberry.enum(description="Where an invitation stands.")
class InvitationStatus(Enum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    REVOKED = "revoked"
    #: Pending, but past its expiry: it can no longer be accepted.
    EXPIRED = "expired"


def status_of(row: asyncpg.Record) -> InvitationStatus:
    if row["accepted_at"] is not None:
        return InvitationStatus.ACCEPTED
    if row["declined_at"] is not None:
        return InvitationStatus.DECLINED
    if row["revoked_at"] is not None:
        return InvitationStatus.REVOKED
    if row["expires_at"] <= datetime.now(UTC):
        return InvitationStatus.EXPIRED
    return InvitationStatus.PENDING


@strawberry.type(
    description="An invitation of an e-mail address to an organization, with a role. Visible "
    "to the organization's admins and owners, and to whoever is signed in with that e-mail."
)
class Invitation(Node):
    email: str
    role: Role = strawberry.field(description="The role the invitee gets on accepting.")
    status: InvitationStatus
    created_at: datetime
    expires_at: datetime
    accepted_at: datetime | None
    declined_at: datetime | None
    revoked_at: datetime | None
    organization_id: strawberry.Private[UUID]
    invited_by_id: strawberry.Private[UUID | None]

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Invitation:
        return cls(
            pk=row["id"],
            id=node_id("Invitation", row["id"]),
            email=row["email"],
            role=Role(row["role"]),
            status=status_of(row),
            created_at=row["created_at"],
            expires_at=row["expires_at"],
            accepted_at=row["accepted_at"],
            declined_at=row["declined_at"],
            revoked_at=row["revoked_at"],
            organization_id=row["organization_id"],
            invited_by_id=row["invited_by"],
        )

    @strawberry.field(
        description="Who invited, when visible to you (the users of your organizations): null "
        "for an invitee who shares no organization with the inviter, or once the inviter left."
    )
    async def invited_by(self, info: Info) -> User | None:
        return await load_user(info, self.invited_by_id)

    @strawberry.field(description="The inviting organization (its name and slug).")
    async def organization(
        self, info: Info
    ) -> Annotated[Organization, strawberry.lazy("api.types.organizations")] | None:
        from api.types.organizations import Organization

        return await load_one(
            info.context.loaders.organization, self.organization_id, Organization.from_row
        )
