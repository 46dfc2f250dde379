"""Pure-ASGI middleware: request id, body-size limit, authentication and tenant resolution.

With a token, the middleware reads the (bounded) body, then opens the request's transaction
on one pooled connection: its first statement, ``app_begin_request``, authenticates the
token, checks the membership in the named tenant and sets the tenant context, all in one
round trip. The operation then runs in that same transaction (``api.app``, the transaction
extension), which ends before the response is written. An unknown or expired token is a 401,
a tenant the caller is not a member of a 403: the transaction is rolled back and the request
never reaches the database as that tenant.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import Any

import asyncpg
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import faults, metrics, routing
from api.auth import ENGINE_KEY, SCOPE_KEY, TRANSACTION_KEY, Auth, Tenant, Viewer, current_auth
from api.errors import (
    BAD_USER_INPUT,
    FORBIDDEN,
    RATE_LIMITED,
    UNAUTHENTICATED,
    BadUserInput,
    error_body,
)
from api.fairness import Fairness, TooBusy
from api.http import APPLICATION_JSON, response_media_type
from api.ids import from_global_id
from api.logs import RateLimitedLog, failure_kind
from api.settings import Settings, get_settings
from db import metrics as db_metrics
from db.errors import DatabaseError
from db.queries.users import token_hash
from db.replicas import REPLICAS
from db.tenancy import OpenTransaction, TenantContext, begin_request

_log = logging.getLogger("taskql.request")
_outage = RateLimitedLog(_log)


class BodyTooLarge(Exception):
    """The request body exceeded the limit while streaming in."""


class TaskqlMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int = 1_000_000,
        paths: tuple[str, ...] = ("/graphql",),
        statement_timeout_ms: int | None = None,
        trusted_proxies: Sequence[IPv4Network | IPv6Network] = (),
        fairness: Fairness | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.app = app
        self.fairness = fairness or Fairness(per_caller=2, max_waiting=64)
        #: For the messages of api.faults (which timeout applies).
        self.settings = settings or get_settings()
        self.trusted_proxies = tuple(trusted_proxies)
        self.max_body_bytes = max_body_bytes
        self.paths = paths
        self.statement_timeout_ms = statement_timeout_ms

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # WebSockets authenticate in their connection_init message (api.realtime.protocol).
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = _request_id(headers.get("x-request-id"))
        reject = partial(
            _reject, send, media_type=response_media_type(headers.get("accept")), scope=scope
        )
        client = scope.get("client")
        auth = Auth(
            request_id=request_id,
            client_ip=client_address(
                client[0] if client else None,
                [
                    v.decode("latin-1")
                    for k, v in scope["headers"]
                    if k.lower() == b"x-forwarded-for"
                ],
                self.trusted_proxies,
            ),
            user_agent=headers.get("user-agent"),
        )

        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await reject(
                413,
                BAD_USER_INPUT,
                f"request body over {self.max_body_bytes} bytes",
                request_id,
            )
            return

        token = _bearer(headers.get("authorization"))
        organization = headers.get("x-organization", "").strip() or None
        if token is None and headers.get("authorization"):
            metrics.REJECTED.labels("malformed").inc()
            await reject(
                401,
                UNAUTHENTICATED,
                "malformed Authorization header: use 'Bearer <token>'",
                request_id,
            )
            return
        if token is None and organization is not None:
            await reject(
                401,
                UNAUTHENTICATED,
                "X-Organization needs an authenticated caller",
                request_id,
            )
            return
        caller = f"token:{token_hash(token).hex()}" if token else f"address:{auth.client_ip}"
        try:
            async with self.fairness.slot(caller):
                await self._run(scope, receive, send, reject, auth, token, organization, request_id)
        except TooBusy:
            await reject(
                429,
                RATE_LIMITED,
                f"too many operations at once: at most {self.fairness.per_caller} run per "
                "caller and the rest wait in a short queue; retry after the answers arrive",
                request_id,
                headers={"retry-after": "1"},
            )

    async def _run(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        reject: Callable[..., Awaitable[None]],
        auth: Auth,
        token: str | None,
        organization: str | None,
        request_id: str,
    ) -> None:
        """Authenticate (a token), then run the application in the request's transaction."""
        opened: OpenTransaction | None = None
        if token is not None:
            body = b""
            if scope["type"] == "http":
                # The whole body first: a slow client must not hold a pooled connection.
                try:
                    receive, body = await _buffered(receive, self.max_body_bytes)
                except BodyTooLarge:
                    await reject(
                        413,
                        BAD_USER_INPUT,
                        f"request body over {self.max_body_bytes} bytes",
                        request_id,
                    )
                    return
                except ClientDisconnect:
                    _log.info("client went away before sending its whole request [%s]", request_id)
                    return
            org_id, org_slug = _organization_ref(organization)
            context = TenantContext(
                request_id=request_id,
                client_ip=auth.client_ip,
                user_agent=auth.user_agent,
                statement_timeout_ms=self.statement_timeout_ms,
            )
            try:
                opened, row = await self._begin(
                    scope, body, token, org_id, org_slug, organization, context
                )
            except (*faults.FAULTS, asyncpg.PostgresError) as exc:
                # Not the caller's failure: PostgreSQL (or the pool) is away. One line per
                # kind and interval, however many requests fail the same way.
                _outage.error(
                    f"database:{failure_kind(exc)}",
                    "database unavailable, request refused with 503 [request %s]: %s",
                    request_id,
                    exc,
                )
                known = faults.fault(exc, self.settings) or faults.fault(
                    DatabaseError(), self.settings
                )
                assert known is not None
                extensions = dict(known.extensions or {})
                await reject(
                    503,
                    str(extensions.pop("code")),
                    known.message,
                    request_id,
                    headers={"retry-after": str(faults.RETRY_AFTER_SECONDS)},
                    **extensions,
                )
                return
            if row is None:
                await opened.close()
                metrics.REJECTED.labels("invalid_token").inc()
                await reject(401, UNAUTHENTICATED, "invalid or expired token", request_id)
                return
            if organization is not None and row["organization_id"] is None:
                await opened.close()
                metrics.REJECTED.labels("not_member").inc()
                await reject(403, FORBIDDEN, "not a member of this organization", request_id)
                return
            viewer = Viewer(row["user_id"], row["email"], row["display_name"], row["session_id"])
            tenant = None
            if organization is not None:
                tenant = Tenant(
                    row["organization_id"],
                    row["organization_slug"],
                    row["organization_name"],
                    row["role"],
                )
            auth = Auth(request_id, auth.client_ip, auth.user_agent, viewer, tenant)
            if opened.open:
                scope[TRANSACTION_KEY] = opened

        scope[SCOPE_KEY] = auth
        token_var = current_auth.set(auth)
        if opened is not None and opened.want_lsn:
            send = _with_commit_lsn(send, opened)
        try:
            await self.app(
                scope, _limited(receive, self.max_body_bytes), _with_request_id(send, request_id)
            )
        except BodyTooLarge:
            await reject(
                413,
                BAD_USER_INPUT,
                f"request body over {self.max_body_bytes} bytes",
                request_id,
            )
        except ClientDisconnect:
            _log.info("client went away before sending its whole request [%s]", request_id)
        finally:
            current_auth.reset(token_var)
            if opened is not None:
                await opened.close()

    async def _begin(
        self,
        scope: Scope,
        body: bytes,
        token: str,
        org_id: uuid.UUID | None,
        org_slug: str | None,
        organization: str | None,
        context: TenantContext,
    ) -> tuple[OpenTransaction, asyncpg.Record | None]:
        """Begin the request's transaction: on a read replica for a query (``api.routing``)
        when one is usable, else on the primary.

        A replica that fails to begin it (down since its last check) is marked down and the
        primary serves the request; so does the primary when the replica does not know the
        token or the membership (a session or member created within its lag)."""
        hashed = token_hash(token)
        if not REPLICAS.enabled:
            return await begin_request(hashed, org_id, org_slug, context)
        read = routing.read_only(scope["method"], body)
        replica = REPLICAS.choose(routing.client_lsn(scope["headers"])) if read else None
        if replica is not None:
            try:
                opened, row = await begin_request(hashed, org_id, org_slug, context, replica)
            except Exception as exc:  # any failure on a replica: the primary answers
                REPLICAS.mark_down(replica, exc)
            else:
                if row is not None and (organization is None or row["organization_id"]):
                    scope[ENGINE_KEY] = replica
                    db_metrics.READS_ROUTED.labels("replica").inc()
                    return opened, row
                await opened.close()
        opened, row = await begin_request(hashed, org_id, org_slug, context)
        if read:
            db_metrics.READS_ROUTED.labels("primary").inc()
        opened.want_lsn = not read
        return opened, row


def _with_commit_lsn(send: Send, opened: OpenTransaction) -> Send:
    """Give the response to a committed write its WAL position (header and cookie): the
    transaction has ended by the time the response starts."""

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start" and opened.commit_lsn is not None:
            extra = routing.lsn_headers(opened.commit_lsn, REPLICAS.cookie_max_age())
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return wrapped


def _request_id(given: str | None) -> str:
    if given and len(given) <= 64 and given.replace("-", "").isalnum():
        return given
    return uuid.uuid4().hex


def client_address(
    peer: str | None,
    forwarded_for: Sequence[str],
    trusted: Sequence[IPv4Network | IPv6Network],
) -> str | None:
    """The client's address: the socket peer, unless the peer is a trusted proxy; then the
    right-most address of X-Forwarded-For that is not a trusted proxy (each proxy appends
    the address it saw, so everything left of the first untrusted hop is the client's say).

    This is the one place the rule lives: uvicorn runs with ``proxy_headers=False``, so
    ``scope["client"]`` is always the socket peer. A hop that is not an address ends the
    walk at the last trusted hop, which is then the best address anyone vouches for.
    """
    address = _parse_ip(peer)
    if address is None or not _trusted(address, trusted):
        return str(address) if address is not None else None
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",")]
    for hop in reversed(hops):
        parsed = _parse_ip(hop)
        if parsed is None:
            break
        address = parsed
        if not _trusted(parsed, trusted):
            break
    return str(address)


def _trusted(
    address: IPv4Address | IPv6Address, trusted: Sequence[IPv4Network | IPv6Network]
) -> bool:
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address.version == network.version and address in network for network in trusted)


def _parse_ip(value: str | None) -> IPv4Address | IPv6Address | None:
    """An address, also in the forms proxies write: ``1.2.3.4:80``, ``[::1]:80``."""
    if not value:
        return None
    value = value.strip()
    if value.startswith("[") and "]" in value:
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:
        value = value.partition(":")[0]
    try:
        return ip_address(value)
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


async def _reject(
    send: Send,
    status: int,
    code: str,
    message: str,
    request_id: str,
    *,
    media_type: str = APPLICATION_JSON,
    headers: dict[str, str] | None = None,
    scope: Scope | None = None,
    **extensions: Any,
) -> None:
    """A request error (GraphQL JSON, no ``data``), in the media type the client accepts;
    counted by its code in the request's metrics."""
    seen = metrics.observation(scope) if scope is not None else None
    if seen is not None:
        seen.error(code)
    body = error_body(code, message, **extensions, requestId=request_id)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", media_type.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"x-request-id", request_id.encode()),
                *((k.encode(), v.encode()) for k, v in (headers or {}).items()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _buffered(receive: Receive, limit: int) -> tuple[Receive, bytes]:
    """Read the whole body (at most ``limit`` bytes), then replay it to the application."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    replayed = False
    body = b"".join(chunks)

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay, body


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
