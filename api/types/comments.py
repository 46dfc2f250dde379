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

#: Privacy inside a tenant: a soft-deleted comment is a tombstone for everyone (its id, task,
#: dates and deletedAt stay; these fields read null, history reads empty). GraphQL field ->
#: column; the one declaration ``Comment.from_row`` and the compiled queries
#: (``api/compiler.py``) both follow, on every path (node, task.comments, mutation payloads).
HIDDEN_WHEN_DELETED = {
    "content": "content",
    "author": "author_id",
    "history": "content_history",
}


@strawberry.type(description="An earlier version of a comment's text.")
class CommentVersion:
    content: str
    replaced_at: datetime
    replaced_by_id: strawberry.Private[UUID | None]

    @strawberry.field
    async def replaced_by(self, info: Info) -> User | None:
        return await load_user(info, self.replaced_by_id)


@strawberry.type(
    description="A comment on a task. Edits keep the earlier versions. A deleted comment is a "
    "tombstone: content and author null, history empty."
)
class Comment(Node):
    content: str | None = strawberry.field(description="The text; null once deleted.")
    created_at: datetime
    updated_at: datetime
    edited_at: datetime | None
    deleted_at: datetime | None
    task_id: strawberry.Private[UUID]
    author_id: strawberry.Private[UUID | None]
    raw_history: strawberry.Private[list[dict[str, Any]]]

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Comment:
        values = dict(row)
        if values["deleted_at"] is not None:
            for column in HIDDEN_WHEN_DELETED.values():
                values[column] = None
        history = values["content_history"]
        return cls(
            pk=values["id"],
            id=node_id("Comment", values["id"]),
            content=values["content"],
            created_at=values["created_at"],
            updated_at=values["updated_at"],
            edited_at=values["edited_at"],
            deleted_at=values["deleted_at"],
            task_id=values["task_id"],
            author_id=values["author_id"],
            raw_history=(json.loads(history) if isinstance(history, str) else history) or [],
        )

    @strawberry.field(description="Who wrote it; null once deleted (or if the user is gone).")
    async def author(self, info: Info) -> User | None:
        return await load_user(info, self.author_id)

    @strawberry.field
    async def task(self, info: Info) -> Annotated[Task, strawberry.lazy("api.types.tasks")] | None:
        from api.types.tasks import Task

        return await load_one(info.context.loaders.task, self.task_id, Task.from_row)

    @strawberry.field(description="Earlier versions, oldest first; empty once deleted.")
    def history(self) -> list[CommentVersion]:
        return [
            CommentVersion(
                content=v["content"],
                replaced_at=datetime.fromisoformat(v["replaced_at"]),
                replaced_by_id=UUID(v["replaced_by"]) if v.get("replaced_by") else None,
            )
            for v in self.raw_history
        ]
