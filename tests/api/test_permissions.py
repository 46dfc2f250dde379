"""The permission matrix: every role against every tenant mutation. Roles below the one a
mutation needs get FORBIDDEN and change nothing; that role and those above it succeed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from api.ids import to_global_id
from tests.api.conftest import Api
from tests.api.test_queries import create_task
from tests.api.world import ROLES, Org, add_fresh_member
from tests.seed import create_user

Factory = Callable[[Api, Org, str], Awaitable[dict[str, Any]]]


async def fresh_task(api: Api, org: Org, role: str) -> dict[str, Any]:
    return {"id": await create_task(api, org, title=f"For {role}")}


async def fresh_member(api: Api, org: Org, role: str) -> dict[str, Any]:
    user_id, _ = await add_fresh_member(org, "viewer")
    return {"userId": to_global_id("User", user_id), "role": "MEMBER"}


async def fresh_user_email(api: Api, org: Org, role: str) -> dict[str, Any]:
    email = f"invitee-{role}-{org.slug}@example.test"
    await create_user(email)
    return {"email": email, "role": "VIEWER"}


async def fresh_invitation(api: Api, org: Org, role: str) -> dict[str, Any]:
    email = f"revoked-{role}-{org.slug}@example.test"
    body = await api(
        "mutation($e: String!) { inviteMember(input: {email: $e}) { invitation { id } } }",
        {"e": email},
        as_=(org, "admin"),
    )
    return {"id": body["data"]["inviteMember"]["invitation"]["id"]}


async def members_comment(api: Api, org: Org, role: str) -> dict[str, Any]:
    body = await api(
        'mutation($t: ID!) { addComment(input: {taskId: $t, content: "by member"}) { comment { id } } }',
        {"t": org.task(0)},
        as_=(org, "member"),
    )
    return {"id": body["data"]["addComment"]["comment"]["id"]}


async def own_comment(api: Api, org: Org, role: str) -> dict[str, Any]:
    author = role if role != "viewer" else "member"
    body = await api(
        'mutation($t: ID!) { addComment(input: {taskId: $t, content: "mine"}) { comment { id } } }',
        {"t": org.task(0)},
        as_=(org, author),
    )
    return {"id": body["data"]["addComment"]["comment"]["id"], "content": "edited"}


async def fresh_project(api: Api, org: Org, role: str) -> dict[str, Any]:
    body = await api(
        'mutation { createProject(input: {name: "P"}) { project { id } } }', as_=(org, "admin")
    )
    return {"id": body["data"]["createProject"]["project"]["id"]}


def constant(value: dict[str, Any]) -> Factory:
    async def make(api: Api, org: Org, role: str) -> dict[str, Any]:
        return {k: (v(org) if callable(v) else v) for k, v in value.items()}

    return make


# mutation -> (minimal role, input factory)
MATRIX: dict[str, tuple[str, Factory]] = {
    "updateOrganization": ("owner", constant({"name": "Renamed"})),
    "inviteMember": ("admin", fresh_user_email),
    "revokeInvitation": ("admin", fresh_invitation),
    "changeMemberRole": ("admin", fresh_member),
    "removeMember": ("admin", lambda api, org, role: _only_user(fresh_member(api, org, role))),
    "createProject": ("admin", constant({"name": "New project"})),
    "updateProject": ("admin", constant({"id": lambda org: org.project, "name": "Renamed"})),
    "archiveProject": ("admin", fresh_project),
    "unarchiveProject": ("admin", fresh_project),
    "createTask": ("member", constant({"projectId": lambda org: org.project, "title": "T"})),
    "createTasks": (
        "member",
        constant({"projectId": lambda org: org.project, "tasks": [{"title": "T"}]}),
    ),
    "updateTask": ("member", constant({"id": lambda org: org.task(0), "title": "Renamed"})),
    "moveTask": ("member", lambda api, org, role: _with(fresh_task(api, org, role), parentId=None)),
    "assignTask": ("member", constant({"id": lambda org: org.task(1), "assigneeId": None})),
    "completeTask": ("member", fresh_task),
    "reopenTask": ("member", fresh_task),
    "deleteTask": ("member", fresh_task),
    "addComment": ("member", constant({"taskId": lambda org: org.task(0), "content": "hi"})),
    "editComment": ("member", own_comment),
    "deleteComment": ("member", members_comment),
}


async def _only_user(made: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    return {"userId": (await made)["userId"]}


async def _with(made: Awaitable[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {**(await made), **extra}


@pytest.mark.parametrize("name", sorted(MATRIX))
async def test_role_matrix(api: Api, org_a: Org, org_b: Org, name: str) -> None:
    minimal, make_input = MATRIX[name]
    input_type = name[0].upper() + name[1:] + "Input"
    outcomes = {}
    for role in ROLES:
        variables = {"input": await make_input(api, org_a, role)}
        body = await api(
            f"mutation($input: {input_type}!) {{ {name}(input: $input) {{ errors {{ __typename code }} }} }}",
            variables,
            as_=(org_a, role),
        )
        assert "errors" not in body, body
        errors = body["data"][name]["errors"]
        outcomes[role] = errors[0]["code"] if errors else "OK"
    rank = ROLES.index(minimal)  # ROLES runs owner, admin, member, viewer
    expected = {role: ("OK" if ROLES.index(role) <= rank else "FORBIDDEN") for role in ROLES}
    assert outcomes == expected


async def test_forbidden_changes_nothing(api: Api, org_a: Org) -> None:
    body = await api(
        'mutation($id: ID!) { updateTask(input: {id: $id, title: "viewer was here"}) { task { title } errors { code } } }',
        {"id": org_a.task(0)},
        as_=(org_a, "viewer"),
    )
    assert body["data"]["updateTask"] == {"task": None, "errors": [{"code": "FORBIDDEN"}]}
    title = await api(
        "query($id: ID!) { task(id: $id) { title } }", {"id": org_a.task(0)}, as_=(org_a, "viewer")
    )
    assert title["data"]["task"]["title"] == "Task 0 of a"


async def test_row_level_security_enforces_roles_without_the_api(org_a: Org) -> None:
    """The database refuses a viewer's write even if the API's check were skipped."""
    import asyncpg

    from db.tenancy import TenantContext, request_transaction

    viewer = TenantContext(organization_id=org_a.id, user_id=org_a.users["viewer"], role="viewer")
    async with request_transaction(viewer) as (_, executor):
        # Restrictive USING clauses hide the rows from the write: nothing is updated.
        updated = await executor.execute(
            "UPDATE tasks SET title = 'sneaky' WHERE id = $1", org_a.task_ids[0]
        )
        deleted = await executor.execute("DELETE FROM tasks WHERE id = $1", org_a.task_ids[0])
    assert (updated, deleted) == ("UPDATE 0", "DELETE 0")
    # WITH CHECK clauses reject new rows outright.
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        async with request_transaction(viewer) as (_, executor):
            await executor.execute(
                "INSERT INTO tasks (organization_id, project_id, title) VALUES ($1, $2, 'sneaky')",
                org_a.id,
                org_a.project_id,
            )
    admin = TenantContext(organization_id=org_a.id, user_id=org_a.users["admin"], role="admin")
    async with request_transaction(admin) as (_, executor):
        demoted = await executor.execute(
            "UPDATE organization_members SET role = 'member' WHERE user_id = $1",
            org_a.users["owner"],
        )
    assert demoted == "UPDATE 0"
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        async with request_transaction(admin) as (_, executor):
            await executor.execute(
                "UPDATE organization_members SET role = 'owner' WHERE user_id = $1",
                org_a.users["member"],
            )
