"""The ASGI application: Starlette routes, GraphQL at /graphql (GraphiQL for browsers, its
assets under /graphql/static), health at /livez and /readyz (``api.health``; /healthz is the
deprecated name of /readyz)."""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from cross_web import AsyncHTTPRequestAdapter, HTTPException, StarletteRequestAdapter
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData, process_result
from strawberry.http.base import BaseRequestProtocol
from strawberry.schema.exceptions import InvalidOperationTypeError
from strawberry.types import ExecutionResult

from api import faults, graphiql, http, metrics
from api.access_log import AccessLog
from api.auth import SCOPE_KEY, TRANSACTION_KEY, Auth
from api.compiler import Compiler
from api.context import Context
from api.direct import DirectWrites
from api.disconnect import CancelOnDisconnect
from api.errors import (
    INTERNAL_SERVER_ERROR,
    SERVICE_UNAVAILABLE,
    TIMEOUT,
    ApiError,
    error_body,
)
from api.extensions import coded_errors, operation_context
from api.fairness import Fairness
from api.health import Health
from api.middleware import BodyTooLarge, TaskqlMiddleware
from api.persisted import PersistedOperations
from api.ratelimit import LoginLimits
from api.realtime.hub import Hub
from api.realtime.protocol import Endpoint
from api.schema import build_schema
from api.settings import Settings, get_settings
from db import metrics as db_metrics
from db.engine import DB
from db.replicas import REPLICAS
from db.targets import resolve
from db.tenancy import OpenTransaction, request_transaction

_log = logging.getLogger("taskql")

#: Request scope keys: the negotiated response media type, Strawberry's sub-response.
MEDIA_TYPE_KEY = "taskql.media_type"
SUB_RESPONSE_KEY = "taskql.sub_response"
#: The request's operation as read once (its persisted document resolved) for both paths;
#: whether its answer holds errors (not cacheable).
OPERATION_KEY = "taskql.operation"
FAILED_KEY = "taskql.failed"
#: A GET answer is cached by the caller only, and per credentials and tenant.
VARY = "Accept, Authorization, X-Organization"


class TaskqlGraphQL(GraphQL[Context, None]):
    """Strawberry's ASGI view with our context and a GraphiQL that opens on an example."""

    def __init__(self, settings: Settings) -> None:
        # No WebSocket protocols of Strawberry's: subscriptions are served by api.realtime
        # (graphql-transport-ws, authenticated in connection_init) on the same path.
        schema = build_schema(settings)
        # GraphiQL only where the schema is public (TASKQL_PUBLIC_INTROSPECTION).
        super().__init__(
            schema,
            graphql_ide="graphiql" if settings.taskql_public_introspection else None,
            subscription_protocols=(),
        )
        self.settings = settings
        #: graphql-core's schema, for the subscriptions of api.realtime.
        self.core_schema = schema._schema
        self.compiler = (
            Compiler(schema._schema, settings) if settings.taskql_compiled_queries else None
        )
        #: Lone writes answered by their resolver and the compiler's read-back (api.direct).
        self.direct = (
            DirectWrites(schema, self.compiler, settings)
            if self.compiler is not None and settings.taskql_direct_writes
            else None
        )
        self.login_limits = LoginLimits(settings)
        #: Trusted documents and automatic persisted queries (``api.persisted``).
        self.persisted = PersistedOperations(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """GraphQL over HTTP (``api.http``). POSTed queries that ``api.compiler`` can answer in
        one statement skip GraphQL execution; everything else (and every request that would
        end in an error) goes to Strawberry, with the body already read. Whatever goes wrong,
        the answer is GraphQL JSON: request errors with their 4xx, never a plain-text 500."""
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        request = Request(scope, receive)
        media_type = http.response_media_type(request.headers.get("accept"))
        scope[MEDIA_TYPE_KEY] = media_type
        auth: Auth | None = scope.get(SCOPE_KEY)
        request_id = auth.request_id if auth else None
        try:
            response = await self._answer(request)
        except http.RequestError as exc:
            response = http.error_response(exc, request_id, media_type)
        except HTTPException as exc:  # Strawberry's own refusals
            response = http.error_response(
                http.RequestError(exc.status_code, exc.reason), request_id, media_type
            )
        except (BodyTooLarge, ClientDisconnect):
            raise  # the middleware answers these
        except Exception as exc:
            known = faults.fault(exc, self.settings)
            if known is None:
                _log.error("unexpected error [request %s]", request_id, exc_info=exc)
                error = http.RequestError(500, "Unexpected error.", code=INTERNAL_SERVER_ERROR)
            else:
                faults.log(exc, request_id, "request failed")
                error = _fault_error(known)
            response = http.error_response(error, request_id, media_type)
        if request.method == "GET":
            self._cache_headers(request, response)
        await response(scope, receive, send)

    async def _answer(self, request: Request) -> Response:
        if request.method not in ("GET", "POST"):
            raise http.RequestError(
                405,
                f"GraphQL is served over GET and POST, not {request.method}",
                headers={"Allow": "GET, POST"},
            )
        response = None
        if self.compiler is not None and (
            request.method == "POST"
            or any(k in request.query_params for k in ("query", "extensions", "documentId"))
        ):
            response = await self.compiled(request)
        if response is None and self.direct is not None and request.method == "POST":
            response = await self.direct_write(request)
        if response is None:
            response = await self.run(request)
        if response.media_type == http.APPLICATION_JSON or response.headers.get(
            "content-type", ""
        ).startswith(http.APPLICATION_JSON):
            response.headers["content-type"] = request.scope[MEDIA_TYPE_KEY]
        return response

    def should_render_graphql_ide(self, request: BaseRequestProtocol) -> bool:
        """Not for a GET that names a persisted document (no ``query``: ``*/*`` clients)."""
        return super().should_render_graphql_ide(request) and not any(
            request.query_params.get(key) for key in ("extensions", "documentId")
        )

    def _cache_headers(self, request: Request, response: Response) -> None:
        """A query answered over GET without errors may be kept by the caller's own cache
        (``private``: the answer is the caller's, under its tenant) for
        TASKQL_GET_MAX_AGE_SECONDS; anything else is not stored. (GraphiQL's page keeps its
        own headers.)"""
        content_type = response.headers.get("content-type", "")
        if not content_type.startswith((http.APPLICATION_JSON, http.GRAPHQL_RESPONSE_JSON)):
            return
        if response.status_code == 200 and not request.scope.get(FAILED_KEY):
            max_age = self.settings.taskql_get_max_age_seconds
            response.headers["Cache-Control"] = (
                f"private, max-age={max_age}" if max_age else "private, no-cache"
            )
        else:
            response.headers["Cache-Control"] = "no-store"
        response.headers["Vary"] = VARY

    async def read(self, request: Request) -> GraphQLRequestData:
        """The request's operation, read and resolved once (``api.http``, ``api.persisted``):
        the compiled path and the resolvers see the same document."""
        found: GraphQLRequestData | None = request.scope.get(OPERATION_KEY)
        if found is None:
            found = await http.read_operation(StarletteRequestAdapter(request), self.persisted)
            request.scope[OPERATION_KEY] = found
        return found

    async def parse_http_body(self, request: AsyncHTTPRequestAdapter) -> GraphQLRequestData:
        """One reading of the request for both paths (``api.http``)."""
        starlette = getattr(request, "_request", None)
        if isinstance(starlette, Request):
            return await self.read(starlette)
        return await http.read_operation(request, self.persisted)

    async def execute_single(
        self,
        request: Request,
        request_adapter: AsyncHTTPRequestAdapter,
        sub_response: Response,
        context: Context,
        root_value: None,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        try:
            return await super().execute_single(
                request, request_adapter, sub_response, context, root_value, request_data
            )
        except HTTPException as exc:
            if isinstance(exc.__cause__, InvalidOperationTypeError) and request.method == "GET":
                raise http.RequestError(
                    405, "a mutation must be sent with POST", headers={"Allow": "POST"}
                ) from None
            raise

    async def compiled(self, request: Request) -> Response | None:
        """The compiled answer, or None when the resolvers must answer."""
        assert self.compiler is not None
        data = await self.read(request)
        auth: Auth = request.scope[SCOPE_KEY]
        if auth.viewer is None:
            return None
        assert data.query is not None
        prepared = self.compiler.prepare(
            data.query,
            data.operation_name,
            data.variables or {},
            auth.tenant.organization_id if auth.tenant else None,
            auth.viewer.user_id,
            auth.tenant.role if auth.tenant else None,
        )
        if prepared is None:
            return None
        seen = metrics.observation(request.scope)
        if seen is not None:
            plan = self.compiler.plan(data.query, data.operation_name)
            operation = plan.operation if plan is not None else None
            seen.path = "compiled"
            seen.type = "query"
            seen.operation = metrics.OPERATION_NAMES.label(
                operation.name.value if operation is not None and operation.name else None
            )
        sql, params = prepared
        media_type = request.scope.get(MEDIA_TYPE_KEY, http.APPLICATION_JSON)
        opened: OpenTransaction | None = request.scope.get(TRANSACTION_KEY)
        try:
            if opened is not None and opened.open:
                executor = opened.executor
                text = await executor.fetchval(sql, *params)
                await opened.commit()
            else:
                async with request_transaction(operation_context(auth, self.settings)) as (
                    _,
                    executor,
                ):
                    text = await executor.fetchval(sql, *params)
        except faults.FAULTS as exc:
            # What the resolvers answer for the same failure (api.faults).
            if opened is not None:
                await opened.close()
            faults.log(exc, auth.request_id, "compiled query failed")
            known = faults.fault(exc, self.settings)
            assert known is not None
            request.scope[FAILED_KEY] = True
            if known.code == TIMEOUT:
                body = json.dumps(
                    {
                        "data": None,
                        "errors": [
                            {
                                "message": known.message,
                                "extensions": {
                                    **(known.extensions or {}),
                                    "requestId": auth.request_id,
                                },
                            }
                        ],
                    }
                )
                return Response(body, media_type=media_type)
            return http.error_response(_fault_error(known), auth.request_id, media_type)
        except asyncpg.PostgresError as exc:
            # What the resolvers answer for a failed statement: masked, logged with the id.
            _log.error("compiled query failed [request %s]: %s", auth.request_id, exc)
            request.scope[FAILED_KEY] = True
            if seen is not None:
                seen.error(INTERNAL_SERVER_ERROR)
            masked = error_body(
                INTERNAL_SERVER_ERROR, "Unexpected error.", requestId=auth.request_id
            )
            return Response(masked, media_type=media_type)
        if seen is not None:
            seen.statements = executor.statements
        extensions = ""
        if self.settings.taskql_sql_stats:
            extensions = f', "extensions": {{"sqlStatements": {executor.statements}}}'
        # The bytes encode_json writes for the same result (the statement writes its data).
        return Response(f'{{"data": {text}{extensions}}}', media_type=media_type)

    async def direct_write(self, request: Request) -> Response | None:
        """A lone write's answer by ``api.direct``, or None when the resolvers must answer
        (then nothing of it was written)."""
        assert self.direct is not None
        auth: Auth = request.scope[SCOPE_KEY]
        opened: OpenTransaction | None = request.scope.get(TRANSACTION_KEY)
        if auth.viewer is None or auth.tenant is None or opened is None or not opened.open:
            return None
        data = await self.read(request)
        if data.query is None:
            return None
        plan = self.direct.plan(data.query, data.operation_name)
        if plan is None:
            return None
        sub_response = await self.get_sub_response(request)
        context = await self.get_context(request, sub_response)
        answered = await self.direct.answer(plan, data.variables or {}, context, opened)
        if answered is None:
            return None
        executor = opened.executor
        seen = metrics.observation(request.scope)
        if seen is not None:
            # Labelled as the resolvers' path labels a write: it is the resolver that wrote.
            seen.path = "resolvers"
            seen.type = "mutation"
            seen.operation = metrics.OPERATION_NAMES.label(
                plan.operation.name.value if plan.operation.name else None
            )
            seen.statements = executor.statements
        body: dict[str, object] = {"data": answered}
        if self.settings.taskql_sql_stats:
            body["extensions"] = {"sqlStatements": executor.statements}
        return self.create_response(body, sub_response)  # type: ignore[arg-type]

    def encode_json(self, data: object) -> bytes:
        """Responses as ``json.dumps`` writes them with its default separators and UTF-8
        unescaped: the bytes the compiled statements write (and PostgreSQL's jsonb output),
        so a client gets the same bytes whichever path answered."""
        text = json.dumps(data, ensure_ascii=False)
        try:
            return text.encode()
        except UnicodeEncodeError:  # a lone surrogate (only in echoed input): escape it all
            return json.dumps(data).encode()

    async def get_context(self, request: Request, response: Response) -> Context:  # type: ignore[override]
        auth: Auth = request.scope[SCOPE_KEY]
        # The response's status, headers and media type are decided by process_result.
        request.scope[SUB_RESPONSE_KEY] = response
        return Context(
            request=request,
            response=response,
            auth=auth,
            settings=self.settings,
            login_limits=self.login_limits,
            compiler=self.compiler,
        )

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        """Every error leaves with its code (and unexpected ones masked), whatever phase
        raised it: parsing, validation, limits or execution. The status: 503 (with
        Retry-After) when the database is unavailable or the pool exhausted; with
        ``application/graphql-response+json``, 400 and no ``data`` when the request failed
        before execution (parse, validation, limits, variable coercion); 200 otherwise."""
        auth: Auth | None = request.scope.get(SCOPE_KEY)
        if result.errors:
            request.scope[FAILED_KEY] = True
            result.errors = coded_errors(
                result.errors, auth.request_id if auth else None, self.settings
            )
            seen = metrics.observation(request.scope)
            if seen is not None:
                for error in result.errors:
                    seen.error((error.extensions or {}).get("code"))
        body = process_result(result)
        sub_response: Response | None = request.scope.get(SUB_RESPONSE_KEY)
        media_type = request.scope.get(MEDIA_TYPE_KEY, http.APPLICATION_JSON)
        if sub_response is None or not result.errors:
            return body
        extensions = [error.extensions or {} for error in result.errors]
        before_execution = result.data is None and all(e.path is None for e in result.errors)
        if any(e.get("code") == SERVICE_UNAVAILABLE for e in extensions):
            sub_response.status_code = 503
            retry = max(int(e.get("retryAfterSeconds") or 1) for e in extensions)
            sub_response.headers["Retry-After"] = str(retry)
        elif media_type == http.GRAPHQL_RESPONSE_JSON and before_execution:
            sub_response.status_code = 400
        if media_type == http.GRAPHQL_RESPONSE_JSON and before_execution:
            body.pop("data", None)
        return body

    async def render_graphql_ide(self, request: Request) -> HTMLResponse:
        """taskql's own GraphiQL page (``api.graphiql``): pinned local assets, no CDN."""
        return await graphiql.page(request)


def _fault_error(known: ApiError) -> http.RequestError:
    """A SERVICE_UNAVAILABLE error as a request error: 503 with Retry-After."""
    extensions = dict(known.extensions or {})
    retry = extensions.get("retryAfterSeconds")
    return http.RequestError(
        503,
        known.message,
        code=str(extensions.pop("code", SERVICE_UNAVAILABLE)),
        headers={"Retry-After": str(retry)} if retry else None,
        extensions=extensions,
    )


def tune_gc(settings: Settings) -> None:
    """Fewer cyclic garbage collections, and none over the objects of start-up.

    A GraphQL response on the resolver path allocates thousands of short-lived objects; with
    Python's default threshold (700) the collector runs several times per request. Freezing
    the start-up heap and raising the generation-0 threshold took the resolver main query's
    p95 from 56 ms to 19 ms in-process (c6f2029, 2026-11-24). But a collection's pause grows with the
    threshold: measured on search (2,000 requests in-process, largest tenant), a collection
    took 0.9 ms at 2,000, 2 ms at 5,000, 5 ms at 10,000, 20-35 ms at 30,000 and 30-50 ms at
    100,000, which made search's p99 40+ ms at concurrency 1. 5,000: p50 3.5 ms, p99 6.6 ms,
    max 10 ms (100,000: p99 5.9, max 57; 700: p99 8.7, max 22). Compiled queries allocate
    little: at 5,000 they see a 1 ms collection every ~100 requests.
    """
    if settings.taskql_gc_threshold:
        gc.collect()
        gc.freeze()
        gc.set_threshold(settings.taskql_gc_threshold, 50, 100)


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    """Open the bounded pool as the server role; close it (and the rate-limit store's
    connections, and the readiness check's) on shutdown.

    A pool opened by the caller (the test suite) is used as it is and left open.
    """
    settings = get_settings()
    tune_gc(settings)
    hub: Hub | None = getattr(app.state, "hub", None)
    try:
        async with _database(), _replicas(settings), _sampler(settings):
            if hub is not None:
                await hub.start()
            try:
                yield
            finally:
                if hub is not None:
                    await hub.stop()
    finally:
        health: Health | None = getattr(app.state, "health", None)
        if health is not None:
            await health.close()
        limits: LoginLimits | None = getattr(app.state, "login_limits", None)
        if limits is not None:
            await limits.close()
        persisted: PersistedOperations | None = getattr(app.state, "persisted", None)
        if persisted is not None:
            await persisted.close()


@asynccontextmanager
async def _sampler(settings: Settings) -> AsyncIterator[None]:
    if not settings.taskql_metrics:
        yield
        return
    async with metrics.pool_sampler():
        yield


@asynccontextmanager
async def _database() -> AsyncIterator[None]:
    owned = DB.pool is None
    if owned:
        if DB.dsn is None:
            DB.configure(resolve().require_server(), get_settings())
        # Every setting taskql makes is transaction-local: no reset query on release
        # (DB_SESSION_RESET=1 restores asyncpg's).
        await DB.start_connection_pool(
            session_reset=bool(DB.settings and DB.settings.db_session_reset)
        )
    try:
        yield
    finally:
        if owned:
            await DB.close_pool_within(10)


@asynccontextmanager
async def _replicas(settings: Settings) -> AsyncIterator[None]:
    """The read replicas of DATABASE_REPLICA_URL (``db.replicas``), checked in the background.
    Replicas configured by the caller (the test suite) are used as they are and left open."""
    owned = not REPLICAS.enabled and bool(settings.replica_urls)
    if owned:
        REPLICAS.configure(settings)
        await REPLICAS.start()
    try:
        yield
    finally:
        if owned:
            await REPLICAS.stop()
            REPLICAS.replicas = []


def _cors(settings: Settings) -> list[Middleware]:
    """Cross-origin access for the origins in TASKQL_CORS_ORIGINS (none by default), outside
    authentication, so preflights are answered and refusals (401, 503) carry the headers.
    Bearer tokens, not cookies: no credentials are allowed."""
    if not settings.taskql_cors_origins:
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=list(settings.taskql_cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "X-Organization",
                "X-Request-Id",
                "X-Taskql-Lsn",
            ],
            expose_headers=["X-Request-Id", "Retry-After", "X-Taskql-Lsn"],
            max_age=settings.taskql_cors_max_age_seconds,
        )
    ]


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or get_settings()
    graphql = TaskqlGraphQL(settings)
    health = Health(settings.taskql_ready_timeout)
    hub = Hub(graphql.core_schema, settings, graphql.login_limits)
    metrics.OPERATION_NAMES.limit = settings.taskql_metrics_max_operations
    db_metrics.enabled = settings.taskql_metrics
    app = Starlette(
        routes=[
            Route("/livez", health.livez, methods=["GET"]),
            Route("/readyz", health.readyz, methods=["GET"]),
            Route("/healthz", health.healthz, methods=["GET"]),  # deprecated: /readyz
            Route("/metrics", metrics.endpoint, methods=["GET"]),
            # Every method reaches the view, which refuses others with a GraphQL JSON 405.
            Route("/graphql", graphql),
            WebSocketRoute("/graphql", Endpoint(hub, settings, graphql.persisted)),
            Route(f"{graphiql.STATIC_PATH}/{{name}}", graphiql.static, methods=["GET", "HEAD"]),
        ],
        middleware=[
            # Outermost: every request is counted and timed, refusals included.
            Middleware(
                metrics.MetricsMiddleware,
                count=settings.taskql_metrics,
                access_log=AccessLog(
                    settings.taskql_log_format == "json", settings.taskql_slow_operation_ms
                ),
            ),
            *_cors(settings),
            # Then: a client that goes away cancels everything below.
            Middleware(CancelOnDisconnect),
            Middleware(
                TaskqlMiddleware,
                max_body_bytes=settings.taskql_max_body_bytes,
                statement_timeout_ms=settings.taskql_request_statement_timeout_ms,
                trusted_proxies=settings.taskql_trusted_proxies,
                fairness=Fairness(
                    settings.taskql_max_operations_per_caller,
                    settings.taskql_max_queued_per_caller,
                ),
                settings=settings,
            ),
        ],
        lifespan=lifespan,
    )
    app.state.login_limits = graphql.login_limits
    app.state.persisted = graphql.persisted
    app.state.graphql = graphql
    app.state.health = health
    app.state.metrics_token = settings.taskql_metrics_token
    app.state.hub = hub
    return app
