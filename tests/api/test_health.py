"""The HTTP surface that exists before the full API: /healthz and the GraphQL endpoint."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from api.app import create_app


@pytest.fixture
async def client(pool: asyncpg.Pool) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://taskql.test") as client:
        yield client


async def test_healthz_reports_the_database_and_the_pool(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["pool"]["max"] >= 1


async def test_graphql_answers_anonymous_callers(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/graphql", json={"query": "{ viewer { user { id } } }"})
    assert response.status_code == 200
    assert response.json() == {"data": {"viewer": None}}


async def test_graphiql_is_served_to_browsers(client: httpx.AsyncClient) -> None:
    response = await client.get("/graphql", headers={"Accept": "text/html"})
    assert response.status_code == 200
    assert "GraphiQL" in response.text
    # Our example query and headers replaced Strawberry's defaults.
    assert "mutation LogIn" in response.text
    assert "X-Organization" in response.text
