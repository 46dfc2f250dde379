"""Comments on tasks."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

import asyncpg
import strawberry

from api.context import Info
from api.loaders import load_one
from api.registry import TIME, Column, ObjectSpec, Ref
from api.types.node import Node
from api.types.users import User, load_user

if TYPE_CHECKING:
    from api.types.tasks import Task

#: Privacy inside a tenant: a soft-deleted comment is a tombstone for everyone (its id, task,
#: dates and deletedAt stay; content and author read null, history reads empty): the
#: ``hidden_when_deleted`` entries, which ``Comment.from_row`` and the compiled queries
#: (``api/compiler``) both follow, on every path (node, task.comments, mutation payloads).
COMMENT = ObjectSpec(
    "Comment",
    {
        "content": Column("content", hidden_when_deleted=True),
        "createdAt": Column("created_at", TIME),
        "updatedAt": Column("updated_at", TIME),
        "editedAt": Column("edited_at", TIME),
        "deletedAt": Column("deleted_at", TIME),
        "author": Ref("User", "users", "author_id", attr="author_id", hidden_when_deleted=True),
        "task": Ref("Task", "tasks", "task_id", attr="task_id"),
    },
    deleted="deleted_at",
)


#: An element of a comment's ``content_history`` (written by the database's trigger
#: ``task_comments_keep_history``), read as a row of these columns.
COMMENT_VERSION = ObjectSpec(
    "CommentVersion",
    {
        "content": Column("content"),
        "replacedAt": Column("replaced_at", TIME),
        "replacedBy": Ref("User", "users", "replaced_by", attr="replaced_by_id"),
    },
    node=False,
)


def history_rows(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``content_history`` as rows of COMMENT_VERSION's columns, oldest first (times in
    UTC, as every time the API renders)."""
    return [
        {
            "content": v["content"],
            "replaced_at": datetime.fromisoformat(v["replaced_at"]).astimezone(UTC),
            "replaced_by": UUID(v["replaced_by"]) if v.get("replaced_by") else None,
        }
        for v in history
    ]


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
        history = row["content_history"] if row["deleted_at"] is None else None
        return cls(
            **COMMENT.values(row),
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
        return [CommentVersion(**COMMENT_VERSION.values(r)) for r in history_rows(self.raw_history)]
