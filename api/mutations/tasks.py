"""Tasks: written by members (and above); viewers only read."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import strawberry

from api import validation
from api.context import Info
from api.ids import decode_id
from api.mutations.base import Failed, Run, mutation
from api.types.errors import UserError, not_found
from api.types.errors import validation as invalid
from api.types.node import TaskStatus
from api.types.tasks import Task
from db.queries import tasks
from db.uuid7 import uuid7

MAX_BULK = validation.MAX_BULK_TASKS


@strawberry.input
class CreateTaskInput:
    project_id: strawberry.ID
    title: str
    description: str | None = None
    parent_id: strawberry.ID | None = strawberry.field(
        default=None, description="Omit for a root task."
    )
    status: TaskStatus = TaskStatus.TODO
    priority: int = 0
    assignee_id: strawberry.ID | None = strawberry.field(
        default=None, description="A member's User id."
    )
    due_date: datetime | None = None


@strawberry.input(description="One task of a bulk creation.")
class BulkTaskInput:
    title: str
    description: str | None = None
    parent_id: strawberry.ID | None = strawberry.field(
        default=None, description="An existing task."
    )
    parent_index: int | None = strawberry.field(
        default=None, description="Position of an earlier task of this batch to be the parent."
    )
    status: TaskStatus = TaskStatus.TODO
    priority: int = 0
    assignee_id: strawberry.ID | None = None
    due_date: datetime | None = None


@strawberry.input
class CreateTasksInput:
    project_id: strawberry.ID
    tasks: list[BulkTaskInput] = strawberry.field(
        description=f"1 to {MAX_BULK} tasks, created all or none."
    )


@strawberry.input
class UpdateTaskInput:
    id: strawberry.ID
    title: str | None = None
    description: str | None = strawberry.field(
        default=strawberry.UNSET, description="null clears it."
    )
    status: TaskStatus | None = None
    priority: int | None = None
    due_date: datetime | None = strawberry.field(
        default=strawberry.UNSET, description="null clears it."
    )


@strawberry.input
class MoveTaskInput:
    id: strawberry.ID
    parent_id: strawberry.ID | None = strawberry.field(
        description="The new parent; null makes it a root task."
    )


@strawberry.input
class AssignTaskInput:
    id: strawberry.ID
    assignee_id: strawberry.ID | None = strawberry.field(
        description="A member's User id; null unassigns."
    )


@strawberry.input
class CompleteTaskInput:
    id: strawberry.ID


@strawberry.input
class ReopenTaskInput:
    id: strawberry.ID


@strawberry.input
class DeleteTaskInput:
    id: strawberry.ID


@strawberry.type
class TaskPayload:
    task: Task | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class CreateTasksPayload:
    tasks: list[Task] = strawberry.field(default_factory=list)
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class DeleteTaskPayload:
    deleted_task_id: strawberry.ID | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


def _problems(
    title: str | None, description: str | None, priority: int | None, *path: str
) -> list[UserError]:
    problems: list[UserError] = []
    if title is not None and (p := validation.text_problem(title, 500)):
        problems.append(invalid(p, *path, "title"))
    if description is not None and len(description) > 20_000:
        problems.append(invalid("must be at most 20000 characters", *path, "description"))
    if priority is not None and not 0 <= priority <= 4:
        problems.append(invalid("must be between 0 (none) and 4 (urgent)", *path, "priority"))
    return problems


def _optional_id(value: str | None, kind: str) -> UUID | None:
    return decode_id(value, kind) if value else None


async def _updated(run: Run, row: Any) -> TaskPayload:
    if row is None:
        raise Failed(not_found("no such task", "id"))
    run.context.loaders.prime(run.context.loaders.task, row)
    return TaskPayload(task=Task.from_row(row))


async def _set_status(info: Info, task_id: str, status: str) -> TaskPayload:
    """completeTask and reopenTask: completed_at follows the status (database trigger)."""
    async with mutation(info) as run:
        run.tenant("member")
        row = await tasks.update(info.context.db, decode_id(task_id, "Task"), status=status)
        return await _updated(run, row)
    return TaskPayload(errors=run.errors)


@strawberry.type
class TaskMutations:
    @strawberry.mutation(description="Create a task, optionally under a parent task (members).")
    async def create_task(self, info: Info, input: CreateTaskInput) -> TaskPayload:
        async with mutation(info) as run:
            tenant = run.tenant("member")
            if problems := _problems(input.title, input.description, input.priority):
                raise Failed(*problems)
            new = tasks.NewTask(
                id=uuid7(),
                project_id=decode_id(input.project_id, "Project"),
                title=input.title.strip(),
                description=input.description,
                parent_task_id=_optional_id(input.parent_id, "Task"),
                status=input.status.value,
                priority=input.priority,
                assignee_id=_optional_id(input.assignee_id, "User"),
                due_date=input.due_date,
            )
            rows = await tasks.create_many(
                info.context.db, tenant.organization_id, run.viewer.user_id, [new]
            )
            return TaskPayload(task=Task.from_row(rows[0]))
        return TaskPayload(errors=run.errors)

    @strawberry.mutation(
        description=f"Create up to {MAX_BULK} tasks in one statement, all or none (members)."
    )
    async def create_tasks(self, info: Info, input: CreateTasksInput) -> CreateTasksPayload:
        async with mutation(info) as run:
            tenant = run.tenant("member")
            if not 1 <= len(input.tasks) <= MAX_BULK:
                raise Failed(invalid(f"give 1 to {MAX_BULK} tasks", "tasks"))
            project_id = decode_id(input.project_id, "Project")
            ids = [uuid7() for _ in input.tasks]
            problems: list[UserError] = []
            batch = []
            for index, item in enumerate(input.tasks):
                path = ("tasks", str(index))
                problems += _problems(item.title, item.description, item.priority, *path)
                parent = _optional_id(item.parent_id, "Task")
                if item.parent_index is not None:
                    if item.parent_id is not None or not 0 <= item.parent_index < index:
                        problems.append(
                            invalid("must name an earlier task of this batch", *path, "parentIndex")
                        )
                        continue
                    parent = ids[item.parent_index]
                batch.append(
                    tasks.NewTask(
                        id=ids[index],
                        project_id=project_id,
                        title=item.title.strip(),
                        description=item.description,
                        parent_task_id=parent,
                        status=item.status.value,
                        priority=item.priority,
                        assignee_id=_optional_id(item.assignee_id, "User"),
                        due_date=item.due_date,
                    )
                )
            if problems:
                raise Failed(*problems)
            rows = await tasks.create_many(
                info.context.db, tenant.organization_id, run.viewer.user_id, batch
            )
            return CreateTasksPayload(tasks=[Task.from_row(row) for row in rows])
        return CreateTasksPayload(errors=run.errors)

    @strawberry.mutation(description="Change a task's fields (members).")
    async def update_task(self, info: Info, input: UpdateTaskInput) -> TaskPayload:
        async with mutation(info) as run:
            run.tenant("member")
            description = None if input.description is strawberry.UNSET else input.description
            if problems := _problems(input.title, description, input.priority):
                raise Failed(*problems)
            due_date = None if input.due_date is strawberry.UNSET else input.due_date
            row = await tasks.update(
                info.context.db,
                decode_id(input.id, "Task"),
                title=input.title.strip() if input.title is not None else None,
                description=description,
                clear_description=input.description is None,
                status=input.status.value if input.status else None,
                priority=input.priority,
                due_date=due_date,
                clear_due_date=input.due_date is None,
            )
            return await _updated(run, row)
        return TaskPayload(errors=run.errors)

    @strawberry.mutation(
        description="Move a task under another parent of its project, or to the root (members)."
    )
    async def move_task(self, info: Info, input: MoveTaskInput) -> TaskPayload:
        async with mutation(info) as run:
            run.tenant("member")
            parent = _optional_id(input.parent_id, "Task")
            if parent is not None and await info.context.loaders.task.load(parent) is None:
                raise Failed(not_found("no such parent task", "parentId"))
            row = await tasks.move(info.context.db, decode_id(input.id, "Task"), parent)
            return await _updated(run, row)
        return TaskPayload(errors=run.errors)

    @strawberry.mutation(
        description="Assign a task to a member of the organization, or unassign it (members)."
    )
    async def assign_task(self, info: Info, input: AssignTaskInput) -> TaskPayload:
        async with mutation(info) as run:
            run.tenant("member")
            row = await tasks.assign(
                info.context.db,
                decode_id(input.id, "Task"),
                _optional_id(input.assignee_id, "User"),
            )
            return await _updated(run, row)
        return TaskPayload(errors=run.errors)

    @strawberry.mutation(description="Mark a task done (members).")
    async def complete_task(self, info: Info, input: CompleteTaskInput) -> TaskPayload:
        return await _set_status(info, input.id, "done")

    @strawberry.mutation(description="Reopen a done or cancelled task (members).")
    async def reopen_task(self, info: Info, input: ReopenTaskInput) -> TaskPayload:
        return await _set_status(info, input.id, "todo")

    @strawberry.mutation(description="Delete a task with its subtasks and comments (members).")
    async def delete_task(self, info: Info, input: DeleteTaskInput) -> DeleteTaskPayload:
        async with mutation(info) as run:
            run.tenant("member")
            if not await tasks.delete(info.context.db, decode_id(input.id, "Task")):
                raise Failed(not_found("no such task", "id"))
            return DeleteTaskPayload(deleted_task_id=input.id)
        return DeleteTaskPayload(errors=run.errors)
