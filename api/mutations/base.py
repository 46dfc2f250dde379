"""Running a mutation: in a savepoint when other mutations share its operation, with expected
failures turned into typed errors.

A mutation that fails marks the operation failed, and the transaction extension rolls the
whole operation back: a failed mutation never leaves a partial write. The payloads of the
operation's other mutations then say so (``rolled_back``): a client is never told that a
write happened that did not.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import asyncpg
from graphql import (
    FieldNode,
    FragmentSpreadNode,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLResolveInfo,
    InlineFragmentNode,
    SelectionSetNode,
    get_named_type,
)

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

_log = logging.getLogger("taskql.mutations")


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
    "organization_invitations_email_format": (validation, "email", "not a valid e-mail address"),
    "organization_invitations_pending_key": (
        conflict,
        "email",
        "this e-mail already has a pending invitation",
    ),
    "organization_invitations_answered": (conflict, "id", "this invitation was already answered"),
    # The database's last-owner rule (a deferred constraint trigger, migration 15).
    "organization_members_keep_an_owner": (
        conflict,
        "role",
        "the organization must keep an owner: make someone else owner first",
    ),
    "projects_name_present": (validation, "name", "must not be blank"),
    "tasks_no_cycle": (cycle, "parentId", "a task cannot be moved under its own descendant"),
    "tasks_max_depth": (
        validation,
        "parentId",
        "the task tree would be deeper than its limit (TASKQL_MAX_TASK_DEPTH)",
    ),
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
    "users_display_name_visible": (validation, "displayName", "must not be blank"),
    "organizations_name_visible": (validation, "name", "must not be blank"),
    "projects_name_visible": (validation, "name", "must not be blank"),
    "tasks_title_visible": (validation, "title", "must not be blank"),
    "task_comments_content_visible": (validation, "content", "must not be blank"),
}


#: SQLSTATE of a data exception -> what the client is told (never the driver's text).
_DATA_ERRORS = {
    "22001": "a text is longer than this field allows",
    "22003": "a number is out of range",
    "22007": "a date or time is malformed",
    "22008": "a date or time is out of range",
    "22021": "a text holds a character that cannot be stored",
    "22P02": "a value is malformed",
    "22P05": "a text holds a character that cannot be stored",
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
    state = getattr(exc, "sqlstate", None)
    # The driver's text can quote the input, name parameters and internals: log it only.
    _log.warning("mutation refused by the database: %s %s", state, str(exc).splitlines()[0])
    return validation(_DATA_ERRORS.get(state or "", "a value of this input was refused as invalid"))


@asynccontextmanager
async def mutation(info: Info) -> AsyncIterator[Run]:
    """``async with mutation(info) as run: ...; return Payload(...)`` then, after the block,
    ``return Payload(errors=run.errors)``: the block's exceptions become typed errors."""
    run = Run(info.context)
    try:
        if _alone(info):
            # Nothing runs after it in the transaction: a failure rolls the operation back
            # as a whole, so a savepoint would only cost two round trips.
            yield run
        else:
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
    except asyncpg.exceptions._base.DataError as exc:  # asyncpg could not encode a value
        _log.warning("mutation input refused by the driver: %s", str(exc).splitlines()[0])
        run.errors = [validation(_DATA_ERRORS["22P02"])]
    if run.errors:
        info.context.failed = True
    else:
        info.context.completed_mutations.append(info._raw_info)


def _alone(info: Info) -> bool:
    """Whether this mutation is its operation's only root selection (the common case): the
    savepoint lets the operation's later mutations run after a failed statement of this
    one (and report their own errors) before the whole operation is rolled back."""
    selections = info._raw_info.operation.selection_set.selections
    return len(selections) == 1 and isinstance(selections[0], FieldNode)


ResolveInfo: TypeAlias = GraphQLResolveInfo[Any]

ROLLED_BACK_MESSAGE = (
    "not saved: another mutation of this operation failed, so the whole operation was rolled back"
)


def rolled_back(data: dict[str, Any] | None, completed: list[ResolveInfo]) -> None:
    """Rewrite, in ``data``, the payload of every mutation that completed in an operation that
    was then rolled back: its objects become null (empty lists, ``false``) and its
    ``errors`` hold one RolledBackError, in the shape the client selected."""
    if data is None:
        return
    for info in completed:
        key = info.path.key
        if not isinstance(key, str) or data.get(key) is None:
            continue
        payload_type = get_named_type(info.return_type)
        assert isinstance(payload_type, GraphQLObjectType)
        data[key] = _payload(info, payload_type)


def _selected(
    info: ResolveInfo, selection_sets: list[SelectionSetNode], type_names: set[str]
) -> list[FieldNode]:
    """The fields of these selection sets that apply to ``type_names`` (fragments expanded)."""
    fields: list[FieldNode] = []
    for selection_set in selection_sets:
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                fields.append(selection)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                if condition is None or condition.name.value in type_names:
                    fields += _selected(info, [selection.selection_set], type_names)
            elif isinstance(selection, FragmentSpreadNode):
                fragment = info.fragments.get(selection.name.value)
                if fragment is not None and fragment.type_condition.name.value in type_names:
                    fields += _selected(info, [fragment.selection_set], type_names)
    return fields


def _payload(info: ResolveInfo, payload_type: GraphQLObjectType) -> dict[str, Any]:
    sets = [n.selection_set for n in info.field_nodes if n.selection_set is not None]
    rendered: dict[str, Any] = {}
    for node in _selected(info, sets, {payload_type.name}):
        key = node.alias.value if node.alias else node.name.value
        name = node.name.value
        if name == "__typename":
            rendered[key] = payload_type.name
        elif name == "errors":
            rendered[key] = [_rolled_back_error(info, node)]
        else:
            field_type = payload_type.fields[name].type
            if isinstance(field_type, GraphQLNonNull):
                inner = field_type.of_type
                rendered[key] = [] if isinstance(inner, GraphQLList) else False
            else:
                rendered[key] = None
    return rendered


def _rolled_back_error(info: ResolveInfo, node: FieldNode) -> dict[str, Any]:
    values = {
        "__typename": "RolledBackError",
        "message": ROLLED_BACK_MESSAGE,
        "code": errors.ROLLED_BACK,
        "path": [],
    }
    sets = [node.selection_set] if node.selection_set is not None else []
    return {
        (f.alias.value if f.alias else f.name.value): values.get(f.name.value)
        for f in _selected(info, sets, {"UserError", "RolledBackError"})
    }
