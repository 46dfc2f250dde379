"""Root subscription fields and their change payloads.

Subscriptions are served over WebSocket (graphql-transport-ws) by ``api.realtime``: it
authenticates the connection, routes outbox events to subscriptions and executes each
subscription's selection over a change object in a short transaction under the subscriber's
tenant and role. The resolvers below only declare the fields (and are never iterated:
``api.realtime`` does the subscribing); the payload fields read under row-level security
like any query, so a change the subscriber may not see arrives with its object null.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from enum import Enum
from typing import Annotated

import strawberry

from api.context import Info
from api.loaders import load_one
from api.realtime.events import Event
from api.types.comments import Comment
from api.types.node import node_id
from api.types.projects import Project
from api.types.tasks import Task
from api.types.users import Member


@strawberry.enum(description="What happened to the object of a change.")
class ChangeAction(Enum):
    CREATED = "insert"
    UPDATED = "update"
    DELETED = "delete"


@strawberry.interface(description="A change announced after its transaction committed.")
class Change:
    event: strawberry.Private[Event]

    @strawberry.field(description="Resume after this change with `after:` (within retention).")
    def cursor(self) -> str:
        return self.event.cursor.encode()

    @strawberry.field
    def action(self) -> ChangeAction:
        return ChangeAction(self.event.action)


@strawberry.type(description="A task created, updated (moved, completed, ...) or deleted.")
class TaskChange(Change):
    @strawberry.field
    def task_id(self) -> strawberry.ID:
        return node_id("Task", self.event.entity_id)

    @strawberry.field(description="The task now; null once deleted, or if not visible to you.")
    async def task(self, info: Info) -> Task | None:
        return await load_one(info.context.loaders.task, self.event.entity_id, Task.from_row)


@strawberry.type(description="A comment added, edited, (soft-)deleted or removed.")
class CommentChange(Change):
    @strawberry.field
    def comment_id(self) -> strawberry.ID:
        return node_id("Comment", self.event.entity_id)

    @strawberry.field(description="The comment now; null once removed, or if not visible.")
    async def comment(self, info: Info) -> Comment | None:
        return await load_one(info.context.loaders.comment, self.event.entity_id, Comment.from_row)


@strawberry.type(description="A project of the organization created, updated or deleted.")
class ProjectChange(Change):
    @strawberry.field
    def project_id(self) -> strawberry.ID:
        return node_id("Project", self.event.entity_id)

    @strawberry.field(description="The project now; null once deleted, or if not visible.")
    async def project(self, info: Info) -> Project | None:
        return await load_one(info.context.loaders.project, self.event.entity_id, Project.from_row)


@strawberry.type(description="One of your memberships created, changed (role) or ended.")
class MembershipChange(Change):
    @strawberry.field
    def member_id(self) -> strawberry.ID:
        return node_id("Member", self.event.entity_id)

    @strawberry.field
    def organization_id(self) -> strawberry.ID:
        return node_id("Organization", self.event.organization_id)

    @strawberry.field(description="The membership now; null once it ended.")
    async def member(self, info: Info) -> Member | None:
        return await load_one(info.context.loaders.member, self.event.entity_id, Member.from_row)


#: Root field -> (outbox topic, the change type its events are given to).
TOPICS: dict[str, tuple[str, type[Change]]] = {
    "taskChanged": ("task", TaskChange),
    "commentAdded": ("comment", CommentChange),
    "projectChanged": ("project", ProjectChange),
    "membershipChanged": ("member", MembershipChange),
}

_AFTER = "Resume after this cursor (a change's `cursor`), within the retention window."


async def _served_by_realtime() -> AsyncGenerator[None, None]:
    raise RuntimeError("subscriptions are served by api.realtime over WebSocket")
    yield  # pragma: no cover


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="Changes to the tasks of a project: created, updated, moved in or out, "
        "completed, deleted."
    )
    async def task_changed(
        self,
        info: Info,
        project_id: strawberry.ID,
        after: Annotated[str | None, strawberry.argument(description=_AFTER)] = None,
    ) -> AsyncGenerator[TaskChange, None]:
        async for _ in _served_by_realtime():
            yield  # type: ignore[misc]  # pragma: no cover

    @strawberry.subscription(description="Comments on a task as they are added, edited or deleted.")
    async def comment_added(
        self,
        info: Info,
        task_id: strawberry.ID,
        after: Annotated[str | None, strawberry.argument(description=_AFTER)] = None,
    ) -> AsyncGenerator[CommentChange, None]:
        async for _ in _served_by_realtime():
            yield  # type: ignore[misc]  # pragma: no cover

    @strawberry.subscription(
        description="The current organization's projects as they are created, updated or deleted."
    )
    async def project_changed(
        self,
        info: Info,
        after: Annotated[str | None, strawberry.argument(description=_AFTER)] = None,
    ) -> AsyncGenerator[ProjectChange, None]:
        async for _ in _served_by_realtime():
            yield  # type: ignore[misc]  # pragma: no cover

    @strawberry.subscription(
        description="Your own memberships, in every organization: joined, role changed, left."
    )
    async def membership_changed(
        self,
        info: Info,
        after: Annotated[str | None, strawberry.argument(description=_AFTER)] = None,
    ) -> AsyncGenerator[MembershipChange, None]:
        async for _ in _served_by_realtime():
            yield  # type: ignore[misc]  # pragma: no cover
