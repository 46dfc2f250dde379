"""Issue 13, "GraphQL over HTTP, as the spec says", and the faults of "never a 500": the
graphql-response+json media type, request errors as GraphQL JSON, one reading of a request
on both paths, CORS; a statement timeout is TIMEOUT, the database down or the pool exhausted
a 503 with Retry-After (anonymous operations too). Real PostgreSQL: backends are terminated
by the embedded superuser, the pool is exhausted by holding its connections."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from api.app import create_app
from api.settings import Settings
from db.engine import DB
from tests.api.conftest import Api
from tests.api.world import Org
from tests.conftest import ScratchDatabase

GRAPHQL_RESPONSE = "application/graphql-response+json"


@pytest.fixture(params=["compiled", "resolvers"])
async def both(request: pytest.FixtureRequest, pool: asyncpg.Pool) -> AsyncIterator[Api]:
    settings = Settings(
        taskql_compiled_queries=request.param == "compiled",
        taskql_request_statement_timeout_ms=300,
    )
    transport = httpx.ASGITransport(app=create_app(settings), client=("198.51.100.7", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://taskql.test") as client:
        yield Api(client)


def auth(org: Org, role: str = "member", **more: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {org.tokens[role]}", "X-Organization": org.slug, **more}


TASKS = "query($p: ID!) { project(id: $p) { tasks(first: 5) { totalCount } } }"


# --- application/graphql-response+json -----------------------------------------------------


@pytest.mark.parametrize(
    ("document", "variables"),
    [
        ("{ viewer { ", {}),  # parse
        ("{ nope }", {}),  # validation
        ('query($n: Int!) { search(text: "x", first: $n) { totalCount } }', {"n": "x"}),
        ('query($n: Int!) { search(text: "x", first: $n) { totalCount } }', {}),
    ],
    ids=["parse", "validation", "variable coercion", "missing variable"],
)
async def test_graphql_response_json_gives_4xx_without_data_before_execution(
    both: Api, org_a: Org, org_b: Org, document: str, variables: dict[str, Any]
) -> None:
    accept = {"Accept": GRAPHQL_RESPONSE}
    for sent in (accept, auth(org_a, **accept)):
        response = await both.client.post(
            "/graphql", json={"query": document, "variables": variables}, headers=sent
        )
        assert response.status_code == 400, response.text
        assert response.headers["content-type"] == GRAPHQL_RESPONSE
        body = response.json()
        assert "data" not in body
        assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    # application/json keeps today's answer: 200 with data null.
    legacy = await both.client.post(
        "/graphql",
        json={"query": document, "variables": variables},
        headers=auth(org_a, Accept="application/json"),
    )
    assert legacy.status_code == 200
    assert legacy.headers["content-type"] == "application/json"
    assert legacy.json()["data"] is None


async def test_graphql_response_json_answers_a_query_with_200(
    both: Api, org_a: Org, org_b: Org
) -> None:
    response = await both.client.post(
        "/graphql",
        json={"query": TASKS, "variables": {"p": org_a.project}},
        headers=auth(org_a, Accept=f"{GRAPHQL_RESPONSE}, application/json;q=0.9"),
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == GRAPHQL_RESPONSE
    assert response.json()["data"]["project"]["tasks"]["totalCount"] == 3
    other = await both.client.post(
        "/graphql",
        json={"query": TASKS, "variables": {"p": org_b.project}},
        headers=auth(org_a, Accept=GRAPHQL_RESPONSE),
    )
    assert other.status_code == 200
    assert other.json()["data"]["project"] is None  # the other tenant's project: not seen


async def test_request_errors_use_the_negotiated_media_type(api: Api, org_a: Org) -> None:
    response = await api.client.post(
        "/graphql",
        content=b"{not json",
        headers={"content-type": "application/json", "Accept": GRAPHQL_RESPONSE},
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == GRAPHQL_RESPONSE
    refused = await api.client.post(
        "/graphql",
        json={"query": "{ __typename }"},
        headers={"Authorization": "Bearer nope", "Accept": GRAPHQL_RESPONSE},
    )
    assert refused.status_code == 401
    assert refused.headers["content-type"] == GRAPHQL_RESPONSE
    assert "data" not in refused.json()


async def test_a_mutation_over_get_is_a_405_in_graphql_json(
    api: Api, org_a: Org, org_b: Org
) -> None:
    response = await api.client.get(
        "/graphql",
        params={"query": 'mutation { logIn(input: {email: "a@b.test", password: "x"}) { token } }'},
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    query = await api.client.get(
        "/graphql",
        params={"query": TASKS, "variables": json.dumps({"p": org_a.project})},
        headers=auth(org_a, Accept="application/json"),
    )
    assert query.status_code == 200
    assert query.json()["data"]["project"]["tasks"]["totalCount"] == 3


async def test_other_methods_are_a_405_in_graphql_json(api: Api) -> None:
    for method in ("PUT", "DELETE", "OPTIONS", "PATCH"):
        response = await api.client.request(method, "/graphql")
        assert response.status_code == 405, method
        assert response.headers["allow"] == "GET, POST"
        assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


# --- CORS ----------------------------------------------------------------------------------


async def test_cors_preflight_is_answered_for_configured_origins(pool: asyncpg.Pool) -> None:
    app = create_app(Settings(taskql_cors_origins=("https://app.example.test",)))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://taskql.test"
    ) as client:
        preflight = await client.options(
            "/graphql",
            headers={
                "Origin": "https://app.example.test",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type, x-organization",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://app.example.test"
        assert "POST" in preflight.headers["access-control-allow-methods"]
        assert "x-organization" in preflight.headers["access-control-allow-headers"].lower()
        stranger = await client.options(
            "/graphql",
            headers={"Origin": "https://evil.test", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in stranger.headers
        simple = await client.post(
            "/graphql",
            json={"query": "{ __typename }"},
            headers={"Origin": "https://app.example.test"},
        )
        assert simple.headers["access-control-allow-origin"] == "https://app.example.test"
        assert "x-request-id" in simple.headers["access-control-expose-headers"].lower()


async def test_no_cors_headers_by_default(api: Api) -> None:
    response = await api.client.post(
        "/graphql", json={"query": "{ __typename }"}, headers={"Origin": "https://app.test"}
    )
    assert "access-control-allow-origin" not in response.headers


# --- faults --------------------------------------------------------------------------------


async def test_a_statement_timeout_is_timeout_naming_the_limit(
    both: Api, org_a: Org, org_b: Org, owner: asyncpg.Connection
) -> None:
    """The tasks table locked by another transaction: the read waits past the request's
    statement timeout (300 ms, below the lock timeout) on both paths, and so does a write."""
    transaction = owner.transaction()
    await transaction.start()
    try:
        await owner.execute("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
        read = await both.client.post(
            "/graphql",
            json={"query": TASKS, "variables": {"p": org_a.project}},
            headers=auth(org_a),
        )
        write = await both.client.post(
            "/graphql",
            json={
                "query": 'mutation($id: ID!) { updateTask(input: {id: $id, title: "T"}) '
                "{ task { title } } }",
                "variables": {"id": org_a.task(0)},
            },
            headers=auth(org_a),
        )
    finally:
        await transaction.rollback()
    for response in (read, write):
        assert response.status_code == 200, response.text
        error = response.json()["errors"][0]
        assert error["extensions"]["code"] == "TIMEOUT", error
        assert error["extensions"]["limit"] == "TASKQL_REQUEST_STATEMENT_TIMEOUT_MS"
        assert "TASKQL_REQUEST_STATEMENT_TIMEOUT_MS = 300 ms" in error["message"]
    assert write.json()["data"] is None or write.json()["data"]["updateTask"] is None


@pytest.fixture
async def exhausted(pool: asyncpg.Pool) -> AsyncIterator[None]:
    """Every pooled connection held, and a short acquire timeout."""
    held = [await pool.acquire() for _ in range(pool.get_max_size())]
    timeout, DB.acquire_timeout = DB.acquire_timeout, 0.2
    try:
        yield
    finally:
        DB.acquire_timeout = timeout
        for connection in held:
            await pool.release(connection)


LOG_IN = (
    'mutation { logIn(input: {email: "nobody@example.test", password: "0123456789"}) { token } }'
)


def assert_503(response: httpx.Response, reason: str) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    error = response.json()["errors"][0]
    assert error["extensions"]["code"] == "SERVICE_UNAVAILABLE"
    assert error["extensions"]["reason"] == reason
    assert "Unexpected" not in error["message"]


async def test_pool_exhausted_is_a_503_for_everyone(
    both: Api, org_a: Org, org_b: Org, exhausted: None
) -> None:
    signed_in = await both.client.post(
        "/graphql", json={"query": TASKS, "variables": {"p": org_a.project}}, headers=auth(org_a)
    )
    assert_503(signed_in, "POOL_EXHAUSTED")
    anonymous = await both.client.post("/graphql", json={"query": LOG_IN})
    assert_503(anonymous, "POOL_EXHAUSTED")
    assert "busy" in anonymous.json()["errors"][0]["message"]


async def _terminate_waiting_backend(test_database: ScratchDatabase, role: str) -> None:
    """Terminate the server role's backend that waits for a lock, once it waits."""
    assert test_database.admin_dsn is not None
    admin = await asyncpg.connect(test_database.admin_dsn)
    try:
        for _ in range(200):
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE usename = $1 AND wait_event_type = 'Lock'",
                role,
            )
            if killed:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("no request waited for the lock")
    finally:
        await admin.close()


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "resolvers"])
@pytest.mark.parametrize("signed_in", [True, False], ids=["member", "anonymous"])
async def test_a_connection_killed_under_a_request_is_a_503_not_a_500(
    org_a: Org,
    org_b: Org,
    owner: asyncpg.Connection,
    test_database: ScratchDatabase,
    pool: asyncpg.Pool,
    compiled: bool,
    signed_in: bool,
) -> None:
    """PostgreSQL terminates the backend a request is using (as on a restart or a failover):
    the request gets a 503 DATABASE_UNAVAILABLE with Retry-After, and the next one is fine."""
    if test_database.admin_dsn is None:
        pytest.skip("needs the embedded server's superuser")
    app = create_app(Settings(taskql_compiled_queries=compiled))
    role = await pool.fetchval("SELECT current_user")
    if signed_in:
        table, request = "tasks", {"query": TASKS, "variables": {"p": org_a.project}}
        sent = auth(org_a)
    else:
        table, request, sent = "users", {"query": LOG_IN}, {}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://taskql.test"
    ) as client:
        transaction = owner.transaction()
        await transaction.start()
        try:
            await owner.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            pending = asyncio.ensure_future(client.post("/graphql", json=request, headers=sent))
            await _terminate_waiting_backend(test_database, role)
            response = await pending
        finally:
            await transaction.rollback()
        assert_503(response, "DATABASE_UNAVAILABLE")
        again = await client.post("/graphql", json=request, headers=sent)
        assert again.status_code == 200, again.text
        assert "errors" not in again.json() or signed_in is False
