"""GraphQL over WebSocket, the ``graphql-transport-ws`` protocol, at ``/graphql``.

The connection is authenticated by its ``connection_init`` payload, as an HTTP request is by
its headers: ``{"token": "<bearer token>", "organization": "<slug or id>"}`` (also
accepted: ``Authorization: "Bearer <token>"`` and ``X-Organization`` keys, or the handshake's
own headers). A bad or expired token, or an organization the caller is not a member of,
closes the socket with 4403 Forbidden, as the protocol says. Afterwards the connection
re-authenticates when its session ends (the outbox announces it: closed at once), when one
of its user's memberships changes (a role change applies to the next event, a removal
closes it), and every ``TASKQL_WS_REAUTH_SECONDS`` besides (expiry).

Only subscriptions run here (send queries and mutations over HTTP). A subscription document
gets the same bounds as any operation (tokens, fields, depth, aliases, node cost), and each
connection and user a bounded number of subscriptions.

Close codes: 4400 bad message, 4401 subscribe before the acknowledgement, 4403 forbidden,
4406 subprotocol not offered, 4408 no ``connection_init`` in time, 4409 duplicate id, 4429
a second ``connection_init``, 1009 message too big, 1008 a client too slow to read what it
subscribed to, 1001 keep-alive or idle timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from dataclasses import replace
from typing import Any

import asyncpg
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    parse,
    specified_rules,
    validate,
)
from graphql.execution.values import get_argument_values, get_variable_values
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect
from strawberry.extensions import MaxAliasesLimiter, QueryDepthLimiter

from api import cost, errors
from api.auth import Auth, Tenant, Viewer
from api.extensions import coded_errors
from api.ids import decode_id
from api.middleware import _bearer, _organization_ref, client_address
from api.persisted import PersistedOperations, Refused
from api.realtime.events import Cursor
from api.realtime.hub import Feed, Hub, Session
from api.settings import Settings
from api.subscriptions import TOPICS
from db.errors import DatabaseError
from db.queries.users import token_hash
from db.tenancy import TenantContext, begin_request

_log = logging.getLogger("taskql.realtime")

PROTOCOL = "graphql-transport-ws"
BAD_REQUEST = 4400
UNAUTHORIZED = 4401
FORBIDDEN = 4403
SUBPROTOCOL_NOT_ACCEPTABLE = 4406
INIT_TIMEOUT = 4408
SUBSCRIBER_EXISTS = 4409
TOO_MANY_INITS = 4429
GOING_AWAY = 1001
POLICY = 1008
TOO_BIG = 1009
#: Messages queued for a client that does not read them, before it is closed.
MAX_QUEUED = 1000


class Endpoint:
    """The ASGI app for WebSocket scopes at /graphql."""

    def __init__(
        self, hub: Hub, settings: Settings, persisted: PersistedOperations | None = None
    ) -> None:
        self.hub = hub
        self.settings = settings
        #: Persisted ids and the trusted-documents mode apply to subscriptions as over HTTP.
        self.persisted = persisted
        self.rules = [
            *specified_rules,
            *QueryDepthLimiter(max_depth=settings.taskql_max_depth).validation_rules,
            *MaxAliasesLimiter(max_alias_count=settings.taskql_max_aliases).validation_rules,
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        websocket = WebSocket(scope, receive, send)
        await RealtimeConnection(websocket, self).run()


class RealtimeConnection(Session):
    def __init__(self, websocket: WebSocket, endpoint: Endpoint) -> None:
        self.websocket = websocket
        self.endpoint = endpoint
        self.hub = endpoint.hub
        self.settings = endpoint.settings
        headers = websocket.headers
        client = websocket.scope.get("client")
        self.auth = Auth(
            request_id=uuid.uuid4().hex,
            client_ip=client_address(
                client[0] if client else None,
                headers.getlist("x-forwarded-for"),
                self.settings.taskql_trusted_proxies,
            ),
            user_agent=headers.get("user-agent"),
        )
        self.feeds: dict[str, Feed] = {}
        self._queue: asyncio.Queue[str] = asyncio.Queue(maxsize=MAX_QUEUED)
        self._send_lock = asyncio.Lock()
        self._closed = asyncio.Event()
        self._initialised = False
        self._acknowledged = False
        self._credentials: tuple[str, str | None] | None = None
        self._reauth = asyncio.Event()
        now = time.monotonic()
        self._opened = now
        self._last_received = now
        self._last_active = now
        self._last_auth = now
        self._registered = False

    # ------------------------------------------------------------------ Session

    def send_text(self, text: str) -> None:
        if self._closed.is_set():
            return
        try:
            self._queue.put_nowait(text)
        except asyncio.QueueFull:
            self.hub.spawn(self.close(POLICY, f"more than {MAX_QUEUED} messages unread"))

    def membership_changed(self) -> None:
        self._reauth.set()

    def session_ended(self) -> None:
        self.hub.spawn(self.close(FORBIDDEN, "Forbidden: the session ended"))

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        offered = self.websocket.scope.get("subprotocols") or []
        if PROTOCOL not in offered:
            await self.websocket.accept()
            await self.websocket.close(SUBPROTOCOL_NOT_ACCEPTABLE, "Subprotocol not acceptable")
            return
        await self.websocket.accept(subprotocol=PROTOCOL)
        tasks = [
            asyncio.create_task(self._read()),
            asyncio.create_task(self._write()),
            asyncio.create_task(self._timers()),
        ]
        try:
            await self._closed.wait()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            for feed in list(self.feeds.values()):
                self.hub.remove(feed)
            self.feeds.clear()
            if self._registered:
                self.hub.remove_session(self)

    async def close(self, code: int, reason: str) -> None:
        if self._closed.is_set():
            return
        _log.info("closing realtime connection [%s]: %s %s", self.auth.request_id, code, reason)
        try:
            async with self._send_lock:
                await self.websocket.close(code, reason[:120])
        except Exception:  # the peer may be gone already
            pass
        finally:
            self._closed.set()

    async def _send(self, message: dict[str, Any]) -> None:
        self.send_text(json.dumps(message))

    async def _write(self) -> None:
        try:
            while True:
                text = await self._queue.get()
                async with self._send_lock:
                    if self._closed.is_set():
                        return
                    await self.websocket.send_text(text)
        except (WebSocketDisconnect, RuntimeError, OSError):
            self._closed.set()

    async def _read(self) -> None:
        limit = self.settings.taskql_ws_max_message_bytes
        try:
            while True:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                text = message.get("text")
                if text is None and message.get("bytes") is not None:
                    text = message["bytes"].decode("utf-8", errors="replace")
                if text is None:
                    continue
                self._last_received = self._last_active = time.monotonic()
                if len(text) > limit:
                    await self.close(TOO_BIG, f"message over {limit} bytes")
                    return
                await self._handle(text)
                if self._closed.is_set():
                    return
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass
        self._closed.set()

    async def _timers(self) -> None:
        s = self.settings
        tick = min(1.0, s.taskql_ws_ping_seconds, s.taskql_ws_init_timeout_seconds)
        last_ping = time.monotonic()
        while not self._closed.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reauth.wait(), timeout=tick)
            now = time.monotonic()
            if not self._initialised:
                if now - self._opened >= s.taskql_ws_init_timeout_seconds:
                    await self.close(INIT_TIMEOUT, "Connection initialisation timeout")
                continue
            if self._reauth.is_set() or now - self._last_auth >= s.taskql_ws_reauth_seconds:
                self._reauth.clear()
                await self._reauthenticate()
                continue
            if now - last_ping >= s.taskql_ws_ping_seconds:
                last_ping = now
                await self._send({"type": "ping"})
            if now - self._last_received >= 2 * s.taskql_ws_ping_seconds:
                await self.close(GOING_AWAY, "keep-alive timeout: no pong")
            elif not self.feeds and now - self._last_active >= s.taskql_ws_idle_seconds:
                await self.close(GOING_AWAY, "idle timeout")

    # ------------------------------------------------------------------ messages

    async def _handle(self, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            await self.close(BAD_REQUEST, "Invalid message received: not JSON")
            return
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "connection_init":
            await self._connection_init(message.get("payload"))
        elif kind == "ping":
            await self._send({"type": "pong"})
        elif kind == "pong":
            pass
        elif kind == "subscribe":
            await self._subscribe(message)
        elif kind == "complete":
            feed = self.feeds.pop(str(message.get("id")), None)
            if feed is not None:
                self.hub.remove(feed)
                self._last_active = time.monotonic()
        else:
            await self.close(BAD_REQUEST, f"Invalid message received: type {str(kind)[:40]!r}")

    async def _connection_init(self, payload: Any) -> None:
        if self._initialised:
            await self.close(TOO_MANY_INITS, "Too many initialisation requests")
            return
        self._initialised = True
        if payload is not None and not isinstance(payload, dict):
            await self.close(BAD_REQUEST, "Invalid message received: payload is not an object")
            return
        payload = payload or {}
        headers = self.websocket.headers

        def given(*keys: str) -> str | None:
            for key in keys:
                value = payload.get(key)
                if isinstance(value, str) and value.strip():
                    return value.strip()
            return None

        token = given("token") or _bearer(
            given("Authorization", "authorization") or headers.get("authorization")
        )
        organization = given("organization", "X-Organization", "x-organization") or (
            headers.get("x-organization", "").strip() or None
        )
        if token is None:
            await self.close(FORBIDDEN, "Forbidden: connection_init needs a token")
            return
        self._credentials = (token, organization)
        refused = await self._authenticate()
        if refused is not None:
            await self.close(FORBIDDEN, f"Forbidden: {refused}")
            return
        self.hub.add_session(self)
        self._registered = True
        self._acknowledged = True
        await self._send({"type": "connection_ack"})

    async def _authenticate(self) -> str | None:
        """Authenticate the connection's credentials (as the HTTP middleware does); None, or
        why not. Sets ``self.auth`` (its role may have changed)."""
        assert self._credentials is not None
        token, organization = self._credentials
        org_id, org_slug = _organization_ref(organization)
        context = TenantContext(
            request_id=self.auth.request_id,
            client_ip=self.auth.client_ip,
            user_agent=self.auth.user_agent,
        )
        self._last_auth = time.monotonic()
        try:
            opened, row = await begin_request(token_hash(token), org_id, org_slug, context)
        except (DatabaseError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            _log.error("realtime authentication failed [%s]: %s", self.auth.request_id, exc)
            return None if self.auth.viewer is not None else "the database is unavailable"
        await opened.close()
        if row is None:
            return "invalid or expired token"
        if organization is not None and row["organization_id"] is None:
            return "not a member of this organization"
        viewer = Viewer(row["user_id"], row["email"], row["display_name"], row["session_id"])
        if self.auth.viewer is not None and self.auth.viewer.session_id != viewer.session_id:
            return "the session changed"
        tenant = None
        if organization is not None:
            tenant = Tenant(
                row["organization_id"],
                row["organization_slug"],
                row["organization_name"],
                row["role"],
            )
        self.auth = replace(self.auth, viewer=viewer, tenant=tenant)
        return None

    async def _reauthenticate(self) -> None:
        refused = await self._authenticate()
        if refused is not None:
            await self.close(FORBIDDEN, f"Forbidden: {refused}")

    async def _subscribe(self, message: dict[str, Any]) -> None:
        if not self._acknowledged:
            await self.close(UNAUTHORIZED, "Unauthorized")
            return
        op_id = message.get("id")
        payload = message.get("payload")
        if not isinstance(op_id, str) or not op_id or len(op_id) > 128:
            await self.close(BAD_REQUEST, "Invalid message received: subscribe needs an id")
            return
        if not isinstance(payload, dict):
            await self.close(BAD_REQUEST, "Invalid message received: subscribe needs a payload")
            return
        if op_id in self.feeds:
            await self.close(SUBSCRIBER_EXISTS, f"Subscriber for {op_id[:64]} already exists")
            return
        try:
            if self.endpoint.persisted is not None:
                try:
                    payload = await self.endpoint.persisted.resolve(payload)
                except Refused as refused:
                    raise GraphQLError(refused.message, extensions={"code": refused.code}) from None
            feed, after = self._prepare(op_id, payload)
        except GraphQLError as error:
            await self._send(
                {
                    "id": op_id,
                    "type": "error",
                    "payload": [
                        e.formatted
                        for e in coded_errors([error], self.auth.request_id, self.settings)
                    ],
                }
            )
            return
        self.feeds[op_id] = feed
        self.hub.add(feed, after)
        self._last_active = time.monotonic()

    def _prepare(self, op_id: str, payload: dict[str, Any]) -> tuple[Feed, Cursor | None]:
        """Parse, bound, validate and route a subscription; raises GraphQLError."""
        s = self.settings
        query, name, variables = (
            payload.get("query"),
            payload.get("operationName"),
            payload.get("variables"),
        )
        if variables is None:
            variables = {}
        if not isinstance(query, str) or not isinstance(name, str | None):
            raise errors.BadUserInput("subscribe needs a `query` string")
        if not isinstance(variables, dict):
            raise errors.BadUserInput("`variables` must be an object")
        if len(self.feeds) >= s.taskql_ws_max_subscriptions_per_connection:
            raise errors.RateLimited(
                f"at most {s.taskql_ws_max_subscriptions_per_connection} subscriptions per "
                "connection"
            )
        if self.hub.subscriptions_of(self.viewer.user_id) >= s.taskql_ws_max_subscriptions_per_user:
            raise errors.RateLimited(
                f"at most {s.taskql_ws_max_subscriptions_per_user} subscriptions per user"
            )
        schema: GraphQLSchema = self.hub.schema
        document = parse(query, max_tokens=s.taskql_max_tokens)
        operation = cost.check_document(document, name, s)
        if operation.operation is not OperationType.SUBSCRIPTION:
            raise errors.BadUserInput(
                "only subscriptions run over WebSocket: send queries and mutations over HTTP"
            )
        problems = validate(schema, document, self.endpoint.rules)
        if problems:
            raise problems[0]
        coerced = get_variable_values(schema, operation.variable_definitions or (), variables)
        if isinstance(coerced, list):
            raise coerced[0]
        over = cost.over_node_limit(cost.node_cost(schema, document, operation, coerced, s), s)
        if over is not None:
            raise over
        field_node = _root_field(document, operation)
        subscription_type = schema.subscription_type
        assert subscription_type is not None
        definition = subscription_type.fields[field_node.name.value]
        args = get_argument_values(definition, field_node, coerced)
        topic, change = TOPICS[field_node.name.value]
        tenant = self.tenant
        if topic == "member":
            organization_id, scope_id = None, self.viewer.user_id
        else:
            if tenant is None:
                raise errors.Forbidden(
                    "this subscription needs a tenant: send `organization` in connection_init"
                )
            organization_id = tenant.organization_id
            if topic == "task":
                scope_id = decode_id(args["projectId"], "Project")
            elif topic == "comment":
                scope_id = decode_id(args["taskId"], "Task")
            else:
                scope_id = tenant.organization_id
        after = args.get("after")
        cursor = (
            Cursor.decode(after, s.taskql_realtime_retention_seconds)
            if isinstance(after, str)
            else None
        )
        key = json.dumps([query, name, variables], sort_keys=True, default=str)
        feed = Feed(
            session=self,
            id=op_id,
            topic=topic,
            scope_id=scope_id,
            organization_id=organization_id,
            document=document,
            operation_name=name,
            variables=variables,
            change=change,
            position=self.hub.position,
            selection_key=key,
        )
        return feed, cursor


def _root_field(document: DocumentNode, operation: OperationDefinitionNode) -> FieldNode:
    """The subscription's one root field (validation made sure there is exactly one)."""
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }

    def find(selection_set: SelectionSetNode) -> FieldNode | None:
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                return selection
            if isinstance(selection, InlineFragmentNode):
                found = find(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                fragment = fragments.get(selection.name.value)
                found = find(fragment.selection_set) if fragment else None
            else:
                found = None
            if found is not None:
                return found
        return None

    field = find(operation.selection_set)
    if field is None or field.name.value.startswith("__"):
        raise errors.BadUserInput("a subscription selects one subscription field")
    return field
