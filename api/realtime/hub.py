"""The fan-out: one LISTEN connection per server process, routing outbox events to the
subscriptions of its WebSocket connections, one payload read per distinct selection.

- The listener is a dedicated connection (``TASKQL_LISTEN_DATABASE_URL``, default
  ``DATABASE_URL``; a session, so never through PgBouncer in transaction mode). Each
  notification is parsed and queued; one dispatcher task handles them in arrival order,
  which is commit order.
- Routing: a feed (one subscription) is indexed by (tenant, topic, scope); the member topic
  by (any tenant, user). An event reaches only the feeds of its own tenant and scope.
- Grouping: the feeds an event reaches are grouped by (tenant, role, document, variables,
  operation). Each group's payload is executed ONCE, in a short transaction as the server
  role under that tenant and role (RLS decides), and sent to every feed of the group. The
  transaction's user is one of the group's: within a tenant the policies the payload types
  can reach depend on the tenant and role only (a member's own user row is also a member's);
  the member topic, the one that depends on the user, is scoped by user, so its groups are.
- Gaps: a subscription resumes after a cursor by replaying the outbox under its own
  context; when the listener reconnects, every feed replays from its position.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from uuid import UUID

import asyncpg
from graphql import DocumentNode, ExecutionResult, GraphQLSchema
from graphql.execution import Executor, execute_subscription_event

from api.auth import Auth, Tenant, Viewer
from api.context import Context
from api.extensions import coded_errors
from api.realtime.events import CHANNEL, REPLAY_SQL, Cursor, Event, from_row, parse
from api.settings import Settings
from db.engine import DB
from db.errors import DatabaseError
from db.executor import Executor as SqlExecutor
from db.tenancy import TenantContext, tenant_transaction

if TYPE_CHECKING:
    from api.ratelimit import LoginLimits
    from api.subscriptions import Change

_log = logging.getLogger("taskql.realtime")

#: Most events one replay delivers (a client that needs more refetches).
REPLAY_LIMIT = 1000


class Session:
    """What the hub needs of a WebSocket connection (``api.realtime.protocol``)."""

    auth: Auth
    websocket: Any

    @property
    def tenant(self) -> Tenant | None:
        return self.auth.tenant

    @property
    def viewer(self) -> Viewer:
        assert self.auth.viewer is not None
        return self.auth.viewer

    def send_text(self, text: str) -> None:
        raise NotImplementedError

    def membership_changed(self) -> None:
        """One of the user's memberships changed: re-authenticate soon."""

    def session_ended(self) -> None:
        """The connection's session was revoked or deleted: close it."""


@dataclass(eq=False)
class Feed:
    """One subscription of one connection."""

    session: Session
    id: str
    topic: str
    scope_id: UUID
    #: None for the member topic (a user's memberships in every tenant).
    organization_id: UUID | None
    document: DocumentNode
    operation_name: str | None
    variables: dict[str, Any]
    change: type[Change]
    #: The last event delivered, or where the feed started.
    position: Cursor
    #: The text of document, variables and operation name: part of the group key.
    selection_key: str
    replaying: bool = False
    backlog: list[Event] = field(default_factory=list)
    #: Ids delivered by the replay, so the backlog that follows does not repeat them.
    replayed: set[int] = field(default_factory=set)
    closed: bool = False

    @property
    def route(self) -> tuple[UUID | None, str, UUID]:
        return (self.organization_id, self.topic, self.scope_id)

    def group_key(self) -> tuple[Any, ...]:
        tenant = self.session.tenant
        return (
            tenant.organization_id if tenant else None,
            tenant.role if tenant else None,
            self.session.viewer.user_id if self.topic == "member" else None,
            self.selection_key,
        )

    def message(self, payload_json: str) -> str:
        return f'{{"id":{json.dumps(self.id)},"type":"next","payload":{payload_json}}}'


@dataclass
class Stats:
    """Counters for tests and the benchmark."""

    notifications: int = 0
    events: int = 0
    reads: int = 0
    delivered: int = 0
    replays: int = 0
    listener_connects: int = 0


class Hub:
    def __init__(
        self, schema: GraphQLSchema, settings: Settings, login_limits: LoginLimits
    ) -> None:
        self.schema = schema
        self.settings = settings
        self.login_limits = login_limits
        self.stats = Stats()
        self._routes: dict[tuple[UUID | None, str, UUID], set[Feed]] = defaultdict(set)
        self._sessions: dict[UUID, set[Session]] = defaultdict(set)
        self._users: dict[UUID, set[Session]] = defaultdict(set)
        self._per_user: dict[UUID, int] = defaultdict(int)
        self._inbox: asyncio.Queue[list[Event] | None] = asyncio.Queue()
        self._reads = asyncio.Semaphore(settings.taskql_realtime_read_concurrency)
        self._listener: asyncpg.Connection | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        #: Where a feed that starts now begins: the last event received (or, before any,
        #: the sequence's value when the listener connected).
        self.position = Cursor(0, 0, int(time.time()))
        self._connected = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._listen_forever(), name="taskql-realtime-listen"),
            asyncio.create_task(self._dispatch_forever(), name="taskql-realtime-dispatch"),
        ]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), timeout=10)

    async def stop(self) -> None:
        for task in [*self._tasks, *self._background]:
            task.cancel()
        for task in [*self._tasks, *self._background]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
            self._listener = None

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @property
    def listening(self) -> bool:
        return self._listener is not None and not self._listener.is_closed()

    async def _listen_forever(self) -> None:
        delay = 0.5
        first = True
        while True:
            lost = asyncio.Event()
            try:
                connection = await self._connect()
                connection.add_termination_listener(lambda _c, lost=lost: lost.set())
                await connection.add_listener(CHANNEL, self._on_notification)
                last_value, xmin = await connection.fetchrow(
                    "SELECT (SELECT last_value FROM realtime_events_id_seq), "
                    "pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
                )
                self._listener = connection
                self.stats.listener_connects += 1
                baseline = Cursor(int(last_value), int(xmin), int(time.time()))
                if first:
                    self.position = baseline
                    first = False
                else:
                    # Whatever committed while nobody listened: every feed replays.
                    _log.warning("realtime listener reconnected: feeds replay from their cursor")
                    self.position = baseline
                    for feeds in list(self._routes.values()):
                        for feed in list(feeds):
                            self.start_replay(feed)
                self._connected.set()
                delay = 0.5
                await lost.wait()
                _log.warning("realtime listener connection lost; reconnecting")
            except asyncio.CancelledError:
                raise
            except (OSError, DatabaseError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                _log.warning(
                    "realtime listener cannot connect (%s); retrying in %.1f s", exc, delay
                )
            self._listener = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def _connect(self) -> asyncpg.Connection:
        dsn = self.settings.taskql_listen_database_url or DB.dsn
        if dsn is None:
            raise DatabaseError("no database URL for the realtime listener")
        config = {k: v for k, v in DB.config.items() if k not in ("dsn", "connection_class")}
        return await asyncpg.connect(dsn, **config)

    def _on_notification(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            notification = parse(payload)
        except (ValueError, KeyError, TypeError) as exc:
            _log.error("unreadable realtime notification (%s): %.200s", exc, payload)
            return
        self.stats.notifications += 1
        for session_id in notification.revoked_sessions:
            for session in list(self._sessions.get(session_id, ())):
                session.session_ended()
        if notification.events:
            self.stats.events += len(notification.events)
            self._inbox.put_nowait(list(notification.events))

    # ------------------------------------------------------------------ registry

    def add_session(self, session: Session) -> None:
        self._sessions[session.viewer.session_id].add(session)
        self._users[session.viewer.user_id].add(session)

    def remove_session(self, session: Session) -> None:
        for index, key in (
            (self._sessions, session.viewer.session_id),
            (self._users, session.viewer.user_id),
        ):
            sessions = index.get(key)
            if sessions is not None:
                sessions.discard(session)
                if not sessions:
                    del index[key]

    def subscriptions_of(self, user_id: UUID) -> int:
        return self._per_user.get(user_id, 0)

    def add(self, feed: Feed, after: Cursor | None) -> None:
        self._routes[feed.route].add(feed)
        self._per_user[feed.session.viewer.user_id] += 1
        if after is not None:
            feed.position = after
            self.start_replay(feed)
        else:
            feed.position = self.position

    def remove(self, feed: Feed) -> None:
        if feed.closed:
            return
        feed.closed = True
        feeds = self._routes.get(feed.route)
        if feeds is not None:
            feeds.discard(feed)
            if not feeds:
                del self._routes[feed.route]
        user = feed.session.viewer.user_id
        self._per_user[user] -= 1
        if self._per_user[user] <= 0:
            del self._per_user[user]

    # ------------------------------------------------------------------ live fan-out

    async def _dispatch_forever(self) -> None:
        while True:
            batch = await self._inbox.get()
            if batch is None:
                return
            # Coalesce what is already waiting: one read per group for all of it.
            while not self._inbox.empty():
                more = self._inbox.get_nowait()
                if more is None:
                    return
                batch.extend(more)
            try:
                await self.dispatch(batch)
            except Exception:
                _log.exception("realtime dispatch failed")

    async def dispatch(self, events: list[Event]) -> None:
        """Route ``events`` (in commit order) and deliver each group's payloads."""
        groups: dict[tuple[Any, ...], tuple[list[Feed], list[Event]]] = {}
        for event in events:
            # Commit order: the last event is where a feed that starts now begins.
            self.position = event.cursor
            reached = list(
                self._routes.get((event.organization_id, event.topic, event.scope_id), ())
            )
            if event.topic == "member":
                reached += self._routes.get((None, event.topic, event.scope_id), ())
            for feed in reached:
                if feed.replaying:
                    feed.backlog.append(event)
                    continue
                key = feed.group_key()
                feeds, group_events = groups.setdefault(key, ([], []))
                if feed not in feeds:
                    feeds.append(feed)
                if not group_events or group_events[-1] is not event:
                    group_events.append(event)
            if event.topic == "member":
                # That user's connections, subscribed or not: their tenant or role may change.
                for session in list(self._users.get(event.scope_id, ())):
                    session.membership_changed()
        if groups:
            await asyncio.gather(*(self._deliver(feeds, evs) for feeds, evs in groups.values()))

    async def _deliver(self, feeds: list[Feed], events: list[Event]) -> None:
        """One transaction for the group; per event, one execution sent to every feed that
        the event reached (all of the group's feeds share route or not: filter per feed)."""
        lead = feeds[0]
        async with self._reads:
            results = await self.execute(lead, events)
        for event, payload in zip(events, results, strict=True):
            for feed in feeds:
                if feed.closed or feed.route not in (
                    (event.organization_id, event.topic, event.scope_id),
                    (None, event.topic, event.scope_id),
                ):
                    continue
                feed.position = event.cursor
                feed.session.send_text(feed.message(payload))
                self.stats.delivered += 1

    async def execute(self, lead: Feed, events: list[Event]) -> list[str]:
        """Each event's payload (JSON of the execution result) for ``lead``'s selection,
        read in ONE short transaction under ``lead``'s tenant, user and role."""
        session = lead.session
        tenant = session.tenant
        context = TenantContext(
            organization_id=tenant.organization_id if tenant else None,
            user_id=session.viewer.user_id,
            role=tenant.role if tenant else None,
            request_id=session.auth.request_id,
            client_ip=session.auth.client_ip,
            user_agent=session.auth.user_agent,
            statement_timeout_ms=self.settings.taskql_request_statement_timeout_ms,
        )
        payloads: list[str] = []
        try:
            async with tenant_transaction(context) as transaction:
                sql = SqlExecutor(transaction.connection, statements=1)
                for event in events:
                    result = await self._execute_one(lead, event, sql)
                    self.stats.reads += 1
                    payloads.append(
                        json.dumps(_formatted(result, session.auth.request_id, self.settings))
                    )
        except (DatabaseError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            _log.error("realtime payload read failed [%s]: %s", session.auth.request_id, exc)
            failed = {
                "data": None,
                "errors": [
                    {
                        "message": "the change could not be read; refetch",
                        "extensions": {"code": "SERVICE_UNAVAILABLE"},
                    }
                ],
            }
            return [json.dumps(failed)] * len(events)
        return payloads

    async def _execute_one(self, feed: Feed, event: Event, sql: SqlExecutor) -> ExecutionResult:
        context = Context(
            request=feed.session.websocket,
            response=None,
            auth=feed.session.auth,
            settings=self.settings,
            login_limits=self.login_limits,
            executor=sql,
        )
        built = Executor.build(
            self.schema,
            feed.document,
            context_value=context,
            raw_variable_values=feed.variables,
            operation_name=feed.operation_name,
        )
        if isinstance(built, list):
            return ExecutionResult(data=None, errors=built)
        result = execute_subscription_event(
            built.build_per_event_executor(feed.change(event=event))
        )
        if built.is_awaitable(result):
            result = await result
        assert isinstance(result, ExecutionResult)
        return result

    # ------------------------------------------------------------------ replay

    def start_replay(self, feed: Feed) -> None:
        if feed.replaying:
            return
        feed.replaying = True
        self.spawn(self._replay(feed))

    async def _replay(self, feed: Feed) -> None:
        """Deliver what the feed missed after its position, then what arrived meanwhile."""
        self.stats.replays += 1
        session = feed.session
        tenant = session.tenant
        context = TenantContext(
            organization_id=tenant.organization_id if tenant else None,
            user_id=session.viewer.user_id,
            role=tenant.role if tenant else None,
            request_id=session.auth.request_id,
        )
        try:
            async with self._reads, tenant_transaction(context) as transaction:
                rows = await transaction.connection.fetch(
                    REPLAY_SQL,
                    feed.topic,
                    feed.scope_id,
                    feed.organization_id,
                    feed.position.id,
                    str(feed.position.horizon),
                    REPLAY_LIMIT,
                )
            missed = [from_row(row) for row in rows]
            while True:
                if missed:
                    for event, payload in zip(
                        missed, await self.execute(feed, missed), strict=True
                    ):
                        if feed.closed:
                            return
                        feed.replayed.add(event.id)
                        feed.position = event.cursor
                        session.send_text(feed.message(payload))
                        self.stats.delivered += 1
                backlog, feed.backlog = feed.backlog, []
                missed = [e for e in backlog if e.id not in feed.replayed]
                if not missed:
                    break
        except (DatabaseError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            _log.error("realtime replay failed [%s]: %s", session.auth.request_id, exc)
        finally:
            feed.replaying = False
            feed.replayed.clear()


def _formatted(
    result: ExecutionResult, request_id: str | None, settings: Settings
) -> dict[str, Any]:
    body: dict[str, Any] = {"data": result.data}
    if result.errors:
        body["errors"] = [e.formatted for e in coded_errors(result.errors, request_id, settings)]
    return body


Sender = Callable[[str], None]
