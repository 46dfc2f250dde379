"""Sign-up, log-in, log-out and password change. Tokens are opaque and random; only their
SHA-256 is stored; sessions expire and can be revoked."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import strawberry

from api import errors, metrics, validation
from api.context import Info
from api.mutations.base import Failed, mutation
from api.ratelimit import LimiterUnavailable
from api.types.errors import RateLimitedError, UserError
from api.types.errors import validation as invalid
from api.types.users import User
from db import passwords
from db.queries import users
from db.tenancy import TenantContext, request_transaction
from db.uuid7 import uuid7

#: One message for unknown e-mail and wrong password: no account enumeration.
BAD_CREDENTIALS = "wrong e-mail or password"
#: Verified against when the e-mail is unknown, so both cases take the same time.
_DUMMY_HASH = passwords.hash_password("taskql-timing-equaliser")


@strawberry.input
class SignUpInput:
    email: str
    password: str = strawberry.field(description=f"At least {validation.MIN_PASSWORD} characters.")
    display_name: str


@strawberry.input
class LogInInput:
    email: str
    password: str


@strawberry.input
class ChangePasswordInput:
    current_password: str
    new_password: str


@strawberry.type(description="A new session: send `Authorization: Bearer <token>` from now on.")
class AuthPayload:
    token: str | None = None
    expires_at: datetime | None = None
    user: User | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class LogOutPayload:
    ok: bool = False
    errors: list[UserError] = strawberry.field(default_factory=list)


async def _start_session(info: Info, user_id: UUID) -> tuple[str, datetime]:
    context = info.context
    token = secrets.token_urlsafe(32)
    expires_at = datetime.now(UTC) + timedelta(seconds=context.settings.taskql_session_ttl_seconds)
    await users.create_session(
        context.db,
        user_id,
        token,
        expires_at,
        context.auth.client_ip,
        context.auth.user_agent,
    )
    return token, expires_at


#: Sign-up and log-in create a session for someone else than the request's caller.
ALREADY_SIGNED_IN = "already signed in: send this mutation without an Authorization header"


def _require_anonymous(info: Info) -> None:
    """The actor of a request is the caller it authenticated, fixed for the whole operation:
    an authenticated request cannot start acting as another account."""
    if info.context.auth.viewer is not None:
        raise Failed(invalid(ALREADY_SIGNED_IN))


async def _limited(info: Info, email: str, operation: str) -> AuthPayload | None:
    """Count a password attempt against the log-in limits (api.ratelimit), before any
    statement and any argon2 work; the refusal payload when over a limit."""
    context = info.context
    try:
        retry_after = await context.login_limits.attempt(email, context.auth.client_ip)
    except LimiterUnavailable:
        raise errors.ServiceUnavailable(
            "log-in is unavailable for a moment; try again later", retryAfterSeconds=5
        ) from None
    if retry_after is None:
        return None
    metrics.RATE_LIMITED.labels(operation).inc()
    context.failed = True
    return AuthPayload(
        errors=[
            RateLimitedError(
                message="too many log-in attempts; try again later",
                code=errors.RATE_LIMITED,
                path=[],
                retry_after_seconds=retry_after,
            )
        ]
    )


async def _login_candidate(info: Info, email: str) -> Any:
    """The id and stored hash of the user with this e-mail, read in a transaction of its own
    that ends (and returns its connection) before the hash is verified."""
    auth = info.context.auth
    context = TenantContext(
        request_id=auth.request_id, client_ip=auth.client_ip, user_agent=auth.user_agent
    )
    async with request_transaction(context) as (_, executor):
        return await users.login_candidate(executor, email)


async def _as_user(info: Info, user_id: UUID) -> None:
    """Name the acting user of this (anonymous) transaction; the database refuses a second."""
    await info.context.db.execute("SELECT app_act_as($1)", user_id)


@strawberry.type
class AuthMutations:
    @strawberry.mutation(description="Create an account and log in.")
    async def sign_up(self, info: Info, input: SignUpInput) -> AuthPayload:
        email = input.email.strip()
        problems = [
            invalid(p, f)
            for f, p in (
                ("email", validation.email_problem(email)),
                ("password", validation.password_problem(input.password)),
                ("displayName", validation.text_problem(input.display_name, 200)),
            )
            if p is not None
        ]
        # Hashed before the operation's first statement: no pooled connection is held
        # while argon2 runs (the operation's transaction begins at its first statement).
        password_hash = None
        if not problems and info.context.auth.viewer is None:
            password_hash = await asyncio.to_thread(passwords.hash_password, input.password)
        async with mutation(info) as run:
            _require_anonymous(info)
            if problems or password_hash is None:
                raise Failed(*problems)
            user_id = uuid7()
            await _as_user(info, user_id)
            row = await users.create(
                info.context.db, user_id, email, input.display_name.strip(), password_hash
            )
            token, expires_at = await _start_session(info, user_id)
            return AuthPayload(token=token, expires_at=expires_at, user=User.from_row(row))
        return AuthPayload(errors=run.errors)

    @strawberry.mutation(description="Exchange e-mail and password for a session token.")
    async def log_in(self, info: Info, input: LogInInput) -> AuthPayload:
        context = info.context
        email = input.email.strip().lower()
        refused = await _limited(info, email, "logIn")
        if refused is not None:
            metrics.LOGINS.labels("rate_limited").inc()
            return refused
        candidate = None
        valid = False
        if context.auth.viewer is None:
            # The stored hash is read in a short transaction of its own and verified with no
            # pooled connection held (argon2 takes ~150 ms); the operation's transaction
            # begins afterwards, and checks the hash is still the one verified.
            candidate = await _login_candidate(info, email)
            stored = candidate["password_hash"] if candidate is not None else _DUMMY_HASH
            valid = await asyncio.to_thread(passwords.verify_password, stored, input.password)
        async with mutation(info) as run:
            _require_anonymous(info)
            if candidate is None or not valid:
                metrics.LOGINS.labels("failed").inc()
                raise Failed(invalid(BAD_CREDENTIALS))
            user_id = candidate["id"]
            await _as_user(info, user_id)
            stored = candidate["password_hash"]
            if await users.password_hash(context.db, user_id) != stored:
                raise Failed(invalid(BAD_CREDENTIALS))  # changed while we verified
            if passwords.needs_rehash(stored):
                rehashed = await asyncio.to_thread(passwords.hash_password, input.password)
                await users.set_password_hash(context.db, user_id, rehashed)
            token, expires_at = await _start_session(info, user_id)
            rows = await users.by_ids(context.db, [user_id])
            await context.login_limits.succeeded(email, context.auth.client_ip)
            metrics.LOGINS.labels("ok").inc()
            return AuthPayload(token=token, expires_at=expires_at, user=User.from_row(rows[0]))
        return AuthPayload(errors=run.errors)

    @strawberry.mutation(description="Revoke the session whose token this request carries.")
    async def log_out(self, info: Info) -> LogOutPayload:
        async with mutation(info) as run:
            await users.revoke_session(info.context.db, run.viewer.session_id)
            metrics.SESSIONS_REVOKED.labels("log_out").inc()
            return LogOutPayload(ok=True)
        return LogOutPayload(errors=run.errors)

    @strawberry.mutation(
        description="Change your password; every session is revoked and a new one returned."
    )
    async def change_password(self, info: Info, input: ChangePasswordInput) -> AuthPayload:
        context = info.context
        if context.auth.viewer is not None:
            # Guesses of the current password count with log-in guesses of the same e-mail.
            refused = await _limited(info, context.auth.viewer.email, "changePassword")
            if refused is not None:
                return refused
        async with mutation(info) as run:
            viewer = run.viewer
            problem = validation.password_problem(input.new_password)
            if problem is not None:
                raise Failed(invalid(problem, "newPassword"))
            stored = await users.password_hash(context.db, viewer.user_id)
            if stored is None or not await asyncio.to_thread(
                passwords.verify_password, stored, input.current_password
            ):
                raise Failed(invalid("the current password is wrong", "currentPassword"))
            await context.login_limits.succeeded(viewer.email, context.auth.client_ip)
            new_hash = await asyncio.to_thread(passwords.hash_password, input.new_password)
            await users.set_password_hash(context.db, viewer.user_id, new_hash)
            revoked = await users.revoke_all_sessions(context.db, viewer.user_id)
            metrics.SESSIONS_REVOKED.labels("password_change").inc(revoked)
            token, expires_at = await _start_session(info, viewer.user_id)
            rows = await users.by_ids(context.db, [viewer.user_id])
            return AuthPayload(token=token, expires_at=expires_at, user=User.from_row(rows[0]))
        return AuthPayload(errors=run.errors)
