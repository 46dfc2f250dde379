"""Comments: members write them; only the author edits; the author or an admin deletes."""

from __future__ import annotations

from uuid import UUID

import strawberry

from api import validation
from api.context import Info
from api.ids import decode_id
from api.mutations.base import Failed, Run, mutation
from api.types.comments import Comment
from api.types.errors import UserError, forbidden, not_found
from api.types.errors import validation as invalid
from db.queries import comments

MAX_COMMENT = 10_000


@strawberry.input
class AddCommentInput:
    task_id: strawberry.ID
    content: str


@strawberry.input
class EditCommentInput:
    id: strawberry.ID
    content: str


@strawberry.input
class DeleteCommentInput:
    id: strawberry.ID


@strawberry.type
class CommentPayload:
    comment: Comment | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


def _check(content: str) -> None:
    if problem := validation.text_problem(content, MAX_COMMENT):
        raise Failed(invalid(problem, "content"))


async def _own_comment(run: Run, global_id: str, admin_may: bool) -> UUID:
    comment_id = decode_id(global_id, "Comment")
    row = await run.context.loaders.comment.load(comment_id)
    if row is None or row["deleted_at"] is not None:
        raise Failed(not_found("no such comment", "id"))
    if row["author_id"] != run.viewer.user_id and not (
        admin_may and run.context.tenant.at_least("admin")
    ):
        raise Failed(
            forbidden("only the author can do this" + (" (or an admin)" if admin_may else ""))
        )
    return comment_id


@strawberry.type
class CommentMutations:
    @strawberry.mutation(description="Comment on a task (members).")
    async def add_comment(self, info: Info, input: AddCommentInput) -> CommentPayload:
        async with mutation(info) as run:
            tenant = run.tenant("member")
            _check(input.content)
            row = await comments.add(
                info.context.db,
                tenant.organization_id,
                decode_id(input.task_id, "Task"),
                run.viewer.user_id,
                input.content,
            )
            return CommentPayload(comment=Comment.from_row(row))
        return CommentPayload(errors=run.errors)

    @strawberry.mutation(
        description="Edit your own comment; the previous text is kept in its history."
    )
    async def edit_comment(self, info: Info, input: EditCommentInput) -> CommentPayload:
        async with mutation(info) as run:
            run.tenant("member")
            _check(input.content)
            comment_id = await _own_comment(run, input.id, admin_may=False)
            row = await comments.edit(info.context.db, comment_id, input.content)
            if row is None:
                raise Failed(not_found("no such comment", "id"))
            return CommentPayload(comment=Comment.from_row(row))
        return CommentPayload(errors=run.errors)

    @strawberry.mutation(description="Delete a comment (soft): its author, or an admin.")
    async def delete_comment(self, info: Info, input: DeleteCommentInput) -> CommentPayload:
        async with mutation(info) as run:
            run.tenant("member")
            comment_id = await _own_comment(run, input.id, admin_may=True)
            row = await comments.soft_delete(info.context.db, comment_id)
            if row is None:
                raise Failed(not_found("no such comment", "id"))
            return CommentPayload(comment=Comment.from_row(row))
        return CommentPayload(errors=run.errors)
