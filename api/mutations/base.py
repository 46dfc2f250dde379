"""Running a mutation: in a savepoint, with expected failures turned into typed errors.

A mutation that fails marks the operation failed, and the transaction extension rolls the
whole operation back: a failed mutation never leaves a partial write.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import asyncpg

from api import errors
from api.auth import Tenant, Viewer
from api.context import Context, Info
from api.types.errors import (
    UnauthenticatedError,
    UserError,
    conflict,
    cycle,
    forbidden,
    not_found,
    validation,
)


class Failed(Exception):
    """Stop the mutation with these typed errors."""

    def __init__(self, *user_errors: UserError) -> None:
        super().__init__(user_errors[0].message if user_errors else "failed")
        self.errors = list(user_errors)


@dataclass
class Run:
    context: Context
    errors: list[UserError] = field(default_factory=list)

    @property
    def viewer(self) -> Viewer:
        return self.context.viewer

    def tenant(self, role: str) -> Tenant:
        return self.context.require_role(role)


#: constraint name -> (error factory, input field, message)
_CONSTRAINTS = {
    "users_email_lower_key": (conflict, "email", "a user with this e-mail already exists"),
    "users_email_format": (validation, "email", "not a valid e-mail address"),
    "users_display_name_present": (validation, "displayName", "must not be blank"),
    "organizations_slug_key": (conflict, "slug", "this slug is taken"),
    "organizations_slug_format": (
        validation,
        "slug",
        "use lower-case letters, digits and inner hyphens",
    ),
    "organizations_name_present": (validation, "name", "must not be blank"),
    "organization_members_user_key": (conflict, "email", "already a member of this organization"),
    # The database's last-owner rule (a deferred constraint trigger, migration 15).
    "organization_members_keep_an_owner": (
        conflict,
        "role",
        "the organization must keep an owner: make someone else owner first",
    ),
    "projects_name_present": (validation, "name", "must not be blank"),
    "tasks_no_cycle": (cycle, "parentId", "a task cannot be moved under its own descendant"),
    "tasks_not_own_parent": (cycle, "parentId", "a task cannot be its own parent"),
    "tasks_assignee_fkey": (
        validation,
        "assigneeId",
        "the assignee must be a member of this organization",
    ),
    "tasks_parent_fkey": (validation, "parentId", "the parent must be a task of the same project"),
    "tasks_project_fkey": (not_found, "projectId", "no such project"),
    "tasks_title_present": (validation, "title", "must not be blank"),
    "task_comments_task_fkey": (not_found, "taskId", "no such task"),
    "task_comments_content_present": (validation, "content", "must not be blank"),
}


def _database_error(exc: asyncpg.PostgresError) -> UserError:
    name = getattr(exc, "constraint_name", None)
    if name in _CONSTRAINTS:
        factory, path, message = _CONSTRAINTS[name]
        return factory(message, path)
    if isinstance(exc, asyncpg.InsufficientPrivilegeError):
        return forbidden("your role does not allow this change")
    if isinstance(exc, asyncpg.UniqueViolationError):
        return conflict("this conflicts with an existing record")
    return validation(str(exc).splitlines()[0])


@asynccontextmanager
async def mutation(info: Info) -> AsyncIterator[Run]:
    """``async with mutation(info) as run: ...; return Payload(...)`` then, after the block,
    ``return Payload(errors=run.errors)``: the block's exceptions become typed errors."""
    run = Run(info.context)
    try:
        async with info.context.db.savepoint():
            yield run
    except Failed as failure:
        run.errors = failure.errors
    except errors.Unauthenticated as exc:
        run.errors = [
            UnauthenticatedError(message=exc.message, code=errors.UNAUTHENTICATED, path=[])
        ]
    except errors.Forbidden as exc:
        run.errors = [forbidden(exc.message, (exc.extensions or {}).get("required"))]
    except errors.NotFound as exc:
        run.errors = [not_found(exc.message)]
    except errors.BadUserInput as exc:
        argument = (exc.extensions or {}).get("argument")
        run.errors = [validation(exc.message, *([argument] if argument else []))]
    except (
        asyncpg.IntegrityConstraintViolationError,
        asyncpg.InsufficientPrivilegeError,
        asyncpg.DataError,
    ) as exc:
        run.errors = [_database_error(exc)]
    if run.errors:
        info.context.failed = True
