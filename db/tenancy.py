"""Tenant context: one transaction whose first statement sets who is acting, for whom.

Every setting is transaction-local (``set_config(..., true)``): it ends with the
transaction, so a pooled connection never carries one request's tenant into the next.
Row-level security policies and the audit trigger read these settings.
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from uuid import UUID

from db.engine import DB, Engine, Transaction
from db.executor import Executor

ROLES = ("owner", "admin", "member", "viewer")

#: One round trip: all settings in one statement, bound as parameters (never formatted).
SET_CONTEXT_SQL = """
SELECT set_config('app.organization_id', $1, true),
       set_config('app.user_id', $2, true),
       set_config('app.role', $3, true),
       set_config('app.request_id', $4, true),
       set_config('app.client_ip', $5, true),
       set_config('app.user_agent', $6, true),
       CASE WHEN $7 <> '' THEN set_config('statement_timeout', $7, true) END
"""


@dataclass(frozen=True, slots=True)
class TenantContext:
    """Who acts (user, role) in which tenant, and the request's trace for the audit log."""

    organization_id: UUID | None = None
    user_id: UUID | None = None
    role: str | None = None
    request_id: str | None = None
    client_ip: str | None = None
    user_agent: str | None = None
    #: Overrides the connection's statement_timeout for this transaction only.
    statement_timeout_ms: int | None = None

    def __post_init__(self) -> None:
        if self.role is not None and self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r}")
        if self.client_ip is not None:
            # The audit trigger casts it to inet: a malformed value must fail here, not there.
            ipaddress.ip_address(self.client_ip)

    def parameters(self) -> tuple[str, ...]:
        def text(value: object | None) -> str:
            return "" if value is None else str(value)

        return (
            text(self.organization_id),
            text(self.user_id),
            text(self.role),
            text(self.request_id),
            text(self.client_ip),
            text(self.user_agent)[:512],
            text(self.statement_timeout_ms),
        )


@asynccontextmanager
async def tenant_transaction(
    context: TenantContext, engine: Engine = DB
) -> AsyncIterator[Transaction]:
    """Open a transaction on one pooled connection with ``context`` applied to it.

    Piccolo queries run inside the block use this transaction's connection. Leaving the
    block commits; an exception rolls back. Nesting is refused: a request has one transaction.
    """
    transaction = engine.transaction(allow_nested=False)
    async with transaction:
        await transaction.connection.execute(SET_CONTEXT_SQL, *context.parameters())
        yield transaction


#: Settings that let one statement see exactly one row before a user is known (log-in by
#: e-mail, authentication by session token); see the users and sessions policies.
_LOOKUP_SQL = """
SELECT set_config('app.login_email', $1, true),
       set_config('app.session_token_hash', $2, true)
"""


async def allow_lookup(
    transaction: Transaction, *, login_email: str = "", session_token_hash: bytes = b""
) -> None:
    """Within ``transaction``, make the user with ``login_email`` and/or the session with
    ``session_token_hash`` visible (transaction-locally) to the server role."""
    await transaction.connection.execute(_LOOKUP_SQL, login_email, session_token_hash.hex())


@asynccontextmanager
async def request_transaction(
    context: TenantContext, engine: Engine = DB
) -> AsyncIterator[tuple[Transaction, Executor]]:
    """A tenant transaction plus the executor its statements must go through."""
    async with tenant_transaction(context, engine) as transaction:
        yield transaction, Executor(transaction.connection, statements=1)
