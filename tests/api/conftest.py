"""HTTP tests drive the real ASGI app in-process (httpx.ASGITransport) against PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest

from api.app import create_app
from api.settings import Settings
from tests.api.world import Org, seed_org


@dataclass
class Api:
    client: httpx.AsyncClient
    #: Whether compiled queries are on (else every operation goes to the resolvers).
    compiled: bool = True

    async def post(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        *,
        token: str | None = None,
        org: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        if org is not None:
            sent["X-Organization"] = org
        return await self.client.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=sent
        )

    async def __call__(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        *,
        as_: tuple[Org, str] | None = None,
        org: str | None = None,
        token: str | None = None,
    ) -> dict[str, Any]:
        """Run an operation as (org, role): that user's token, that org's slug."""
        if as_ is not None:
            tenant, role = as_
            token = tenant.tokens[role]
            org = org or tenant.slug
        response = await self.post(query, variables, token=token, org=org)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@asynccontextmanager
async def api_client(compiled: bool = True) -> AsyncIterator[Api]:
    """The app in-process, with compiled queries on (as deployed) or off (the resolvers)."""
    app = create_app(Settings(taskql_sql_stats=True, taskql_compiled_queries=compiled))
    transport = httpx.ASGITransport(app=app, client=("198.51.100.7", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://taskql.test") as client:
        yield Api(client, compiled)


@pytest.fixture
async def api(pool: asyncpg.Pool) -> AsyncIterator[Api]:
    async with api_client() as api:
        yield api


#: The read paths: a read test that asks for ``read_api`` runs on both (``api/compiler``
#: and the resolvers with their loaders), so neither goes untested.
READ_PATHS = ["compiled", "resolvers"]


@pytest.fixture(params=READ_PATHS)
async def read_api(request: pytest.FixtureRequest, pool: asyncpg.Pool) -> AsyncIterator[Api]:
    async with api_client(request.param == "compiled") as api:
        yield api


@pytest.fixture
async def org_a(pool: asyncpg.Pool) -> Org:
    return await seed_org("a")


@pytest.fixture
async def org_b(pool: asyncpg.Pool) -> Org:
    return await seed_org("b")
