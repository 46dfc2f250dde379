"""Seed a small tenant through the server role, exactly as the application writes."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from db import tables
from db.tenancy import TenantContext, tenant_transaction
from db.uuid7 import uuid7


@dataclass(frozen=True)
class Tenant:
    organization_id: UUID
    slug: str
    owner_id: UUID
    member_id: UUID
    owner_email: str
    project_id: UUID
    root_task_id: UUID
    child_task_id: UUID
    comment_id: UUID

    def context(
        self,
        *,
        user_id: UUID | None = None,
        role: str = "owner",
        request_id: str | None = None,
        client_ip: str | None = None,
        user_agent: str | None = None,
    ) -> TenantContext:
        return TenantContext(
            organization_id=self.organization_id,
            user_id=user_id or self.owner_id,
            role=role,
            request_id=request_id,
            client_ip=client_ip,
            user_agent=user_agent,
        )


async def create_user(email: str, name: str = "Test User") -> UUID:
    user_id = uuid7()
    async with tenant_transaction(TenantContext(user_id=user_id)):
        await tables.User.insert(
            tables.User(id=user_id, email=email, display_name=name, password_hash="x")
        )
    return user_id


async def seed_tenant(label: str) -> Tenant:
    suffix = uuid7().hex[-10:]
    slug = f"{label}-{suffix}"
    owner_email = f"owner-{slug}@example.test"
    owner_id = await create_user(owner_email, f"Owner {label}")
    member_id = await create_user(f"member-{slug}@example.test", f"Member {label}")
    org_id, project_id, root_id, child_id, comment_id = (uuid7() for _ in range(5))
    context = TenantContext(organization_id=org_id, user_id=owner_id, role="owner")
    async with tenant_transaction(context):
        await tables.Organization.insert(
            tables.Organization(id=org_id, name=f"Org {label}", slug=slug)
        )
        await tables.OrganizationMember.insert(
            tables.OrganizationMember(organization_id=org_id, user_id=owner_id, role="owner"),
            tables.OrganizationMember(organization_id=org_id, user_id=member_id, role="member"),
        )
        await tables.Project.insert(
            tables.Project(
                id=project_id, organization_id=org_id, name=f"Project {label}", created_by=owner_id
            )
        )
        await tables.Task.insert(
            tables.Task(
                id=root_id,
                organization_id=org_id,
                project_id=project_id,
                title=f"Root {label}",
                created_by=owner_id,
                assignee_id=member_id,
            ),
            tables.Task(
                id=child_id,
                organization_id=org_id,
                project_id=project_id,
                parent_task_id=root_id,
                title=f"Child {label}",
                created_by=owner_id,
            ),
        )
    member_context = TenantContext(organization_id=org_id, user_id=member_id, role="member")
    async with tenant_transaction(member_context):
        await tables.TaskComment.insert(
            tables.TaskComment(
                id=comment_id,
                organization_id=org_id,
                task_id=root_id,
                author_id=member_id,
                content=f"Comment {label}",
            )
        )
    return Tenant(
        organization_id=org_id,
        slug=slug,
        owner_id=owner_id,
        member_id=member_id,
        owner_email=owner_email,
        project_id=project_id,
        root_task_id=root_id,
        child_task_id=child_id,
        comment_id=comment_id,
    )
