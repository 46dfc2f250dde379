"""Root query fields."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

import strawberry

from api.context import Info
from api.errors import BadUserInput
from api.ids import decode_id, from_global_id
from api.loaders import load_connection, load_one
from api.pagination import MAX_PAGE, Connection, connection, decode_cursor
from api.types.audit import AuditEntityType, AuditEntry
from api.types.comments import Comment
from api.types.invitations import Invitation
from api.types.node import Node
from api.types.organizations import Organization
from api.types.projects import Project
from api.types.tasks import Task
from api.types.users import Member, User, Viewer
from db.queries import audit, organizations, search
from db.sql import Page

SearchResult = Annotated[Project | Task, strawberry.union("SearchResult")]


@strawberry.type(description="A search hit and how well it matches.")
class SearchHit:
    rank: float
    node: SearchResult


async def _node(info: Info, global_id: str) -> Node | None:
    kind, raw = from_global_id(global_id)
    loaders = info.context.loaders
    if kind == "User":
        row = await loaders.user.load(raw)
        return User.from_row(row) if row else None
    if kind == "Organization":
        row = await loaders.organization.load(raw)
        return Organization.from_row(row) if row else None
    if kind == "Invitation":
        # Its organization's admins see it, and so does its invitee, who has no tenant yet.
        info.context.viewer  # noqa: B018 - authenticated callers only
        row = await loaders.invitation.load(raw)
        return Invitation.from_row(row) if row else None
    info.context.tenant  # noqa: B018 - tenant data needs X-Organization
    factories = {
        "Member": (loaders.member, Member.from_row),
        "Project": (loaders.project, Project.from_row),
        "Task": (loaders.task, Task.from_row),
        "Comment": (loaders.comment, Comment.from_row),
    }
    if kind not in factories:
        raise BadUserInput(f"{kind} objects are not fetched by node(id:)", argument="id")
    loader, factory = factories[kind]
    row = await loader.load(raw)
    return factory(row) if row else None


@strawberry.type
class Query:
    @strawberry.field(description="You, when authenticated; null otherwise.")
    def viewer(self, info: Info) -> Viewer | None:
        viewer = info.context.auth.viewer
        return Viewer(user_id=viewer.user_id) if viewer else None

    @strawberry.field(
        description="Refetch any object by its global id; null if not visible to you."
    )
    async def node(self, info: Info, id: strawberry.ID) -> Node | None:
        return await _node(info, id)

    @strawberry.field(
        description="An organization you belong to, by id or slug (default: X-Organization)."
    )
    async def organization(
        self, info: Info, id: strawberry.ID | None = None, slug: str | None = None
    ) -> Organization | None:
        context = info.context
        context.viewer  # noqa: B018 - authenticated callers only
        if id is not None:
            row = await context.loaders.organization.load(decode_id(id, "Organization"))
        elif slug is not None:
            row = await organizations.by_slug(context.db, slug.lower())
        else:
            row = await context.loaders.organization.load(context.tenant.organization_id)
        return Organization.from_row(row) if row else None

    @strawberry.field
    async def project(self, info: Info, id: strawberry.ID) -> Project | None:
        info.context.tenant  # noqa: B018
        return await load_one(
            info.context.loaders.project, decode_id(id, "Project"), Project.from_row
        )

    @strawberry.field
    async def task(self, info: Info, id: strawberry.ID) -> Task | None:
        info.context.tenant  # noqa: B018
        return await load_one(info.context.loaders.task, decode_id(id, "Task"), Task.from_row)

    @strawberry.field(
        description="Projects and tasks of the current organization matching `text`, best first. "
        "Tolerates typos in task titles when the words themselves match fewer than 50 tasks. "
        "When the words are in more than about 1,600 tasks, a fixed sample of a sixteenth of "
        "them is ranked; at most 500 candidates per kind are ranked (and counted in "
        "totalCount)."
    )
    async def search(
        self, info: Info, text: str, first: int = 20, after: str | None = None
    ) -> Connection[SearchHit]:
        context = info.context
        tenant = context.tenant
        if not 1 <= first <= MAX_PAGE:
            raise BadUserInput(f"`first` must be between 1 and {MAX_PAGE}", argument="first")
        if not 1 <= len(text.strip()) <= 200:
            raise BadUserInput("`text` must have 1 to 200 characters", argument="text")
        cursor = decode_cursor(after, "real") if after else None
        hits = await search.search(context.db, tenant.organization_id, text.strip(), first, cursor)
        nodes: dict[tuple[str, UUID], Project | Task] = {}
        task_rows = await context.loaders.task.load_many(
            [h["id"] for h in hits if h["kind"] == "task"]
        )
        project_rows = await context.loaders.project.load_many(
            [h["id"] for h in hits if h["kind"] == "project"]
        )
        for row in task_rows:
            if row is not None:
                nodes[("task", row["id"])] = Task.from_row(row)
        for row in project_rows:
            if row is not None:
                nodes[("project", row["id"])] = Project.from_row(row)
        page = Page(first, audit.NEWEST_FIRST, cursor)

        async def count() -> int:
            return await search.count(context.db, tenant.organization_id, text.strip())

        return connection(
            [h for h in hits if (h["kind"], h["id"]) in nodes],
            page,
            lambda h: SearchHit(rank=h["rank"], node=nodes[(h["kind"], h["id"])]),
            count,
        )

    @strawberry.field(description="The organization's audit log, newest first (admins).")
    async def audit_log(
        self,
        info: Info,
        entity_type: AuditEntityType | None = None,
        entity_id: strawberry.ID | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[AuditEntry]:
        from api.pagination import page_request

        tenant = info.context.require_role("admin")
        page = page_request(audit.NEWEST_FIRST, first, after)
        where = audit.EntityTypeFilter(entity_type.value if entity_type else None)
        if entity_id is not None:
            _, raw = from_global_id(entity_id)
            return await load_connection(
                info.context, audit.BY_ENTITY, raw, page, AuditEntry.reader(info.context), where
            )
        return await load_connection(
            info.context,
            audit.BY_ORGANIZATION,
            tenant.organization_id,
            page,
            AuditEntry.reader(info.context),
            where,
        )
