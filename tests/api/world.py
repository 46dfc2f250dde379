"""Two organizations, each with one user per role, a project, tasks and comments; sessions
with known tokens. Seeded through the server role and tenant transactions."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from uuid import UUID

from api.ids import to_global_id
from db import tables
from db.queries import users
from db.tenancy import ROLES as ROLES
from db.tenancy import TenantContext, request_transaction
from db.uuid7 import uuid7
from tests.seed import create_user


@dataclass
class Org:
    label: str
    id: UUID
    slug: str
    users: dict[str, UUID] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    emails: dict[str, str] = field(default_factory=dict)
    project_id: UUID = field(default_factory=uuid7)
    task_ids: list[UUID] = field(default_factory=list)
    comment_ids: list[UUID] = field(default_factory=list)

    def gid(self, kind: str, raw: UUID) -> str:
        return to_global_id(kind, raw)

    @property
    def project(self) -> str:
        return to_global_id("Project", self.project_id)

    def task(self, index: int = 0) -> str:
        return to_global_id("Task", self.task_ids[index])

    def user(self, role: str) -> str:
        return to_global_id("User", self.users[role])


async def session_token(user_id: UUID) -> str:
    token = secrets.token_urlsafe(32)
    async with request_transaction(TenantContext(user_id=user_id)) as (_, executor):
        await users.create_session(
            executor, user_id, token, datetime.now(UTC) + timedelta(hours=1), None, None
        )
    return token


async def seed_org(label: str, tasks: int = 3, comments_per_task: int = 2) -> Org:
    suffix = uuid7().hex[-10:]
    org = Org(label=label, id=uuid7(), slug=f"{label}-{suffix}")
    for role in ROLES:
        email = f"{role}-{org.slug}@example.test"
        org.emails[role] = email
        org.users[role] = await create_user(email, f"{role.title()} {label.upper()}")
        org.tokens[role] = await session_token(org.users[role])
    owner = org.users["owner"]
    context = TenantContext(organization_id=org.id, user_id=owner, role="owner")
    async with request_transaction(context):
        await tables.Organization.insert(
            tables.Organization(id=org.id, name=f"Org {label}", slug=org.slug)
        )
        await tables.OrganizationMember.insert(
            *[
                tables.OrganizationMember(organization_id=org.id, user_id=org.users[r], role=r)
                for r in ROLES
            ]
        )
        await tables.Project.insert(
            tables.Project(
                id=org.project_id, organization_id=org.id, name=f"Launch {label}", created_by=owner
            )
        )
    await add_tasks(org, tasks, comments_per_task)
    return org


async def add_tasks(org: Org, count: int, comments_per_task: int) -> None:
    member = org.users["member"]
    context = TenantContext(organization_id=org.id, user_id=member, role="member")
    async with request_transaction(context):
        rows = [
            tables.Task(
                id=uuid7(),
                organization_id=org.id,
                project_id=org.project_id,
                title=f"Task {label_index} of {org.label}",
                priority=label_index % 5,
                assignee_id=org.users[("owner", "admin", "member")[label_index % 3]],
                created_by=member,
            )
            for label_index in range(len(org.task_ids), len(org.task_ids) + count)
        ]
        if rows:
            await tables.Task.insert(*rows)
        comments = [
            tables.TaskComment(
                id=uuid7(),
                organization_id=org.id,
                task_id=row.id,
                author_id=member,
                content=f"Comment {j} on {row.title}",
            )
            for row in rows
            for j in range(comments_per_task)
        ]
        if comments:
            await tables.TaskComment.insert(*comments)
    org.task_ids += [row.id for row in rows]
    org.comment_ids += [c.id for c in comments]


async def add_fresh_member(org: Org, role: str = "viewer") -> tuple[UUID, str]:
    """A new user, made a member of ``org`` directly in the database."""
    email = f"fresh-{uuid7().hex[-12:]}@example.test"
    user_id = await create_user(email)
    context = TenantContext(organization_id=org.id, user_id=org.users["owner"], role="owner")
    async with request_transaction(context):
        await tables.OrganizationMember.insert(
            tables.OrganizationMember(organization_id=org.id, user_id=user_id, role=role)
        )
    return user_id, email
