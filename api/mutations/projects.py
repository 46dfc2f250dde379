"""Projects: created, changed and archived by admins."""

from __future__ import annotations

import strawberry

from api import validation
from api.context import Info
from api.ids import decode_id
from api.mutations.base import Failed, mutation
from api.types.errors import UserError, not_found
from api.types.errors import validation as invalid
from api.types.node import ProjectStatus
from api.types.projects import Project
from db.queries import projects


@strawberry.input
class CreateProjectInput:
    name: str
    description: str | None = None
    status: ProjectStatus = ProjectStatus.ACTIVE


@strawberry.input
class UpdateProjectInput:
    id: strawberry.ID
    name: str | None = None
    description: str | None = strawberry.field(
        default=strawberry.UNSET, description="null clears it."
    )
    status: ProjectStatus | None = None


@strawberry.input
class ArchiveProjectInput:
    id: strawberry.ID


@strawberry.input
class UnarchiveProjectInput:
    id: strawberry.ID


@strawberry.type
class ProjectPayload:
    project: Project | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


def _check(name: str | None, description: str | None) -> None:
    problems = []
    if name is not None and (p := validation.text_problem(name, 200)):
        problems.append(invalid(p, "name"))
    if description is not None and len(description) > 10_000:
        problems.append(invalid("must be at most 10000 characters", "description"))
    if problems:
        raise Failed(*problems)


@strawberry.type
class ProjectMutations:
    @strawberry.mutation(description="Create a project (admins).")
    async def create_project(self, info: Info, input: CreateProjectInput) -> ProjectPayload:
        async with mutation(info) as run:
            tenant = run.tenant("admin")
            _check(input.name, input.description)
            row = await projects.create(
                info.context.db,
                tenant.organization_id,
                input.name.strip(),
                input.description or None,
                input.status.value,
                run.viewer.user_id,
            )
            return ProjectPayload(project=Project.from_row(row))
        return ProjectPayload(errors=run.errors)

    @strawberry.mutation(description="Change a project's name, description or status (admins).")
    async def update_project(self, info: Info, input: UpdateProjectInput) -> ProjectPayload:
        async with mutation(info) as run:
            run.tenant("admin")
            project_id = decode_id(input.id, "Project")
            description = None if input.description is strawberry.UNSET else input.description
            _check(input.name, description)
            row = await projects.update(
                info.context.db,
                project_id,
                input.name.strip() if input.name else None,
                description,
                input.description is None,
                input.status.value if input.status else None,
            )
            if row is None:
                raise Failed(not_found("no such project", "id"))
            return ProjectPayload(project=Project.from_row(row))
        return ProjectPayload(errors=run.errors)

    @strawberry.mutation(
        description="Archive a project: hidden from lists, kept with its tasks (admins)."
    )
    async def archive_project(self, info: Info, input: ArchiveProjectInput) -> ProjectPayload:
        return await _set_archived(info, input, archived=True)

    @strawberry.mutation(description="Bring an archived project back (admins).")
    async def unarchive_project(self, info: Info, input: UnarchiveProjectInput) -> ProjectPayload:
        return await _set_archived(info, input, archived=False)


async def _set_archived(
    info: Info, input: ArchiveProjectInput | UnarchiveProjectInput, archived: bool
) -> ProjectPayload:
    async with mutation(info) as run:
        run.tenant("admin")
        row = await projects.set_archived(info.context.db, decode_id(input.id, "Project"), archived)
        if row is None:
            raise Failed(not_found("no such project", "id"))
        return ProjectPayload(project=Project.from_row(row))
    return ProjectPayload(errors=run.errors)
