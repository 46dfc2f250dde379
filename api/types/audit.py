"""Audit log entries, as written by the database's triggers."""

from __future__ import annotations

import json
from datetime import datetime
from enum import Enum
from uuid import UUID

import asyncpg
import strawberry
from strawberry.scalars import JSON

from api.context import Info
from api.ids import to_global_id
from api.types.users import User, load_user


@strawberry.enum
class AuditEntityType(Enum):
    ORGANIZATION = "organizations"
    MEMBER = "organization_members"
    INVITATION = "organization_invitations"
    PROJECT = "projects"
    TASK = "tasks"
    COMMENT = "task_comments"


@strawberry.enum
class AuditAction(Enum):
    INSERT = "insert"
    UPDATE = "update"
    DELETE = "delete"


NODE_TYPE_OF = {
    "organizations": "Organization",
    "organization_members": "Member",
    "organization_invitations": "Invitation",
    "projects": "Project",
    "tasks": "Task",
    "task_comments": "Comment",
}


@strawberry.type(
    description="One change to one row, recorded by a trigger in the same transaction."
)
class AuditEntry:
    action: AuditAction
    entity_type: AuditEntityType
    changes: JSON = strawberry.field(
        description='{"before": {...}, "after": {...}}: changed columns only.'
    )
    request_id: str | None
    ip_address: str | None
    user_agent: str | None
    created_at: datetime
    pk: strawberry.Private[UUID]
    entity_pk: strawberry.Private[UUID]
    actor_id: strawberry.Private[UUID | None]

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> AuditEntry:
        changes = row["changes"]
        ip = row["ip_address"]
        return cls(
            pk=row["id"],
            action=AuditAction(row["action"]),
            entity_type=AuditEntityType(row["entity_type"]),
            changes=json.loads(changes) if isinstance(changes, str) else changes,
            request_id=row["request_id"],
            ip_address=str(ip) if ip is not None else None,
            user_agent=row["user_agent"],
            created_at=row["created_at"],
            entity_pk=row["entity_id"],
            actor_id=row["actor_id"],
        )

    @strawberry.field(description="Opaque, unique id of this entry.")
    def id(self) -> strawberry.ID:
        return strawberry.ID(to_global_id("AuditEntry", self.pk))

    @strawberry.field(
        description="Global id of the changed object (it may since have been deleted)."
    )
    def entity_id(self) -> strawberry.ID:
        return strawberry.ID(to_global_id(NODE_TYPE_OF[self.entity_type.value], self.entity_pk))

    @strawberry.field(description="Who made the change (null for system changes or deleted users).")
    async def actor(self, info: Info) -> User | None:
        return await load_user(info, self.actor_id)
