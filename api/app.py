"""The ASGI application: Starlette routes, GraphQL at /graphql (GraphiQL for browsers, its
assets under /graphql/static), health at /healthz."""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from cross_web import HTTPException
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLHTTPResponse, process_result
from strawberry.types import ExecutionResult

from api import graphiql
from api.auth import SCOPE_KEY, TRANSACTION_KEY, Auth
from api.compiler import Compiler
from api.context import Context
from api.errors import INTERNAL_SERVER_ERROR, error_body
from api.extensions import coded_errors, operation_context
from api.middleware import TaskqlMiddleware
from api.ratelimit import LoginLimits
from api.realtime.hub import Hub
from api.realtime.protocol import Endpoint
from api.schema import build_schema
from api.settings import Settings, get_settings
from db.engine import DB
from db.errors import DatabaseError
from db.targets import resolve
from db.tenancy import OpenTransaction, request_transaction

_log = logging.getLogger("taskql")


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
        self.login_limits = LoginLimits(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """POSTed queries that ``api.compiler`` can answer in one statement skip GraphQL
        execution; everything else (and every request that would end in an error) goes to
        Strawberry, with the body already read."""
        if self.compiler is None or scope["type"] != "http" or scope["method"] != "POST":
            await super().__call__(scope, receive, send)
            return
        request = Request(scope, receive)
        response = await self.compiled(request)
        if response is None:
            try:
                response = await self.run(request)
            except HTTPException as exc:
                response = PlainTextResponse(exc.reason, status_code=exc.status_code)
        await response(scope, receive, send)

    async def compiled(self, request: Request) -> Response | None:
        """The compiled answer, or None when the resolvers must answer."""
        assert self.compiler is not None
        if not request.headers.get("content-type", "").startswith("application/json"):
            return None
        auth: Auth = request.scope[SCOPE_KEY]
        if auth.viewer is None:
            return None
        try:
            data = json.loads(await request.body())
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        query, name, variables = data.get("query"), data.get("operationName"), data.get("variables")
        if variables is None:
            variables = {}
        if (
            not isinstance(query, str)
            or not isinstance(name, str | None)
            or not isinstance(variables, dict)
        ):
            return None
        prepared = self.compiler.prepare(
            query,
            name,
            variables,
            auth.tenant.organization_id if auth.tenant else None,
            auth.viewer.user_id,
            auth.tenant.role if auth.tenant else None,
        )
        if prepared is None:
            return None
        sql, params = prepared
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
        except asyncpg.PostgresError as exc:
            # What the resolvers answer for a failed statement: masked, logged with the id.
            _log.error("compiled query failed [request %s]: %s", auth.request_id, exc)
            body = error_body(INTERNAL_SERVER_ERROR, "Unexpected error.", requestId=auth.request_id)
            return Response(body, media_type="application/json")
        except (DatabaseError, OSError, asyncpg.InterfaceError):
            if opened is not None:
                await opened.close()
            return None  # pool or connection trouble: the resolver path reports it
        extensions = ""
        if self.settings.taskql_sql_stats:
            extensions = f',"extensions":{{"sqlStatements":{executor.statements}}}'
        return Response(f'{{"data":{text}{extensions}}}', media_type="application/json")

    async def get_context(self, request: Request, response: Response) -> Context:  # type: ignore[override]
        auth: Auth = request.scope[SCOPE_KEY]
        return Context(
            request=request,
            response=response,
            auth=auth,
            settings=self.settings,
            login_limits=self.login_limits,
        )

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        """Every error leaves with its code (and unexpected ones masked), whatever phase
        raised it: parsing, validation, limits or execution."""
        if result.errors:
            auth: Auth | None = request.scope.get(SCOPE_KEY)
            result.errors = coded_errors(result.errors, auth.request_id if auth else None)
        return process_result(result)

    async def render_graphql_ide(self, request: Request) -> HTMLResponse:
        """taskql's own GraphiQL page (``api.graphiql``): pinned local assets, no CDN."""
        return await graphiql.page(request)


def tune_gc(settings: Settings) -> None:
    """Fewer cyclic garbage collections, and none over the objects of start-up.

    A GraphQL response on the resolver path allocates thousands of short-lived objects; with
    Python's default threshold (700) the collector runs several times per request. Freezing
    the start-up heap and raising the generation-0 threshold took the resolver main query's
    p95 from 56 ms to 19 ms in-process (session 1). But a collection's pause grows with the
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
    connections) on shutdown.

    A pool opened by the caller (the test suite) is used as it is and left open.
    """
    tune_gc(get_settings())
    hub: Hub | None = getattr(app.state, "hub", None)
    try:
        async with _database():
            if hub is not None:
                await hub.start()
            try:
                yield
            finally:
                if hub is not None:
                    await hub.stop()
    finally:
        limits: LoginLimits | None = getattr(app.state, "login_limits", None)
        if limits is not None:
            await limits.close()


@asynccontextmanager
async def _database() -> AsyncIterator[None]:
    owned = DB.pool is None
    if owned:
        if DB.dsn is None:
            DB.configure(resolve().require_server(), get_settings())
        await DB.start_connection_pool()
    try:
        yield
    finally:
        if owned:
            await DB.close_connection_pool()


async def healthz(request: Request) -> JSONResponse:
    """Liveness and readiness: 200 when PostgreSQL answers through the pool, else 503."""
    try:
        async with DB.transaction() as tx:
            await tx.connection.fetchval("SELECT 1")
    except (DatabaseError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        _log.warning("health check failed: %s", exc)
        return JSONResponse({"status": "unavailable", "database": str(exc)}, status_code=503)
    pool = DB.pool
    return JSONResponse(
        {
            "status": "ok",
            "database": "ok",
            "pool": {
                "size": pool.get_size() if pool else 0,
                "idle": pool.get_idle_size() if pool else 0,
                "max": pool.get_max_size() if pool else 0,
            },
        }
    )


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or get_settings()
    graphql = TaskqlGraphQL(settings)
    hub = Hub(graphql.core_schema, settings, graphql.login_limits)
    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/graphql", graphql, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", Endpoint(hub, settings)),
            Route(f"{graphiql.STATIC_PATH}/{{name}}", graphiql.static, methods=["GET", "HEAD"]),
        ],
        middleware=[
            Middleware(
                TaskqlMiddleware,
                max_body_bytes=settings.taskql_max_body_bytes,
                statement_timeout_ms=settings.taskql_request_statement_timeout_ms,
                trusted_proxies=settings.taskql_trusted_proxies,
            )
        ],
        lifespan=lifespan,
    )
    app.state.login_limits = graphql.login_limits
    app.state.hub = hub
    return app
