"""Audit log entries, as written by the database's triggers."""

from __future__ import annotations

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
from api.registry import ENUM, IP, TIME, Column, ObjectSpec, Ref
from api.registry import JSON as JSON_VALUE
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


#: Privacy inside a tenant: an entry's network details (the ``network`` entries of
#: AUDIT_ENTRY) are for this role and higher only; below it they read null. The one
#: declaration both the resolvers (``AuditEntry.reader``) and the compiled queries
#: (``api/compiler``) follow; the database holds the same rule (``audit_entries``,
#: migration 15).
NETWORK_ROLE = "admin"
_NETWORK_NOTE = f" Null unless you are {NETWORK_ROLE} or owner."


def may_read_network(role: str | None) -> bool:
    """Whether a caller with this tenant role sees audit entries' network details."""
    return role is not None and ROLE_RANK[role] >= ROLE_RANK[NETWORK_ROLE]


def _tenant_role(tenant: Tenant | None) -> str | None:
    return tenant.role if tenant is not None else None


AUDIT_ENTRY = ObjectSpec(
    "AuditEntry",
    {
        "action": Column("action", ENUM, enum=AuditAction),
        "entityType": Column("entity_type", ENUM, enum=AuditEntityType),
        "changes": Column("changes", JSON_VALUE),
        "requestId": Column("request_id", network=True),
        "ipAddress": Column("ip_address", IP, network=True),
        "userAgent": Column("user_agent", network=True),
        "createdAt": Column("created_at", TIME),
        "actor": Ref("User", "users", "actor_id", attr="actor_id"),
    },
    # ``id`` and ``entityId`` are resolvers: the entity's global id names its type.
    node=False,
    private={"pk": "id", "entity_pk": "entity_id"},
)


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
        return cls(**AUDIT_ENTRY.values(row, network=network))

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
