"""Who is calling, and in which tenant: resolved once per request by the middleware."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from uuid import UUID

from db.tenancy import MemberRole

#: Each role's rank (``db.tenancy.MemberRole``: viewer 0 ... owner 3).
ROLE_RANK = {role.value: role.rank for role in MemberRole}


@dataclass(frozen=True, slots=True)
class Viewer:
    user_id: UUID
    email: str
    display_name: str
    session_id: UUID


@dataclass(frozen=True, slots=True)
class Tenant:
    organization_id: UUID
    slug: str
    name: str
    role: str

    def at_least(self, role: str) -> bool:
        return MemberRole(self.role).includes(role)


@dataclass(frozen=True, slots=True)
class Auth:
    """The request's identity. ``viewer`` None: anonymous; ``tenant`` None: no tenant named."""

    request_id: str
    client_ip: str | None
    user_agent: str | None
    viewer: Viewer | None = None
    tenant: Tenant | None = None


#: Also stored in the ASGI scope under SCOPE_KEY; the contextvar serves code without a scope.
current_auth: contextvars.ContextVar[Auth | None] = contextvars.ContextVar(
    "taskql_auth", default=None
)
SCOPE_KEY = "taskql.auth"
#: The request's open transaction (``db.tenancy.OpenTransaction``), begun by the middleware
#: with the caller authenticated; the operation runs and ends in it.
TRANSACTION_KEY = "taskql.transaction"
#: The replica's engine when the request's transaction runs on a read replica (absent: the
#: primary).
ENGINE_KEY = "taskql.engine"
