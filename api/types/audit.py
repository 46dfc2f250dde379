"""Audit log entries, as written by the database's triggers."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from enum import Enum
from uuid import UUID

import asyncpg
import strawberry
from strawberry.scalars import JSON

from api.auth import ROLE_RANK, Tenant
from api.context import Context, Info
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


#: Privacy inside a tenant: an entry's network details (GraphQL field -> column) are for
#: this role and higher only; below it they read null. The one declaration both the
#: resolvers (``AuditEntry.reader``) and the compiled queries (``api/compiler.py``) follow;
#: the database holds the same rule (``audit_entries``, migration 15).
NETWORK_FIELDS = {"requestId": "request_id", "ipAddress": "ip_address", "userAgent": "user_agent"}
NETWORK_ROLE = "admin"
_NETWORK_NOTE = f" Null unless you are {NETWORK_ROLE} or owner."


def may_read_network(role: str | None) -> bool:
    """Whether a caller with this tenant role sees audit entries' network details."""
    return role is not None and ROLE_RANK[role] >= ROLE_RANK[NETWORK_ROLE]


def _tenant_role(tenant: Tenant | None) -> str | None:
    return tenant.role if tenant is not None else None


@strawberry.type(
    description="One change to one row, recorded by a trigger in the same transaction."
)
class AuditEntry:
    action: AuditAction
    entity_type: AuditEntityType
    changes: JSON = strawberry.field(
        description='{"before": {...}, "after": {...}}: changed columns only.'
    )
    request_id: str | None = strawberry.field(
        description="The request that made the change." + _NETWORK_NOTE
    )
    ip_address: str | None = strawberry.field(
        description="The client address of that request." + _NETWORK_NOTE
    )
    user_agent: str | None = strawberry.field(
        description="The client's User-Agent." + _NETWORK_NOTE
    )
    created_at: datetime
    pk: strawberry.Private[UUID]
    entity_pk: strawberry.Private[UUID]
    actor_id: strawberry.Private[UUID | None]

    @classmethod
    def reader(cls, context: Context) -> Callable[[asyncpg.Record], AuditEntry]:
        """``from_row`` for this request's caller: network details only if their role may."""
        network = may_read_network(_tenant_role(context.auth.tenant))
        return lambda row: cls.from_row(row, network=network)

    @classmethod
    def from_row(cls, row: asyncpg.Record, *, network: bool) -> AuditEntry:
        changes = row["changes"]
        ip = row["ip_address"] if network else None
        return cls(
            pk=row["id"],
            action=AuditAction(row["action"]),
            entity_type=AuditEntityType(row["entity_type"]),
            changes=json.loads(changes) if isinstance(changes, str) else changes,
            request_id=row["request_id"] if network else None,
            ip_address=str(ip) if ip is not None else None,
            user_agent=row["user_agent"] if network else None,
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
