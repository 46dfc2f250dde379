"""Organizations: the tenants."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated

import asyncpg
import strawberry

from api.context import Info
from api.loaders import load_connection
from api.pagination import Connection, page_request
from api.registry import TIME, Column, ObjectSpec
from api.types.node import Direction, Node, ProjectStatus
from api.types.users import OLDEST_FIRST, Member
from db.queries import invitations, projects
from db.queries.organizations import MEMBERS
from db.queries.projects import PROJECTS
from db.sql import Order

if TYPE_CHECKING:
    from api.types.invitations import Invitation
    from api.types.projects import Project


@strawberry.enum
class ProjectOrderField(Enum):
    CREATED_AT = "created_at"
    NAME = "name"


PROJECT_ORDERS = {
    ProjectOrderField.CREATED_AT: Order("t.created_at", "timestamptz"),
    ProjectOrderField.NAME: Order("t.name", "text"),
}


@strawberry.input(description="Which projects to list.")
class ProjectFilter:
    status: list[ProjectStatus] | None = None
    include_archived: bool = False
    search: str | None = strawberry.field(
        default=None, description="Full-text search in name and description."
    )


ORGANIZATION = ObjectSpec(
    "Organization",
    {
        "name": Column("name"),
        "slug": Column("slug"),
        "createdAt": Column("created_at", TIME),
        "updatedAt": Column("updated_at", TIME),
    },
)


@strawberry.type(description="An organization: a tenant, whose data no other organization can see.")
class Organization(Node):
    name: str
    slug: str = strawberry.field(description="URL-safe name; send it as X-Organization.")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Organization:
        return cls(**ORGANIZATION.values(row))

    @strawberry.field(description="Members with their roles, oldest first.")
    async def members(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Connection[Member]:
        page = page_request(OLDEST_FIRST, first, after, last, before)
        return await load_connection(info.context, MEMBERS, self.pk, page, Member.from_row)

    @strawberry.field(
        description="Pending invitations (expired ones included: see `status`), oldest first "
        "(admins and owners)."
    )
    async def invitations(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Connection[Annotated[Invitation, strawberry.lazy("api.types.invitations")]]:
        from api.types.invitations import Invitation

        info.context.require_role("admin")
        page = page_request(OLDEST_FIRST, first, after, last, before)
        return await load_connection(
            info.context,
            invitations.BY_ORGANIZATION,
            self.pk,
            page,
            Invitation.from_row,
            invitations.pending,
        )

    @strawberry.field(description="Projects, live ones only unless the filter says otherwise.")
    async def projects(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
        filter: ProjectFilter | None = None,
        order_by: ProjectOrderField = ProjectOrderField.CREATED_AT,
        direction: Direction = Direction.DESC,
    ) -> Connection[Annotated[Project, strawberry.lazy("api.types.projects")]]:
        from api.types.projects import Project

        base = PROJECT_ORDERS[order_by]
        order = Order(base.key, base.type, descending=direction is Direction.DESC)
        page = page_request(order, first, after, last, before)
        f = filter or ProjectFilter()
        where = projects.ProjectFilter(
            statuses=tuple(s.value for s in f.status) if f.status is not None else None,
            include_archived=f.include_archived,
            search=f.search or None,
        )
        return await load_connection(info.context, PROJECTS, self.pk, page, Project.from_row, where)
