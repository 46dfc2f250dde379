"""The HTTP surface that exists before the full API: health endpoints and GraphQL."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from api.app import create_app
from api.settings import Settings
from db.engine import DB
from db.migrate import runner

DEAD = "postgresql://taskql_app@127.0.0.1:9/taskql"


@pytest.fixture
async def client(pool: asyncpg.Pool) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(taskql_ready_timeout=1.0))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://taskql.test") as client:
        yield client
    await app.state.health.close()  # what the lifespan does (ASGITransport runs none)


@pytest.fixture
async def dead_database(pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    """The engine pointed at a port where nothing listens: its pool and new connections."""
    dead_pool = await asyncpg.create_pool(DEAD, min_size=0, max_size=2)
    monkeypatch.setattr(DB, "pool", dead_pool)
    monkeypatch.setattr(DB, "dsn", DEAD)
    monkeypatch.setattr(DB, "config", {**DB.config, "dsn": DEAD})
    yield
    await dead_pool.close()


async def test_readyz_reports_the_database_the_migrations_and_the_pool(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"] == "ok"
    assert body["migrations"] == "current"
    assert body["pool"]["max"] >= 1
    assert body["pool"]["busy"] is False


async def test_healthz_is_the_deprecated_name_of_readyz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["migrations"] == "current"
    assert response.headers["deprecation"] == "true"


async def test_livez_needs_no_database(client: httpx.AsyncClient, dead_database: None) -> None:
    """Guards: /healthz was liveness and readiness at once: an orchestrator restarting on it
    would restart healthy pods whenever PostgreSQL is away."""
    response = await client.get("/livez")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.parametrize("path", ["/readyz", "/healthz"])
async def test_a_dead_database_is_not_ready_and_the_body_carries_no_driver_text(
    client: httpx.AsyncClient,
    dead_database: None,
    caplog: pytest.LogCaptureFixture,
    path: str,
) -> None:
    """Guards: /healthz echoed the raw error (host, port, errno) in its body."""
    with caplog.at_level(logging.WARNING, logger="taskql.health"):
        response = await client.get(path)
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "database": "unreachable"}
    assert "127.0.0.1" not in response.text
    assert "refused" not in response.text.lower()
    # The cause is in the log instead.
    assert any("127.0.0.1:9" in r.getMessage() for r in caplog.records), caplog.text


async def test_an_exhausted_pool_is_busy_not_dead(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    """Guards: /healthz answered 503 under pool exhaustion (after DB_ACQUIRE_TIMEOUT)."""
    held = [await pool.acquire() for _ in range(pool.get_max_size())]
    try:
        started = time.monotonic()
        for path in ("/readyz", "/healthz", "/readyz"):
            response = await client.get(path)
            assert response.status_code == 200, response.text
            assert response.json()["pool"]["busy"] is True
        assert time.monotonic() - started < 3
    finally:
        for connection in held:
            await pool.release(connection)
    # Back to the pool once it has room.
    assert (await client.get("/readyz")).json()["pool"]["busy"] is False


async def test_pending_migrations_are_not_ready(
    client: httpx.AsyncClient, owner: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    """Guards: /healthz said ok on an unmigrated database, and every log-in then failed."""
    newest = runner.migration_ids()[-1]
    ran_on = await owner.fetchval("SELECT ran_on FROM migration WHERE name = $1", newest)
    await owner.execute("DELETE FROM migration WHERE name = $1", newest)
    try:
        response = await client.get("/readyz")
        held = [await pool.acquire() for _ in range(pool.get_max_size())]
        try:
            busy = await client.get("/readyz")  # the check connection sees it too
        finally:
            for connection in held:
                await pool.release(connection)
    finally:
        await owner.execute(
            "INSERT INTO migration (name, app_name, ran_on) VALUES ($1, 'taskql', $2)",
            newest,
            ran_on,
        )
    for answer in (response, busy):
        assert answer.status_code == 503
        assert answer.json()["migrations"] == "pending"
        assert answer.json()["database"] == "ok"
    assert (await client.get("/readyz")).status_code == 200


async def test_repeated_failures_write_one_line_per_interval(
    client: httpx.AsyncClient, dead_database: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="taskql.health"):
        for _ in range(20):
            assert (await client.get("/readyz")).status_code == 503
    assert len([r for r in caplog.records if r.name == "taskql.health"]) == 1


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
