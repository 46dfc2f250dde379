"""The schema refuses bad data with clear, named errors."""

from __future__ import annotations

import json

import asyncpg
import pytest

from db import tables
from db.tenancy import SET_CONTEXT_SQL, TenantContext, tenant_transaction
from db.uuid7 import uuid7
from tests.seed import Tenant, create_user


async def _move(tenant: Tenant, task_id: object, parent_id: object) -> None:
    async with tenant_transaction(tenant.context()) as tx:
        await tx.connection.execute(
            "UPDATE tasks SET parent_task_id = $2 WHERE id = $1", task_id, parent_id
        )


async def test_a_task_cannot_be_its_own_parent(tenant_a: Tenant, tenant_b: Tenant) -> None:
    with pytest.raises(asyncpg.CheckViolationError) as error:
        await _move(tenant_a, tenant_a.root_task_id, tenant_a.root_task_id)
    assert error.value.constraint_name == "tasks_not_own_parent"


async def test_a_task_cannot_move_under_its_descendant(tenant_a: Tenant, tenant_b: Tenant) -> None:
    grandchild = uuid7()
    async with tenant_transaction(tenant_a.context()):
        await tables.Task.insert(
            tables.Task(
                id=grandchild,
                organization_id=tenant_a.organization_id,
                project_id=tenant_a.project_id,
                parent_task_id=tenant_a.child_task_id,
                title="Grandchild",
            )
        )
    for descendant in (tenant_a.child_task_id, grandchild):
        with pytest.raises(asyncpg.CheckViolationError, match="own descendant") as error:
            await _move(tenant_a, tenant_a.root_task_id, descendant)
        assert error.value.constraint_name == "tasks_no_cycle"
    # A legal move still works, and the tree is unchanged by the refused ones.
    await _move(tenant_a, grandchild, tenant_a.root_task_id)
    async with tenant_transaction(tenant_a.context()):
        root = (
            await tables.Task.select(tables.Task.parent_task_id)
            .where(tables.Task.id == tenant_a.root_task_id)
            .first()
        )
    assert root == {"parent_task_id": None}


async def test_a_parent_must_be_in_the_same_project(tenant_a: Tenant) -> None:
    other_project = uuid7()
    async with tenant_transaction(tenant_a.context()):
        await tables.Project.insert(
            tables.Project(id=other_project, organization_id=tenant_a.organization_id, name="Other")
        )
    with pytest.raises(asyncpg.ForeignKeyViolationError, match="tasks_parent_fkey"):
        async with tenant_transaction(tenant_a.context()):
            await tables.Task.insert(
                tables.Task(
                    organization_id=tenant_a.organization_id,
                    project_id=other_project,
                    parent_task_id=tenant_a.root_task_id,
                    title="Orphan",
                )
            )


async def test_email_is_unique_whatever_its_case(tenant_a: Tenant) -> None:
    with pytest.raises(asyncpg.UniqueViolationError, match="users_email_lower_key"):
        await create_user(tenant_a.owner_email.upper())


@pytest.mark.parametrize(
    "email",
    [
        "no-at-sign.example.test",
        "two@@example.test",
        "pipe@exa|mple.test",
        "a@b",
        "a@b.c",
        "space in@example.test",
        ".lead@example.test",
        "dots..twice@example.test",
        "a@-x.test",
        "x" * 250 + "@example.test",
    ],
)
async def test_malformed_emails_are_rejected(email: str, pool: object) -> None:
    with pytest.raises(asyncpg.CheckViolationError, match="users_email_format"):
        await create_user(email)


@pytest.mark.parametrize("email", ["first.last+tag@sub.example.co", "o'brien@example.ie"])
async def test_ordinary_emails_are_accepted(email: str, pool: object) -> None:
    unique = f"{uuid7().hex[-6:]}{email}"
    assert await create_user(unique)


@pytest.mark.parametrize("slug", ["Upper", "-lead", "trail-", "under_score", "a" * 64, ""])
async def test_malformed_slugs_are_rejected(slug: str, pool: object) -> None:
    org_id = uuid7()
    with pytest.raises(asyncpg.CheckViolationError, match="organizations_slug_format"):
        async with tenant_transaction(TenantContext(organization_id=org_id, role="owner")):
            await tables.Organization.insert(tables.Organization(id=org_id, name="x", slug=slug))


@pytest.mark.parametrize(
    ("column", "value", "constraint"),
    [
        ("status", "'finished'", "tasks_status_domain"),
        ("priority", "9", "tasks_priority_domain"),
        ("title", "'   '", "tasks_title_present"),
    ],
)
async def test_task_domains_are_enforced(
    tenant_a: Tenant, column: str, value: str, constraint: str
) -> None:
    with pytest.raises(asyncpg.CheckViolationError) as error:
        async with tenant_transaction(tenant_a.context()) as tx:
            await tx.connection.execute(
                f"UPDATE tasks SET {column} = {value} WHERE id = $1", tenant_a.root_task_id
            )
    assert error.value.constraint_name == constraint


async def test_completed_at_follows_status(tenant_a: Tenant) -> None:
    async with tenant_transaction(tenant_a.context()) as tx:
        done = await tx.connection.fetchval(
            "UPDATE tasks SET status = 'done' WHERE id = $1 RETURNING completed_at",
            tenant_a.root_task_id,
        )
        reopened = await tx.connection.fetchval(
            "UPDATE tasks SET status = 'todo' WHERE id = $1 RETURNING completed_at",
            tenant_a.root_task_id,
        )
    assert done is not None
    assert reopened is None


async def test_the_check_holds_even_without_the_trigger(
    owner: asyncpg.Connection, tenant_a: Tenant
) -> None:
    transaction = owner.transaction()
    await transaction.start()
    try:
        await owner.execute("ALTER TABLE tasks DISABLE TRIGGER tasks_sync_completed_at")
        await owner.execute(*SET_CONTEXT(tenant_a))
        with pytest.raises(asyncpg.CheckViolationError, match="tasks_completed_at_matches_status"):
            await owner.execute(
                "UPDATE tasks SET status = 'done' WHERE id = $1", tenant_a.root_task_id
            )
    finally:
        await transaction.rollback()


def SET_CONTEXT(tenant: Tenant) -> tuple[str, ...]:
    return (SET_CONTEXT_SQL, *tenant.context().parameters())


async def test_the_assignee_must_be_a_member_of_the_tenant(
    tenant_a: Tenant, tenant_b: Tenant
) -> None:
    with pytest.raises(asyncpg.ForeignKeyViolationError, match="tasks_assignee_fkey"):
        async with tenant_transaction(tenant_a.context()) as tx:
            await tx.connection.execute(
                "UPDATE tasks SET assignee_id = $2 WHERE id = $1",
                tenant_a.root_task_id,
                tenant_b.member_id,
            )


async def test_removing_a_member_unassigns_their_tasks(tenant_a: Tenant, tenant_b: Tenant) -> None:
    async with tenant_transaction(tenant_a.context()) as tx:
        await tx.connection.execute(
            "DELETE FROM organization_members WHERE organization_id = $1 AND user_id = $2",
            tenant_a.organization_id,
            tenant_a.member_id,
        )
        assignee = await tx.connection.fetchval(
            "SELECT assignee_id FROM tasks WHERE id = $1", tenant_a.root_task_id
        )
        project = await tx.connection.fetchval("SELECT count(*) FROM projects")
    assert assignee is None
    assert project == 1


async def test_editing_a_comment_keeps_its_history(tenant_a: Tenant) -> None:
    context = tenant_a.context(user_id=tenant_a.member_id, role="member")
    async with tenant_transaction(context) as tx:
        for text in ("second version", "third version"):
            await tx.connection.execute(
                "UPDATE task_comments SET content = $2 WHERE id = $1", tenant_a.comment_id, text
            )
        row = await tx.connection.fetchrow(
            "SELECT content, content_history, edited_at, updated_at > created_at AS touched "
            "FROM task_comments WHERE id = $1",
            tenant_a.comment_id,
        )
    history = json.loads(row["content_history"])
    assert row["content"] == "third version"
    assert [h["content"] for h in history] == ["Comment a", "second version"]
    assert {h["replaced_by"] for h in history} == {str(tenant_a.member_id)}
    assert row["edited_at"] is not None
    assert row["touched"]
