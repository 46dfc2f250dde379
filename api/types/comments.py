"""Comments on tasks."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

import asyncpg
import strawberry

from api.context import Info
from api.loaders import load_one
from api.types.node import Node, node_id
from api.types.users import User, load_user

if TYPE_CHECKING:
    from api.types.tasks import Task


@strawberry.type(description="An earlier version of a comment's text.")
class CommentVersion:
    content: str
    replaced_at: datetime
    replaced_by_id: strawberry.Private[UUID | None]

    @strawberry.field
    async def replaced_by(self, info: Info) -> User | None:
        return await load_user(info, self.replaced_by_id)


@strawberry.type(description="A comment on a task. Edits keep the earlier versions.")
class Comment(Node):
    content: str
    created_at: datetime
    updated_at: datetime
    edited_at: datetime | None
    deleted_at: datetime | None
    task_id: strawberry.Private[UUID]
    author_id: strawberry.Private[UUID | None]
    raw_history: strawberry.Private[list[dict[str, Any]]]

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Comment:
        history = row["content_history"]
        return cls(
            pk=row["id"],
            id=node_id("Comment", row["id"]),
            content=row["content"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            edited_at=row["edited_at"],
            deleted_at=row["deleted_at"],
            task_id=row["task_id"],
            author_id=row["author_id"],
            raw_history=json.loads(history) if isinstance(history, str) else history,
        )

    @strawberry.field
    async def author(self, info: Info) -> User | None:
        return await load_user(info, self.author_id)

    @strawberry.field
    async def task(self, info: Info) -> Annotated[Task, strawberry.lazy("api.types.tasks")] | None:
        from api.types.tasks import Task

        return await load_one(info.context.loaders.task, self.task_id, Task.from_row)

    @strawberry.field(description="Earlier versions, oldest first.")
    def history(self) -> list[CommentVersion]:
        return [
            CommentVersion(
                content=v["content"],
                replaced_at=datetime.fromisoformat(v["replaced_at"]),
                replaced_by_id=UUID(v["replaced_by"]) if v.get("replaced_by") else None,
            )
            for v in self.raw_history
        ]
