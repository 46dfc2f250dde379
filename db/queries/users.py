"""Users and sessions: sign-up, log-in, tokens."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import asyncpg

from db.executor import Executor


def token_hash(token: str) -> bytes:
    """SHA-256 of a bearer token: what the sessions table stores and looks up."""
    return hashlib.sha256(token.encode()).digest()


async def by_ids(executor: Executor, ids: Sequence[UUID]) -> list[asyncpg.Record]:
    return await executor.fetch(
        "SELECT id, email, display_name, created_at FROM users WHERE id = ANY($1::uuid[])",
        list(ids),
    )


#: Log-in's lookup. ``email_key`` is ``lower(email)``, stored (migration 28): text ``=`` is
#: leakproof, so under RLS this is an index condition on ``users_email_lower_key``, where
#: ``lower(email) = lower($1)`` was a sequential scan of users (``lower`` is not leakproof).
LOGIN_CANDIDATE_SQL = "SELECT id, password_hash FROM users WHERE email_key = lower($1)"


async def login_candidate(executor: Executor, email: str) -> asyncpg.Record | None:
    """The user with this e-mail (any case): the users policy shows exactly that row while
    ``app.login_email`` names it, and the setting is cleared again right after."""
    await executor.execute("SELECT set_config('app.login_email', $1, true)", email)
    try:
        return await executor.fetchrow(LOGIN_CANDIDATE_SQL, email)
    finally:
        await executor.execute("SELECT set_config('app.login_email', '', true)")


async def create(
    executor: Executor, user_id: UUID, email: str, display_name: str, password_hash: str
) -> asyncpg.Record:
    row = await executor.fetchrow(
        "INSERT INTO users (id, email, display_name, password_hash) VALUES ($1, $2, $3, $4) "
        "RETURNING id, email, display_name, created_at",
        user_id,
        email,
        display_name,
        password_hash,
    )
    assert row is not None
    return row


async def password_hash(executor: Executor, user_id: UUID) -> str | None:
    value = await executor.fetchval("SELECT password_hash FROM users WHERE id = $1", user_id)
    return str(value) if value is not None else None


async def set_password_hash(executor: Executor, user_id: UUID, new_hash: str) -> None:
    await executor.execute("UPDATE users SET password_hash = $2 WHERE id = $1", user_id, new_hash)


async def create_session(
    executor: Executor,
    user_id: UUID,
    token: str,
    expires_at: datetime,
    ip_address: str | None,
    user_agent: str | None,
) -> UUID:
    return UUID(
        str(
            await executor.fetchval(
                "INSERT INTO sessions (user_id, token_hash, expires_at, ip_address, user_agent) "
                "VALUES ($1, $2, $3, $4::inet, $5) RETURNING id",
                user_id,
                token_hash(token),
                expires_at,
                ip_address,
                user_agent,
            )
        )
    )


async def revoke_session(executor: Executor, session_id: UUID) -> None:
    await executor.execute(
        "UPDATE sessions SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL", session_id
    )


async def revoke_all_sessions(executor: Executor, user_id: UUID) -> int:
    status = await executor.execute(
        "UPDATE sessions SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL", user_id
    )
    return int(status.split()[-1])
