"""The limit: the main query's data from ONE hand-written SQL statement per request, through
asyncpg, with the tenant set in a transaction, served over HTTP by the same uvicorn. What no
GraphQL server on PostgreSQL can beat. Configured by LIMIT_DSN, LIMIT_ORG, LIMIT_PROJECT (and LIMIT_POOL_SIZE)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from uuid import UUID

import asyncpg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

# The same statement the in-process benchmark uses (bench/graphql_inprocess.py).
HANDWRITTEN = (Path(__file__).parent / "main_query.sql").read_text()
pool: asyncpg.Pool | None = None


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    global pool
    size = int(os.environ.get("LIMIT_POOL_SIZE", "10"))
    pool = await asyncpg.create_pool(os.environ["LIMIT_DSN"], min_size=2, max_size=size)
    yield
    await pool.close()


async def main_query(request: Request) -> Response:
    await request.body()
    organization, project = UUID(os.environ["LIMIT_ORG"]), UUID(os.environ["LIMIT_PROJECT"])
    assert pool is not None
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute(
            "SELECT set_config('app.organization_id', $1, true)", str(organization)
        )
        body = await connection.fetchval(HANDWRITTEN, organization, project)
    return Response('{"data":{"project":' + body + "}}", media_type="application/json")


app = Starlette(routes=[Route("/graphql", main_query, methods=["POST"])], lifespan=lifespan)
