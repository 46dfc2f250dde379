"""The ASGI application: Starlette routes, GraphQL at /graphql, health at /healthz."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from strawberry.asgi import GraphQL

from api.schema import schema
from api.settings import get_settings
from db.engine import DB
from db.errors import DatabaseError
from db.targets import resolve

_log = logging.getLogger("taskql")


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    """Open the bounded pool as the server role; close it on shutdown.

    A pool opened by the caller (the test suite) is used as it is and left open.
    """
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
    except (DatabaseError, OSError) as exc:
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


def create_app() -> Starlette:
    graphql = GraphQL(schema, graphql_ide="graphiql")
    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/graphql", graphql, methods=["GET", "POST"]),
        ],
        lifespan=lifespan,
    )
