"""In-process benchmark of the main query against its hand-written-SQL limit.

The main query: a project's 50 tasks, each with its assignee and 3 comments with their
authors. Measured through the whole ASGI app in-process (middleware authentication, one
transaction, DataLoaders, JSON), and as ONE hand-written SQL statement (json_agg) through
asyncpg with the tenant set in a transaction: the same data, the least work possible.
Both run in the same process, interleaved, on the same database; medians are compared as a
ratio (shared machines are noisy: absolute numbers move, the ratio much less).

    .venv/bin/python bench/graphql_inprocess.py [--rounds 300] [--multiprocess] [--json-logs]

It also measures the cost of the Prometheus metrics (api.metrics): the same main query
through a second app built with TASKQL_METRICS=false, interleaved with the first.
``--multiprocess`` counts into prometheus-client's memory-mapped files, as the workers of
`taskql serve --workers N` do (a temporary folder).

Uses the embedded PostgreSQL (a scratch database `taskql_bench`), or DATABASE_URL and
MIGRATION_DATABASE_URL (a database it may fill).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

if "--multiprocess" in sys.argv:  # before prometheus-client is imported
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="taskql-bench-metrics-")

import httpx

from api.app import create_app, tune_gc
from api.settings import Settings
from db import metrics as db_metrics
from db import tables
from db.engine import DB
from db.migrate import runner
from db.queries import users
from db.settings import get_database_settings
from db.targets import scratch_database
from db.tenancy import SET_CONTEXT_SQL, TenantContext, request_transaction, tenant_transaction
from db.uuid7 import uuid7

MAIN_QUERY = """
query($id: ID!) {
  project(id: $id) {
    name
    tasks(first: 50) {
      edges { node {
        id title status priority
        assignee { id displayName }
        comments(first: 3) { nodes { id content author { id displayName } } }
      } }
    }
  }
}"""

#: The same data as MAIN_QUERY in one statement: the limit for any server on PostgreSQL.
HANDWRITTEN = (Path(__file__).parent / "main_query.sql").read_text()

OTHER_QUERIES = {
    "viewer with memberships": "{ viewer { user { email } memberships(first: 10) { nodes { role organization { slug } } } } }",
    "project tasks, 50, with totalCount": "query($id: ID!) { project(id: $id) { tasks(first: 50) { totalCount nodes { title } } } }",
    "task with ancestors, subtasks, history": "query($t: ID!) { task(id: $t) { title ancestors { title } subtasks(first: 10) { nodes { title } } history(first: 5) { nodes { action } } } }",
    "search": '{ search(text: "task", first: 20) { nodes { rank node { __typename } } } }',
}


async def prepare() -> tuple[str, str]:
    settings = get_database_settings()
    targets = await scratch_database("taskql_bench", settings)
    owner, app = targets.require_owner(), targets.require_server()
    DB.configure(owner, settings)
    await runner.forwards()
    DB.configure(app, settings)
    await DB.start_connection_pool()
    return owner, app


async def seed() -> tuple[UUID, UUID, str, str, UUID]:
    """One organization: 5 members, a project of 50 tasks with 3 comments each."""
    org_id, project_id = uuid7(), uuid7()
    members = []
    for i in range(5):
        user_id = uuid7()
        async with tenant_transaction(TenantContext(user_id=user_id)):
            await tables.User.insert(
                tables.User(
                    id=user_id,
                    email=f"bench-{user_id.hex[-8:]}-{i}@example.test",
                    display_name=f"Bench user {i}",
                    password_hash="x",
                )
            )
        members.append(user_id)
    owner = members[0]
    async with tenant_transaction(
        TenantContext(organization_id=org_id, user_id=owner, role="owner")
    ):
        await tables.Organization.insert(
            tables.Organization(id=org_id, name="Bench", slug=f"bench-{org_id.hex[-8:]}")
        )
        await tables.OrganizationMember.insert(
            *[
                tables.OrganizationMember(
                    organization_id=org_id, user_id=u, role="owner" if u == owner else "member"
                )
                for u in members
            ]
        )
        await tables.Project.insert(
            tables.Project(id=project_id, organization_id=org_id, name="Bench project")
        )
        task_rows = [
            tables.Task(
                id=uuid7(),
                organization_id=org_id,
                project_id=project_id,
                title=f"Task {i}",
                priority=i % 5,
                assignee_id=members[i % 5],
            )
            for i in range(50)
        ]
        await tables.Task.insert(*task_rows)
    for author in members:
        async with tenant_transaction(
            TenantContext(organization_id=org_id, user_id=author, role="member")
        ):
            await tables.TaskComment.insert(
                *[
                    tables.TaskComment(
                        organization_id=org_id,
                        task_id=t.id,
                        author_id=author,
                        content=f"Comment on {t.title}",
                    )
                    for i, t in enumerate(task_rows)
                    for j in range(3)
                    if members[(i + j) % 5] == author
                ]
            )
    token = secrets.token_urlsafe(32)
    async with request_transaction(TenantContext(user_id=owner)) as (_, executor):
        await users.create_session(
            executor, owner, token, datetime.now(UTC) + timedelta(hours=1), None, None
        )
    slug = f"bench-{org_id.hex[-8:]}"
    return org_id, project_id, token, slug, task_rows[10].id


def instrumentation_cost(loops: int = 20_000) -> float:
    """Microseconds the metrics calls of one compiled request take, in a loop: what the
    middleware, the view and the pool's acquire add (labels, counters, histograms, gauges)."""
    from api import metrics

    started = time.perf_counter()
    for _ in range(loops):
        t0 = time.perf_counter()
        seen = metrics.Observation()
        db_metrics.POOL_WAITING.inc()
        db_metrics.POOL_WAITING.dec()
        db_metrics.POOL_ACQUIRE_SECONDS.observe(time.perf_counter() - t0)
        seen.path, seen.type = "compiled", "query"
        seen.operation = metrics.OPERATION_NAMES.label("BenchMainQuery")
        seen.statements = 2
        metrics.REQUESTS.labels(seen.operation, seen.type, seen.path, "200", seen.code).inc()
        metrics.LATENCY.labels(seen.operation, seen.type, seen.path).observe(
            time.perf_counter() - t0
        )
        metrics.STATEMENTS.labels(seen.operation, seen.path).observe(seen.statements)
    return (time.perf_counter() - started) / loops * 1e6


def access_log_cost(json_lines: bool) -> float:
    """Microseconds one request's access line costs (fields, render, the logging call),
    written to /dev/null, timed alone."""
    from api.access_log import AccessLog
    from api.auth import SCOPE_KEY, Auth
    from api.metrics import Observation

    log = AccessLog(json_lines, slow_ms=10_000)
    scope = {SCOPE_KEY: Auth("0" * 32, "203.0.113.1", "bench")}
    seen = Observation(operation="Main", type="query", path="compiled", statements=4)
    started = time.perf_counter()
    for _ in range(20_000):
        log.record(scope, seen, 200, 0.003)
    return (time.perf_counter() - started) / 20_000 * 1e6


async def main(rounds: int, json_logs: bool = False) -> None:
    await prepare()
    org_id, project_id, token, slug, task_id = await seed()
    from api.ids import to_global_id

    settings = Settings(taskql_sql_stats=True)
    app_off = create_app(settings.model_copy(update={"taskql_metrics": False}))
    if json_logs:
        # Metrics plus a JSON access line per request, written (to /dev/null) as in production.
        settings = settings.model_copy(update={"taskql_log_format": "json"})
        handler = logging.FileHandler(os.devnull)
        access = logging.getLogger("taskql.access")
        access.addHandler(handler)
        access.setLevel(logging.INFO)
        access.propagate = False
    app = create_app(settings)
    tune_gc(settings)  # as the server's lifespan does (ASGITransport does not run it)
    headers = {"Authorization": f"Bearer {token}", "X-Organization": slug}
    variables = {"id": to_global_id("Project", project_id), "t": to_global_id("Task", task_id)}
    async with (
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://bench"
        ) as client,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app_off), base_url="http://bench"
        ) as client_off,
    ):

        async def unmetered() -> None:
            db_metrics.enabled = False  # the pool's acquire timing too
            try:
                response = await client_off.post(
                    "/graphql", json={"query": MAIN_QUERY, "variables": variables}, headers=headers
                )
                assert "errors" not in response.json()
            finally:
                db_metrics.enabled = True

        async def graphql(query: str) -> dict:  # type: ignore[type-arg]
            response = await client.post(
                "/graphql", json={"query": query, "variables": variables}, headers=headers
            )
            body = response.json()
            assert "errors" not in body, body
            return body  # type: ignore[no-any-return]

        async def handwritten() -> object:
            assert DB.pool is not None
            async with DB.pool.acquire() as connection, connection.transaction():
                await connection.execute(SET_CONTEXT_SQL, str(org_id), "", "owner", "", "", "", "")
                return json.loads(await connection.fetchval(HANDWRITTEN, org_id, project_id))

        main_body = await graphql(MAIN_QUERY)
        limit_body = await handwritten()
        tasks = main_body["data"]["project"]["tasks"]["edges"]
        assert len(tasks) == 50
        assert len(limit_body["tasks"]) == 50
        assert all(len(t["node"]["comments"]["nodes"]) == 3 for t in tasks)

        for _ in range(30):  # warm-up: plans, caches, pool
            await graphql(MAIN_QUERY)
            await unmetered()
            await handwritten()
        api_times, sql_times, off_times = [], [], []
        for i in range(rounds):
            for metered in (True, False) if i % 2 else (False, True):  # neither always first
                started = time.perf_counter()
                await (graphql(MAIN_QUERY) if metered else unmetered())
                (api_times if metered else off_times).append(time.perf_counter() - started)
            started = time.perf_counter()
            await handwritten()
            sql_times.append(time.perf_counter() - started)

        print(
            f"main query: project, 50 tasks, assignee, 3 comments each with author ({rounds} rounds)"
        )
        print(f"  statements per operation (GraphQL): {main_body['extensions']['sqlStatements']}")
        api_median, sql_median = statistics.median(api_times), statistics.median(sql_times)
        q = statistics.quantiles(api_times, n=20)
        print(
            f"  GraphQL in-process : median {api_median * 1000:7.2f} ms   p95 {q[18] * 1000:7.2f} ms"
        )
        q = statistics.quantiles(sql_times, n=20)
        print(
            f"  hand-written SQL   : median {sql_median * 1000:7.2f} ms   p95 {q[18] * 1000:7.2f} ms"
        )
        print(f"  ratio (SQL / GraphQL medians, 1.0 = at the limit): {sql_median / api_median:.2f}")
        off_median = statistics.median(off_times)
        q = statistics.quantiles(off_times, n=20)
        mode = "multiprocess files" if "PROMETHEUS_MULTIPROC_DIR" in os.environ else "in memory"
        print(
            f"  GraphQL, no metrics: median {off_median * 1000:7.2f} ms   p95 {q[18] * 1000:7.2f} ms"
        )
        print(
            f"  metrics cost ({mode}): {(api_median - off_median) * 1e6:+.0f} us a request "
            f"(difference of the medians, {(api_median / off_median - 1) * 100:+.1f} %)"
        )
        print(f"  metrics calls of one request, timed alone: {instrumentation_cost():.1f} us")
        if json_logs:
            print("  (the metered side also wrote a JSON access line per request)")
        print(
            f"  access line of one request, timed alone: JSON {access_log_cost(True):.1f} us, "
            f"text (disabled at INFO) {access_log_cost(False):.1f} us"
        )
        print("statements per operation, other hot queries:")
        for name, query in OTHER_QUERIES.items():
            body = await graphql(query)
            print(f"  {name:40s} {body['extensions']['sqlStatements']}")
    await DB.close_connection_pool()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--multiprocess", action="store_true", help="count into mmap files")
    parser.add_argument(
        "--json-logs", action="store_true", help="the metered side writes JSON access lines too"
    )
    arguments = parser.parse_args()
    asyncio.run(main(arguments.rounds, arguments.json_logs))
