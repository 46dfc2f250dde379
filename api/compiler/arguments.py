"""The arguments and input fields the compiler reads, and their values as the resolvers
read them (defaults, enums, page requests)."""

from __future__ import annotations

from typing import Any

from api.compiler.plans import (
    Unsupported,
)
from api.pagination import page_request
from api.types.node import Direction, TaskStatus
from api.types.projects import TaskFilter, TaskOrderField, task_order
from db.sql import Order, Page

RELAY_ARGUMENTS = frozenset({"first", "after", "last", "before"})
ARGUMENTS: dict[tuple[str, str], frozenset[str]] = {
    ("Query", "organization"): frozenset({"id", "slug"}),
    ("Query", "project"): frozenset({"id"}),
    ("Query", "task"): frozenset({"id"}),
    ("Query", "node"): frozenset({"id"}),
    ("Query", "search"): frozenset({"text", "first", "after"}),
    ("Query", "auditLog"): frozenset({"entityType", "entityId", "first", "after"}),
    ("Viewer", "memberships"): RELAY_ARGUMENTS,
    ("Organization", "members"): RELAY_ARGUMENTS,
    ("Organization", "projects"): RELAY_ARGUMENTS | {"filter", "orderBy", "direction"},
    ("Project", "tasks"): RELAY_ARGUMENTS | {"filter", "orderBy", "direction"},
    ("Task", "subtasks"): RELAY_ARGUMENTS | {"orderBy", "direction"},
    ("Task", "comments"): RELAY_ARGUMENTS,
    ("Task", "history"): RELAY_ARGUMENTS,
}
#: The fields of the input objects the renderers read (``task_filter``, ``_projects``).
INPUT_FIELDS: dict[str, frozenset[str]] = {
    "TaskFilter": frozenset(
        {
            "status",
            "assignee",
            "unassigned",
            "priorityMin",
            "priorityMax",
            "dueBefore",
            "dueAfter",
            "rootOnly",
            "search",
        }
    ),
    "ProjectFilter": frozenset({"status", "includeArchived", "search"}),
}
#: The only directives a compiled selection may carry.
DIRECTIVES = frozenset({"skip", "include"})


def page_of(order: Order, args: dict[str, Any]) -> Page:
    """The Relay page arguments, validated exactly as the resolvers do (their errors)."""
    return page_request(
        order, args.get("first"), args.get("after"), args.get("last"), args.get("before")
    )


def task_order_of(args: dict[str, Any]) -> Order:
    return task_order(
        member(TaskOrderField, args.get("orderBy"), TaskOrderField.CREATED_AT),
        member(Direction, args.get("direction"), Direction.ASC),
    )


def member(enum: Any, value: Any, default: Any) -> Any:
    if value is None:
        return default
    if isinstance(value, enum):
        return value
    return enum[value]


def handled(input_type: str, given: dict[str, Any]) -> dict[str, Any]:
    """``given`` if the renderers read each of its fields (else the resolvers answer)."""
    if not set(given) <= INPUT_FIELDS[input_type]:
        raise Unsupported(f"a field of {input_type} the compiler does not read")
    return given


def task_filter(given: dict[str, Any] | None) -> TaskFilter:
    if not given:
        return TaskFilter()
    handled("TaskFilter", given)
    statuses = given.get("status")
    return TaskFilter(
        status=[member(TaskStatus, s, None) for s in statuses] if statuses is not None else None,
        assignee=given.get("assignee"),
        unassigned=bool(given.get("unassigned", False)),
        priority_min=given.get("priorityMin"),
        priority_max=given.get("priorityMax"),
        due_before=given.get("dueBefore"),
        due_after=given.get("dueAfter"),
        root_only=bool(given.get("rootOnly", False)),
        search=given.get("search"),
    )
