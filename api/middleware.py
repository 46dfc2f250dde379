"""Pure-ASGI middleware: request id, body-size limit, authentication and tenant resolution.

Authentication and the tenant check cost ONE statement (``app_authenticate``), run on a
pooled connection outside any transaction, before GraphQL executes. An unknown or expired
token is a 401, a tenant the caller is not a member of a 403: the request never reaches the
database as that tenant.
"""

from __future__ import annotations

import logging
import uuid
from ipaddress import ip_address

import asyncpg
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import SCOPE_KEY, Auth, Tenant, Viewer, current_auth
from api.errors import BAD_USER_INPUT, FORBIDDEN, UNAUTHENTICATED, BadUserInput, error_body
from api.ids import from_global_id
from db.engine import DB
from db.errors import DatabaseError
from db.queries import users

_log = logging.getLogger("taskql.request")


class BodyTooLarge(Exception):
    """The request body exceeded the limit while streaming in."""


class TaskqlMiddleware:
    def __init__(
        self, app: ASGIApp, max_body_bytes: int = 1_000_000, paths: tuple[str, ...] = ("/graphql",)
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = _request_id(headers.get("x-request-id"))
        client = scope.get("client")
        auth = Auth(
            request_id=request_id,
            client_ip=_valid_ip(client[0] if client else None),
            user_agent=headers.get("user-agent"),
        )

        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await _reject(
                send,
                413,
                BAD_USER_INPUT,
                f"request body over {self.max_body_bytes} bytes",
                request_id,
            )
            return

        token = _bearer(headers.get("authorization"))
        organization = headers.get("x-organization", "").strip() or None
        if token is None and headers.get("authorization"):
            await _reject(
                send,
                401,
                UNAUTHENTICATED,
                "malformed Authorization header: use 'Bearer <token>'",
                request_id,
            )
            return
        if token is None and organization is not None:
            await _reject(
                send,
                401,
                UNAUTHENTICATED,
                "X-Organization needs an authenticated caller",
                request_id,
            )
            return
        if token is not None:
            org_id, org_slug = _organization_ref(organization)
            try:
                row = await users.authenticate(_pool(), token, org_id, org_slug)
            except DatabaseError as exc:
                _log.error("authentication failed [%s]: %s", request_id, exc)
                await _reject(
                    send, 503, "INTERNAL_SERVER_ERROR", "database unavailable", request_id
                )
                return
            if row is None:
                await _reject(send, 401, UNAUTHENTICATED, "invalid or expired token", request_id)
                return
            viewer = Viewer(row["user_id"], row["email"], row["display_name"], row["session_id"])
            tenant = None
            if organization is not None:
                if row["organization_id"] is None:
                    await _reject(
                        send, 403, FORBIDDEN, "not a member of this organization", request_id
                    )
                    return
                tenant = Tenant(
                    row["organization_id"],
                    row["organization_slug"],
                    row["organization_name"],
                    row["role"],
                )
            auth = Auth(request_id, auth.client_ip, auth.user_agent, viewer, tenant)

        scope[SCOPE_KEY] = auth
        token_var = current_auth.set(auth)
        try:
            await self.app(
                scope, _limited(receive, self.max_body_bytes), _with_request_id(send, request_id)
            )
        except BodyTooLarge:
            await _reject(
                send,
                413,
                BAD_USER_INPUT,
                f"request body over {self.max_body_bytes} bytes",
                request_id,
            )
        except ClientDisconnect:
            _log.info("client went away before sending its whole request [%s]", request_id)
        finally:
            current_auth.reset(token_var)


def _pool() -> asyncpg.Pool:
    if DB.pool is None:
        raise DatabaseError("the connection pool is not open")
    return DB.pool


def _request_id(given: str | None) -> str:
    if given and len(given) <= 64 and given.replace("-", "").isalnum():
        return given
    return uuid.uuid4().hex


def _valid_ip(value: str | None) -> str | None:
    try:
        return str(ip_address(value)) if value else None
    except ValueError:
        return None


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 200:
        return None
    return token


def _organization_ref(value: str | None) -> tuple[uuid.UUID | None, str | None]:
    """An organization named by id (a uuid or a global id) or by slug."""
    if value is None:
        return None, None
    try:
        return uuid.UUID(value), None
    except ValueError:
        pass

    try:
        kind, raw = from_global_id(value)
        if kind == "Organization":
            return raw, None
    except BadUserInput:
        pass
    return None, value.lower()


async def _reject(send: Send, status: int, code: str, message: str, request_id: str) -> None:
    body = error_body(code, message, requestId=request_id)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"x-request-id", request_id.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _limited(receive: Receive, limit: int) -> Receive:
    received = 0

    async def wrapped() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge
        return message

    return wrapped


def _with_request_id(send: Send, request_id: str) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {
                **message,
                "headers": [*message.get("headers", []), (b"x-request-id", request_id.encode())],
            }
        await send(message)

    return wrapped
