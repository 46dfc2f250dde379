"""Prometheus metrics in-process: what each request adds, who may read /metrics, bounded
labels, and the pool, connection and database metrics, against the real PostgreSQL.

The registry is the process's own (no multiprocess folder here), shared by the whole test
session: every check compares two scrapes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from api.settings import Settings
from db import metrics as db_metrics
from db.engine import DB
from db.errors import PoolTimeoutError
from tests.api.world import Org
from tests.conftest import THROUGH_PGBOUNCER, ScratchDatabase

TOKEN = "metrics-token-for-the-tests"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


@dataclass
class Client:
    http: httpx.AsyncClient

    async def scrape(self) -> Samples:
        response = await self.http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        return parse(response.text)

    async def graphql(
        self, query: str, *, org: Org | None = None, role: str = "owner", **extra: object
    ) -> httpx.Response:
        headers = {}
        if org is not None:
            headers = {"Authorization": f"Bearer {org.tokens[role]}", "X-Organization": org.slug}
        return await self.http.post(
            "/graphql", json={"query": query, "variables": {}, **extra}, headers=headers
        )


@pytest.fixture
async def client(pool: asyncpg.Pool) -> AsyncIterator[Client]:
    app = create_app(Settings(taskql_metrics_token=TOKEN))
    transport = httpx.ASGITransport(app=app, client=("198.51.100.7", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://taskql.test") as http:
        yield Client(http)


TASKS = "query ProjectTasks($id: ID!) { project(id: $id) { tasks(first: 5) { nodes { title } } } }"


async def test_requests_are_counted_by_operation_path_status_and_code(
    client: Client, org_a: Org
) -> None:
    before = await client.scrape()
    compiled = await client.http.post(
        "/graphql",
        json={"query": TASKS, "variables": {"id": org_a.project}},
        headers={"Authorization": f"Bearer {org_a.tokens['owner']}", "X-Organization": org_a.slug},
    )
    assert compiled.status_code == 200
    assert "errors" not in compiled.json()
    anonymous = await client.graphql("query Ping { __typename }")
    assert anonymous.json() == {"data": {"__typename": "Query"}}
    broken = await client.graphql("query Broken { nope }")
    assert broken.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    mutation = await client.graphql(
        'mutation Rename { updateOrganization(input: {name: "x"}) { organization { id } } }'
    )
    after = await client.scrape()

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    requests = "taskql_graphql_requests_total"
    assert delta(requests, operation="ProjectTasks", type="query", path="compiled") == 1
    assert (
        delta(requests, operation="Ping", type="query", path="resolvers", status="200", code="none")
        == 1
    )
    assert delta(requests, operation="Broken", code="BAD_USER_INPUT") == 1
    assert delta(requests, operation="Rename", type="mutation") == 1, mutation.text
    assert delta(requests) == 4
    # Latency histogram: one observation per request, 0.1 s is a bucket boundary (the SLA).
    latency = "taskql_graphql_request_duration_seconds"
    assert delta(f"{latency}_count", operation="ProjectTasks", path="compiled") == 1
    bounds = {
        dict(ls)["le"]
        for (n, ls) in after
        if n == f"{latency}_bucket" and ("operation", "Ping") in ls
    }
    assert {"0.075", "0.1", "0.15"} <= bounds
    # The compiled query is one statement after the authenticating one.
    statements = "taskql_graphql_sql_statements"
    assert delta(f"{statements}_count", operation="ProjectTasks", path="compiled") == 1
    assert delta(f"{statements}_sum", operation="ProjectTasks", path="compiled") == 2


async def test_metrics_need_the_token_and_are_absent_without_one(
    client: Client, pool: asyncpg.Pool
) -> None:
    assert (await client.http.get("/metrics")).status_code == 401
    wrong = await client.http.get("/metrics", headers={"Authorization": "Bearer nope-nope-nope"})
    assert wrong.status_code == 401
    app = create_app(Settings())  # no TASKQL_METRICS_TOKEN: nothing on the public port
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://taskql.test") as http:
        response = await http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 404


async def test_labels_stay_bounded_and_never_carry_ids_or_documents(
    client: Client, org_a: Org
) -> None:
    # A name the document does not have is the client's claim: never a label.
    claimed = await client.graphql("query Real { __typename }", operationName="Claimed")
    assert claimed.status_code == 400
    from api import metrics

    saved = metrics.OPERATION_NAMES.limit
    metrics.OPERATION_NAMES.limit = len(metrics.OPERATION_NAMES._seen)  # full from now on
    try:
        await client.graphql("query NeverSeenBefore { __typename }")
    finally:
        metrics.OPERATION_NAMES.limit = saved
    await client.graphql("{ __typename }")
    text = (await client.http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})).text
    samples = parse(text)
    operations = {
        dict(ls)["operation"] for (n, ls) in samples if n == "taskql_graphql_requests_total"
    }
    assert "Claimed" not in operations
    assert "NeverSeenBefore" not in operations
    assert {"other", "anonymous", "none"} <= operations
    for secret in (org_a.slug, str(org_a.id), str(org_a.users["owner"]), org_a.tokens["owner"]):
        assert secret not in text
    assert "__typename" not in text


async def test_auth_outcomes_are_counted(client: Client, org_a: Org) -> None:
    before = await client.scrape()
    await client.graphql(
        'mutation { logIn(input: {email: "nobody@example.test", password: "wrong password"}) '
        "{ token } }"
    )
    bad = await client.http.post(
        "/graphql", json={"query": "{ __typename }"}, headers={"Authorization": "Bearer unknown"}
    )
    assert bad.status_code == 401
    stranger = await client.http.post(
        "/graphql",
        json={"query": "{ __typename }"},
        headers={"Authorization": f"Bearer {org_a.tokens['owner']}", "X-Organization": "nowhere"},
    )
    assert stranger.status_code == 403
    out = await client.graphql("mutation { logOut { ok } }", org=org_a, role="viewer")
    assert out.json()["data"]["logOut"]["ok"] is True
    after = await client.scrape()

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("taskql_auth_logins_total", result="failed") == 1
    assert delta("taskql_auth_rejected_total", reason="invalid_token") == 1
    assert delta("taskql_auth_rejected_total", reason="not_member") == 1
    assert delta("taskql_auth_sessions_revoked_total", reason="log_out") == 1
    assert delta("taskql_graphql_requests_total", status="401", code="UNAUTHENTICATED") == 1
    assert delta("taskql_graphql_requests_total", status="403", code="FORBIDDEN") == 1


async def test_pool_gauges_acquire_histogram_and_timeouts(
    client: Client, pool: asyncpg.Pool
) -> None:
    before = await client.scrape()
    held = [await DB.acquire() for _ in range(pool.get_max_size())]
    saved, DB.acquire_timeout = DB.acquire_timeout, 0.05
    try:
        during = await client.scrape()
        with pytest.raises(PoolTimeoutError):
            await DB.acquire()
    finally:
        DB.acquire_timeout = saved
        for connection in held:
            await pool.release(connection)
    after = await client.scrape()
    assert value(during, "taskql_db_pool_in_use") == pool.get_max_size()
    assert value(during, "taskql_db_pool_idle") == 0
    assert value(during, "taskql_db_pool_max_size") == pool.get_max_size()
    assert (
        value(after, "taskql_db_pool_acquire_timeouts_total")
        - value(before, "taskql_db_pool_acquire_timeouts_total")
        == 1
    )
    acquired = value(after, "taskql_db_pool_acquire_seconds_count") - value(
        before, "taskql_db_pool_acquire_seconds_count"
    )
    assert acquired >= pool.get_max_size() + 1
    assert value(after, "taskql_db_pool_waiting") == 0


async def test_lost_connections_and_statement_timeouts_are_counted(
    client: Client, pool: asyncpg.Pool, server_connection: asyncpg.Connection
) -> None:
    if THROUGH_PGBOUNCER:
        pytest.skip("behind PgBouncer a terminated backend does not drop the client connection")
    before = await client.scrape()
    async with DB.transaction() as tx:
        victim = await tx.connection.fetchval("SELECT pg_backend_pid()")
    # Terminated by the server (as an administrator or a restart would): lost, not closed.
    assert await server_connection.fetchval("SELECT pg_terminate_backend($1)", victim)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while True:
        after = await client.scrape()
        lost = value(after, "taskql_db_connections_lost_total") - value(
            before, "taskql_db_connections_lost_total"
        )
        if lost >= 1 or loop.time() > deadline:
            break
        await asyncio.sleep(0.05)  # the closed socket is noticed by the event loop
    assert lost == 1
    from db.executor import Executor

    async with DB.transaction() as tx:
        executor = Executor(tx.connection)
        await executor.execute("SET LOCAL statement_timeout = 20")
        with pytest.raises(asyncpg.QueryCanceledError):
            await executor.execute("SELECT pg_sleep(1)")
    after = await client.scrape()
    timeouts = value(after, "taskql_db_statement_errors_total", kind="statement_timeout") - value(
        before, "taskql_db_statement_errors_total", kind="statement_timeout"
    )
    assert timeouts == 1
    cancel = asyncpg.QueryCanceledError("canceling statement due to user request")
    assert db_metrics.error_kind(cancel) == "canceled"


async def test_database_snapshot(client: Client, test_database: ScratchDatabase) -> None:
    owner = await asyncpg.connect(test_database.owner_dsn)
    try:
        await owner.fetchval("SELECT audit_logs_create_partitions(3)")
        version = await owner.fetchval("SELECT current_setting('server_version')")
    finally:
        await owner.close()
    samples = await client.scrape()
    assert value(samples, "taskql_db_up") == 1
    assert value(samples, "taskql_db_server_version_info", version=version) == 1
    assert value(samples, "taskql_db_server_version_num") >= 150000
    assert value(samples, "taskql_db_audit_partitions_ahead") >= 3
    assert ("taskql_db_deadlocks_total", frozenset()) in samples
    assert value(samples, "taskql_db_oldest_transaction_seconds") >= 0


async def test_database_down_is_reported_not_raised() -> None:
    found = await db_metrics.snapshot({"dsn": "postgresql://nobody@127.0.0.1:1/none"}, within=2)
    assert not found.up
    from api.metrics import render

    samples = parse(render(found).decode())
    assert value(samples, "taskql_db_up") == 0
