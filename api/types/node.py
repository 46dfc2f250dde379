"""The Relay Node interface and the enums shared by several types."""

from __future__ import annotations

from enum import Enum
from uuid import UUID

import strawberry

from api.ids import to_global_id
from db.tenancy import MemberRole


@strawberry.interface(description="An object with a global id: refetch it with `node(id:)`.")
class Node:
    pk: strawberry.Private[UUID]
    #: A plain field, computed with the object: a resolver per object costs more than the
    #: rest of the object's fields together.
    id: strawberry.ID = strawberry.field(description="Global id (opaque; stable across requests).")


def node_id(type_name: str, raw_id: UUID) -> strawberry.ID:
    return strawberry.ID(to_global_id(type_name, raw_id))


#: A member's role: ``db.tenancy.MemberRole``, the one definition of the roles and their order.
strawberry.enum(
    MemberRole,
    name="Role",
    description="A member's role; each includes the rights of those below it.",
)
Role = MemberRole


@strawberry.enum
class TaskStatus(Enum):
    TODO = "todo"
    IN_PROGRESS = "in_progress"
    BLOCKED = "blocked"
    DONE = "done"
    CANCELLED = "cancelled"


@strawberry.enum
class ProjectStatus(Enum):
    PLANNED = "planned"
    ACTIVE = "active"
    ON_HOLD = "on_hold"
    COMPLETED = "completed"


@strawberry.enum
class Direction(Enum):
    ASC = "asc"
    DESC = "desc"
