"""The limit: the main query's data from ONE hand-written SQL statement per request, served
over HTTP by the same uvicorn, doing the same database work as taskql around it.

Each request authenticates like taskql's (``Authorization: Bearer``, ``X-Organization``):
the same pooled engine (``db.engine.DB``, same connection settings and pool reset), the
same ``db.tenancy.begin_request`` (BEGIN, then ``app_begin_request``: the session token,
the membership and the whole tenant context in one statement), then the statement, then
COMMIT. Only GraphQL (parsing, validation, compiling, rendering) is left out: no GraphQL
server on this stack can do less and answer the same request.

Two statements, by path:

- ``/graphql``: ``bench/main_query.sql``, the cheapest SQL known for the main query's
  data (raw uuids, no Relay ``edges``: less than the response asks for);
- ``/postgraphile``: ``bench/postgraphile_query.sql``, the same response as taskql's
  (global ids, ``edges``/``nodes``) in PostGraphile 5's shape (see that file's header).

Configured by LIMIT_PROJECT (a project id; the tenant comes from the request) and
DB_POOL_MAX_SIZE (as taskql's servers).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from uuid import UUID

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from db.engine import DB
from db.queries.users import token_hash
from db.settings import get_database_settings
from db.tenancy import TenantContext, begin_request

HERE = Path(__file__).parent
# The same statement the in-process benchmark uses (bench/graphql_inprocess.py).
HANDWRITTEN = (HERE / "main_query.sql").read_text()
POSTGRAPHILE = (HERE / "postgraphile_query.sql").read_text()
_UNAUTHENTICATED = Response('{"errors":[{"message":"unauthenticated"}]}', status_code=401)


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    settings = get_database_settings()
    DB.configure(os.environ["DATABASE_URL"], settings)
    await DB.start_connection_pool(session_reset=settings.db_session_reset)
    yield
    await DB.close_connection_pool()


async def _answer(request: Request, sql: str) -> Response:
    await request.body()
    authorization = request.headers.get("authorization", "")
    if not authorization.startswith("Bearer "):
        return _UNAUTHENTICATED
    project = UUID(os.environ["LIMIT_PROJECT"])
    opened, row = await begin_request(
        token_hash(authorization[len("Bearer ") :]),
        None,
        request.headers.get("x-organization"),
        TenantContext(
            request_id="limit", client_ip=request.client.host if request.client else None
        ),
    )
    try:
        if row is None or row["organization_id"] is None:
            return _UNAUTHENTICATED
        body = await opened.executor.fetchval(sql, row["organization_id"], project)
        await opened.commit()
    finally:
        await opened.close()
    return Response('{"data":{"project":' + body + "}}", media_type="application/json")


async def handwritten(request: Request) -> Response:
    return await _answer(request, HANDWRITTEN)


async def postgraphile(request: Request) -> Response:
    return await _answer(request, POSTGRAPHILE)


app = Starlette(
    routes=[
        Route("/graphql", handwritten, methods=["POST"]),
        Route("/postgraphile", postgraphile, methods=["POST"]),
    ],
    lifespan=lifespan,
)
