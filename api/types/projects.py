"""Projects and their tasks."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated
from uuid import UUID

import asyncpg
import strawberry

from api.context import Info
from api.errors import BadUserInput
from api.ids import decode_id
from api.loaders import load_connection, load_one
from api.pagination import Connection, page_request
from api.registry import ENUM, TIME, Column, ObjectSpec, Present, Ref
from api.types.node import Direction, Node, ProjectStatus, TaskStatus
from api.types.users import User, load_user
from db.queries import tasks
from db.sql import Order

if TYPE_CHECKING:
    from api.types.organizations import Organization
    from api.types.tasks import Task


@strawberry.enum
class TaskOrderField(Enum):
    CREATED_AT = "CREATED_AT"
    UPDATED_AT = "UPDATED_AT"
    PRIORITY = "PRIORITY"
    DUE_DATE = "DUE_DATE"


@strawberry.input(description="Which tasks to list; all given conditions must hold.")
class TaskFilter:
    status: list[TaskStatus] | None = None
    assignee: strawberry.ID | None = strawberry.field(default=None, description="A User id.")
    unassigned: bool = False
    priority_min: int | None = None
    priority_max: int | None = None
    due_before: datetime | None = None
    due_after: datetime | None = None
    root_only: bool = strawberry.field(default=False, description="Only tasks without a parent.")
    search: str | None = strawberry.field(
        default=None, description="Full-text search in title and description."
    )

    def to_db(self) -> tasks.TaskFilter:
        for bound in (self.priority_min, self.priority_max):
            if bound is not None and not 0 <= bound <= 4:
                raise BadUserInput("priority bounds must be between 0 and 4", argument="filter")
        return tasks.TaskFilter(
            statuses=tuple(s.value for s in self.status) if self.status is not None else None,
            assignee_id=decode_id(self.assignee, "User") if self.assignee else None,
            unassigned=self.unassigned,
            priority_min=self.priority_min,
            priority_max=self.priority_max,
            due_before=self.due_before,
            due_after=self.due_after,
            root_only=self.root_only,
            search=self.search or None,
        )


def task_order(field: TaskOrderField, direction: Direction) -> Order:
    base = tasks.ORDERS[field.value]
    return Order(base.key, base.type, descending=direction is Direction.DESC)


@strawberry.type
class TaskStatusCount:
    status: TaskStatus
    count: int


STATUS_COUNT = ObjectSpec(
    "TaskStatusCount",
    {"status": Column("status", ENUM, enum=TaskStatus), "count": Column("total")},
    node=False,
)

PROJECT = ObjectSpec(
    "Project",
    {
        "name": Column("name"),
        "description": Column("description"),
        "status": Column("status", ENUM, enum=ProjectStatus),
        "createdAt": Column("created_at", TIME),
        "updatedAt": Column("updated_at", TIME),
        "archivedAt": Column("archived_at", TIME),
        "archived": Present("archived_at"),
        "createdBy": Ref("User", "users", "created_by", attr="created_by_id"),
        "organization": Ref(
            "Organization", "organizations", "organization_id", attr="organization_id"
        ),
    },
)


@strawberry.type(description="A project of an organization: a tree of tasks.")
class Project(Node):
    name: str
    description: str | None
    status: ProjectStatus
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None
    archived: bool
    organization_id: strawberry.Private[UUID]
    created_by_id: strawberry.Private[UUID | None]

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Project:
        return cls(**PROJECT.values(row))

    @strawberry.field
    async def created_by(self, info: Info) -> User | None:
        return await load_user(info, self.created_by_id)

    @strawberry.field
    async def organization(
        self, info: Info
    ) -> Annotated[Organization, strawberry.lazy("api.types.organizations")] | None:
        from api.types.organizations import Organization

        return await load_one(
            info.context.loaders.organization, self.organization_id, Organization.from_row
        )

    @strawberry.field(description="The project's tasks, keyset-paginated in the chosen order.")
    async def tasks(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
        filter: TaskFilter | None = None,
        order_by: TaskOrderField = TaskOrderField.CREATED_AT,
        direction: Direction = Direction.ASC,
    ) -> Connection[Annotated[Task, strawberry.lazy("api.types.tasks")]]:
        from api.types.tasks import Task

        page = page_request(task_order(order_by, direction), first, after, last, before)
        where = (filter or TaskFilter()).to_db()
        return await load_connection(
            info.context, tasks.PROJECT_TASKS, self.pk, page, Task.from_row, where
        )

    @strawberry.field(
        description="How many tasks the project has in each status (all statuses listed)."
    )
    async def task_counts_by_status(self, info: Info) -> list[TaskStatusCount]:
        counts = await info.context.loaders.status_counts.load(self.pk)
        return [TaskStatusCount(status=s, count=counts.get(s.value, 0)) for s in TaskStatus]
