"""Users, members and the viewer."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated
from uuid import UUID

import asyncpg
import strawberry

from api.context import Info
from api.loaders import load_connection, load_one
from api.pagination import Connection, page_request
from api.registry import ENUM, TIME, Column, ObjectSpec, Ref
from api.types.node import Node, Role
from db.queries.organizations import MEMBERSHIPS
from db.sql import Order

if TYPE_CHECKING:
    from api.types.invitations import Invitation
    from api.types.organizations import Organization

OLDEST_FIRST = Order("t.created_at", "timestamptz")

USER = ObjectSpec(
    "User",
    {
        "email": Column("email"),
        "displayName": Column("display_name"),
        "createdAt": Column("created_at", TIME),
    },
)


@strawberry.type(
    description="A person with an account. Visible to themselves and to members of the current organization."
)
class User(Node):
    email: str
    display_name: str
    created_at: datetime

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> User:
        return cls(**USER.values(row))


async def load_user(info: Info, user_id: UUID | None) -> User | None:
    return await load_one(info.context.loaders.user, user_id, User.from_row)


MEMBER = ObjectSpec(
    "Member",
    {
        "role": Column("role", ENUM, enum=Role),
        "createdAt": Column("created_at", TIME),
        "user": Ref("User", "users", "user_id", attr="user_id"),
        "invitedBy": Ref("User", "users", "invited_by", attr="invited_by_id"),
        "organization": Ref(
            "Organization", "organizations", "organization_id", attr="organization_id"
        ),
    },
)


@strawberry.type(description="A user's membership of an organization, with their role.")
class Member(Node):
    role: Role
    created_at: datetime = strawberry.field(description="When the user joined.")
    user_id: strawberry.Private[UUID]
    organization_id: strawberry.Private[UUID]
    invited_by_id: strawberry.Private[UUID | None]

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Member:
        return cls(**MEMBER.values(row))

    @strawberry.field
    async def user(self, info: Info) -> User | None:
        return await load_user(info, self.user_id)

    @strawberry.field
    async def invited_by(self, info: Info) -> User | None:
        return await load_user(info, self.invited_by_id)

    @strawberry.field
    async def organization(
        self, info: Info
    ) -> Annotated[Organization, strawberry.lazy("api.types.organizations")] | None:
        from api.types.organizations import Organization

        return await load_one(
            info.context.loaders.organization, self.organization_id, Organization.from_row
        )


@strawberry.type(description="The authenticated caller.")
class Viewer:
    user_id: strawberry.Private[UUID]

    @strawberry.field
    async def user(self, info: Info) -> User:
        user = await load_user(info, self.user_id)
        assert user is not None
        return user

    @strawberry.field(description="The organizations you belong to, with your role in each.")
    async def memberships(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Connection[Member]:
        page = page_request(OLDEST_FIRST, first, after, last, before)
        return await load_connection(
            info.context, MEMBERSHIPS, self.user_id, page, Member.from_row, tenant_scoped=False
        )

    @strawberry.field(
        description="Pending, unexpired invitations addressed to your e-mail, in every "
        "organization, oldest first: accept or decline them."
    )
    async def invitations(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Connection[Annotated[Invitation, strawberry.lazy("api.types.invitations")]]:
        from api.pagination import connection
        from api.types.invitations import Invitation
        from db.queries import invitations

        context = info.context
        email = context.viewer.email
        page = page_request(OLDEST_FIRST, first, after, last, before)
        rows = await invitations.for_invitee(context.db, email, page)

        async def count() -> int:
            return await invitations.count_for_invitee(context.db, email)

        return connection(rows, page, Invitation.from_row, count)
