"""Tasks: a tree within a project."""

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
from api.types.audit import AuditEntry
from api.types.comments import Comment
from api.types.node import Direction, Node, TaskStatus
from api.types.projects import TaskOrderField, task_order
from api.types.users import User, load_user
from db.queries import audit, comments, tasks

if TYPE_CHECKING:
    from api.types.projects import Project


TASK = ObjectSpec(
    "Task",
    {
        "title": Column("title"),
        "description": Column("description"),
        "status": Column("status", ENUM, enum=TaskStatus),
        "priority": Column("priority"),
        "dueDate": Column("due_date", TIME),
        "completedAt": Column("completed_at", TIME),
        "createdAt": Column("created_at", TIME),
        "updatedAt": Column("updated_at", TIME),
        "project": Ref("Project", "projects", "project_id", attr="project_id"),
        "parent": Ref("Task", "tasks", "parent_task_id", attr="parent_id"),
        "assignee": Ref("User", "users", "assignee_id", attr="assignee_id"),
        "createdBy": Ref("User", "users", "created_by", attr="created_by_id"),
    },
)


@strawberry.type(description="A task. Tasks form a tree within their project (no cycles).")
class Task(Node):
    title: str
    description: str | None
    status: TaskStatus
    priority: int = strawberry.field(description="0 none, 1 low, 2 medium, 3 high, 4 urgent.")
    due_date: datetime | None
    completed_at: datetime | None = strawberry.field(description="Set when the status became DONE.")
    created_at: datetime
    updated_at: datetime
    project_id: strawberry.Private[UUID]
    parent_id: strawberry.Private[UUID | None]
    assignee_id: strawberry.Private[UUID | None]
    created_by_id: strawberry.Private[UUID | None]

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Task:
        return cls(**TASK.values(row))

    @strawberry.field
    async def project(
        self, info: Info
    ) -> Annotated[Project, strawberry.lazy("api.types.projects")] | None:
        from api.types.projects import Project

        return await load_one(info.context.loaders.project, self.project_id, Project.from_row)

    @strawberry.field
    async def parent(self, info: Info) -> Task | None:
        return await load_one(info.context.loaders.task, self.parent_id, Task.from_row)

    @strawberry.field(description="Parent, grandparent, ... up to the root, nearest first.")
    async def ancestors(self, info: Info) -> list[Task]:
        if self.parent_id is None:
            return []
        return [Task.from_row(row) for row in await info.context.loaders.ancestors.load(self.pk)]

    @strawberry.field
    async def subtasks(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
        order_by: TaskOrderField = TaskOrderField.CREATED_AT,
        direction: Direction = Direction.ASC,
    ) -> Connection[Task]:
        page = page_request(task_order(order_by, direction), first, after, last, before)
        return await load_connection(info.context, tasks.SUBTASKS, self.pk, page, Task.from_row)

    @strawberry.field
    async def assignee(self, info: Info) -> User | None:
        return await load_user(info, self.assignee_id)

    @strawberry.field
    async def created_by(self, info: Info) -> User | None:
        return await load_user(info, self.created_by_id)

    @strawberry.field(description="Comments, oldest first; deleted ones are left out.")
    async def comments(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Connection[Comment]:
        page = page_request(comments.OLDEST_FIRST, first, after, last, before)
        return await load_connection(
            info.context, comments.TASK_COMMENTS, self.pk, page, Comment.from_row, comments.live
        )

    @strawberry.field(description="The task's audit trail, newest first.")
    async def history(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Connection[AuditEntry]:
        page = page_request(audit.NEWEST_FIRST, first, after, last, before)
        where = audit.EntityTypeFilter("tasks")
        return await load_connection(
            info.context, audit.BY_ENTITY, self.pk, page, AuditEntry.reader(info.context), where
        )
