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


async def test_graphql_answers_with_the_postgres_version(
    client: httpx.AsyncClient, server_connection: asyncpg.Connection
) -> None:
    response = await client.post(
        "/graphql", json={"query": "{ health { database postgresVersion } }"}
    )
    assert response.status_code == 200
    version = await server_connection.fetchval("SHOW server_version")
    assert response.json() == {"data": {"health": {"database": True, "postgresVersion": version}}}


async def test_graphiql_is_served_to_browsers(client: httpx.AsyncClient) -> None:
    response = await client.get("/graphql", headers={"Accept": "text/html"})
    assert response.status_code == 200
    assert "GraphiQL" in response.text
