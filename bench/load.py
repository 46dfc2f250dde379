"""Load benchmark: the hot operations against uvicorn (workers = cores), driven by wrk.

Prerequisite: a seeded dataset (``TASKQL_DATABASE=taskql_large taskql seed``; a modest one,
``--orgs 4 --users 200 --tasks-per-project 500``, is enough to compare within a run), or
DATABASE_URL/MIGRATION_DATABASE_URL of a seeded database. For each operation and each
concurrency (1, 8, 32), after a warm-up, wrk runs for a fixed time and reports req/s and
latency percentiles. One run prints, per row:

- statements per request as PostgreSQL counts them: pg_stat_statements for the server role
  (the embedded server preloads it; elsewhere when it is loaded), else the commit and
  rollback counters of pg_stat_database (transactions, not statements: the output says
  which); and taskql's own count (TASKQL_SQL_STATS);
- CPU per request of the server's processes and of its own PostgreSQL cluster only (the
  postmaster one of its backends belongs to, and that postmaster's children);
- the main query's throughput as a share of two references served by
  ``bench/limit_server.py``, which authenticates and sets the tenant context as taskql does
  (``app_begin_request``, one statement) through the same pool: the cheapest hand-written
  SQL for its data (``bench/main_query.sql``) and a statement giving taskql's exact response
  in PostGraphile 5's shape (``bench/postgraphile_query.sql``; checked identical each run);
- the main query on a server whose pool runs asyncpg's reset query on every release
  (DB_SESSION_RESET=1), and on one uvicorn process per worker each with its own socket
  (SO_REUSEPORT, ``bench/reuseport_worker.py``), as ratios to the default server;
- a Relay refetch (``node``) and a write mix (createTask, updateTask, moveTask, assignTask,
  completeTask, addComment with their usual payloads) at concurrency 8 and 32, each with a
  read mix (the main query) running beside it.

Results go to bench/results/ as JSON and markdown (and a PNG chart when matplotlib is
installed), stamped with the commit.

    TASKQL_DATABASE=taskql_bench .venv/bin/python bench/load.py [--duration 5] [--repeat 3]

``--pgbouncer`` also starts a real PgBouncer (``db.pgbouncer``, transaction pooling, as many
server connections as the direct servers' pools hold in all) and a second API server behind
it (``DB_PGBOUNCER=1``), runs every operation on both, alternately, and reports each
operation's throughput and p95 through PgBouncer as a ratio of direct (results in
``load-pgbouncer.*``, so the direct-only results stay as they were).

``--replica`` starts a real streaming replica of the embedded server (``db.standby``,
``pg_basebackup -R``; with DATABASE_URL set, give DATABASE_REPLICA_URL instead) and a second
API server with ``DATABASE_REPLICA_URL`` pointing at it, runs every operation on both (the
reads of the second one go to the replica), reports the ratios to the primary-only server,
and measures the replica's lag behind mutations: how long after each committed mutation the
replica has replayed its commit LSN, and how many of the writer's next reads had to go to
the primary (results in ``load-replica.*``). Both PostgreSQL servers share this machine's
cores: the ratio is the cost of routing, not the gain of a second machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from api.ids import from_global_id, to_global_id
from db import embedded, standby
from db import pgbouncer as pgbouncer_launcher
from db.explain import find_sample, tenant_slugs
from db.queries import users
from db.settings import pool_size_for
from db.targets import Targets, resolve
from db.tenancy import TenantContext, request_transaction

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
#: Suffix of the operations run through PgBouncer.
THROUGH_PGBOUNCER = " [PgBouncer]"
#: Suffix of the operations run by the server whose reads go to the replica.
ON_REPLICA = " [replica]"


def main_query(first: int = 50) -> str:
    """The main query with a page of ``first`` tasks (bench/scaling.py varies it)."""
    return f"""query($id: ID!) {{ project(id: $id) {{ name tasks(first: {first}) {{ edges {{ node {{
  id title status priority assignee {{ id displayName }}
  comments(first: 3) {{ nodes {{ id content author {{ id displayName }} }} }} }} }} }} }} }}"""


MAIN_QUERY = main_query(50)
#: The main query asks for a project's first 50 tasks in the default order, creation time
#: ascending: the 50 OLDEST (the README says so).
OPERATIONS = {
    "main query (50 oldest tasks, assignee, 3 comments + authors)": MAIN_QUERY,
    "project tasks by priority, with totalCount": "query($id: ID!) { project(id: $id) { tasks(first: 50, orderBy: PRIORITY, direction: DESC) { totalCount nodes { id title priority status } } } }",
    "task detail (ancestors, subtasks, history)": "query($t: ID!) { task(id: $t) { title ancestors { title } subtasks(first: 10) { nodes { title } } history(first: 5) { nodes { action createdAt } } } }",
    "search": '{ search(text: "billing export", first: 20) { nodes { rank node { __typename } } } }',
    "viewer with memberships": "{ viewer { user { email } memberships(first: 10) { nodes { role organization { slug } } } } }",
    "audit log page (newest 20, with actor)": "{ auditLog(first: 20) { edges { cursor node { action entityType changes createdAt actor { displayName } } } pageInfo { hasNextPage endCursor } } }",
    # A Relay refetch: answered by the resolvers (not compiled).
    "node refetch (a Task by global id)": "query($n: ID!) { node(id: $n) { id ... on Task { title status priority dueDate assignee { id displayName } } } }",
}
#: The write mix, each with its usual payload selection. ``$id`` is a task of the project
#: drawn at random per request (wrk's Lua), ``$n`` a per-request number; run at the write
#: concurrencies while a read mix (the main query, READ_MIX_CONNECTIONS) runs beside it.
PAYLOAD_ERRORS = "errors { code message }"
WRITES = {
    "createTask": "mutation($p: ID!, $n: String!) { createTask(input: {projectId: $p, title: $n, priority: 2}) "
    "{ task { id title status priority createdAt assignee { id } } " + PAYLOAD_ERRORS + " } }",
    "updateTask": "mutation($id: ID!, $n: String!) { updateTask(input: {id: $id, title: $n, priority: 3}) "
    "{ task { id title priority updatedAt } " + PAYLOAD_ERRORS + " } }",
    "moveTask": "mutation($id: ID!) { moveTask(input: {id: $id, parentId: null}) "
    "{ task { id parent { id } updatedAt } " + PAYLOAD_ERRORS + " } }",
    "assignTask": "mutation($id: ID!, $u: ID!) { assignTask(input: {id: $id, assigneeId: $u}) "
    "{ task { id assignee { id displayName } } " + PAYLOAD_ERRORS + " } }",
    "completeTask": "mutation($id: ID!) { completeTask(input: {id: $id}) "
    "{ task { id status completedAt } " + PAYLOAD_ERRORS + " } }",
    "addComment": "mutation($id: ID!, $n: String!) { addComment(input: {taskId: $id, content: $n}) "
    "{ comment { id content createdAt author { id displayName } } " + PAYLOAD_ERRORS + " } }",
}
WRITE_PREFIX = "write: "
READ_MIX_CONNECTIONS = 4
#: The two references, served by bench/limit_server.py (same authentication and context).
LIMIT_HANDWRITTEN = "LIMIT: main query data, hand-written SQL (bench/main_query.sql)"
LIMIT_POSTGRAPHILE = (
    "LIMIT: same response, PostGraphile-5-shaped SQL (bench/postgraphile_query.sql)"
)
#: Suffix of the main query on the server whose workers each have a socket (SO_REUSEPORT).
REUSEPORT = " [SO_REUSEPORT]"
#: Suffix of the main query on a server whose pool resets session state on every release
#: (DB_SESSION_RESET=1: asyncpg's four reset statements, as before 2026-12-02).
SESSION_RESET = " [DB_SESSION_RESET=1]"
LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {token}"
wrk.headers["X-Organization"] = "{slug}"
wrk.body = [[{body}]]
{dynamic}
done = function(summary, latency, requests)
  io.write(string.format('RESULT {{"requests": %d, "seconds": %f, "errors": %d, "non2xx": %d, "p50": %f, "p95": %f, "p99": %f}}\\n',
    summary.requests, summary.duration / 1e6, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, latency:percentile(50) / 1e3, latency:percentile(95) / 1e3, latency:percentile(99) / 1e3))
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=False, capture_output=True)
        found = shutil.which("wrk")
    if not found:
        sys.exit(
            "bench/load.py needs wrk: apt-get install wrk (Debian/Ubuntu), brew install wrk (macOS)"
        )
    return found


def wait_for(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listens on port {port}")


def _uvicorn(app: str, extra: list[str]) -> list[str]:
    command = [sys.executable, "-m", "uvicorn", app, *extra, "--log-level", "warning"]
    command.append("--no-access-log")
    if app.endswith("create_app"):
        command.append("--factory")
    return command


def start(app: str, port: int, workers: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """uvicorn's own arrangement: one supervisor, ``workers`` processes sharing its socket."""
    command = _uvicorn(app, ["--port", str(port), "--workers", str(workers)])
    process = subprocess.Popen(command, env=env, cwd=ROOT.parent)
    wait_for(port)
    return process


def start_reuseport(
    app: str, port: int, workers: int, env: dict[str, str]
) -> list[subprocess.Popen[bytes]]:
    """One uvicorn process per worker, each accepting on a listening socket of its own bound
    to the same port with SO_REUSEPORT (bench/reuseport_worker.py): the kernel spreads
    incoming connections over the sockets by a hash of their addresses, instead of handing
    every waiting connection to whichever worker wakes first."""
    command = [sys.executable, str(ROOT / "reuseport_worker.py"), app, str(port)]
    if app.endswith("create_app"):
        command.append("--factory")
    processes = [subprocess.Popen(command, env=env, cwd=ROOT.parent) for _ in range(workers)]
    deadline = time.monotonic() + 30
    while not all(listening(process.pid, port) for process in processes):
        if time.monotonic() > deadline:
            raise RuntimeError(f"not every worker listens on port {port}")
        time.sleep(0.2)
    return processes


def listening(pid: int, port: int) -> bool:
    return any(
        c.status == psutil.CONN_LISTEN and c.laddr.port == port
        for c in psutil.Process(pid).net_connections(kind="tcp")
    )


def cpu_seconds(pids: list[int]) -> float:
    return sum(cpu_by_pid(pids).values())


def cpu_by_pid(pids: list[int]) -> dict[int, float]:
    times: dict[int, float] = {}
    for pid in pids:
        try:
            cpu = psutil.Process(pid).cpu_times()
            times[pid] = cpu.user + cpu.system
        except psutil.NoSuchProcess:
            pass
    return times


def cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds between two snapshots. A process that ended in between is left out (its
    last seconds are lost), rather than counted as negative; one that started counts whole."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def tree(process: subprocess.Popen[bytes]) -> list[int]:
    parent = psutil.Process(process.pid)
    return [parent.pid, *(c.pid for c in parent.children(recursive=True))]


class Cluster:
    """The PostgreSQL cluster the servers use, and only it: its postmaster (the parent of a
    backend of ours) and the postmaster's children, for the CPU; pg_stat_statements (or, where
    it is not loaded, the commit counters) for the statements PostgreSQL ran as the server
    role."""

    def __init__(self, server_dsn: str, stats_dsn: str, server_role: str) -> None:
        self.stats_dsn = stats_dsn
        self.server_role = server_role
        self.view = "pg_stat_statements"
        self.postmaster = asyncio.run(self._postmaster(server_dsn))
        self.counting = asyncio.run(self._prepare())

    @staticmethod
    async def _postmaster(dsn: str) -> int:
        connection = await asyncpg.connect(dsn)
        try:
            backend = int(await connection.fetchval("SELECT pg_backend_pid()"))
            return int(psutil.Process(backend).ppid())  # while the backend lives
        finally:
            await connection.close()

    def pids(self) -> list[int]:
        try:
            parent = psutil.Process(self.postmaster)
            return [parent.pid, *(c.pid for c in parent.children(recursive=True))]
        except psutil.NoSuchProcess:
            return []

    async def _prepare(self) -> str:
        connection = await asyncpg.connect(self.stats_dsn)
        try:
            loaded = "pg_stat_statements" in str(
                await connection.fetchval("SHOW shared_preload_libraries")
            )
            schema = await connection.fetchval(
                "SELECT quote_ident(n.nspname) FROM pg_extension e JOIN pg_namespace n "
                "ON n.oid = e.extnamespace WHERE e.extname = 'pg_stat_statements'"
            )
            if loaded and schema is None:
                with contextlib.suppress(asyncpg.PostgresError):
                    await connection.execute("CREATE EXTENSION pg_stat_statements")
                    schema = "public"
            if loaded and schema is not None:
                self.view = f"{schema}.pg_stat_statements"
                with contextlib.suppress(asyncpg.PostgresError):
                    await connection.fetchval(f"SELECT count(*) FROM {self.view}")
                    return "pg_stat_statements"
            return "pg_stat_database (transactions, not statements)"
        finally:
            await connection.close()

    def snapshot(self) -> dict[str, float]:
        return asyncio.run(self._snapshot())

    async def _snapshot(self) -> dict[str, float]:
        connection = await asyncpg.connect(self.stats_dsn)
        try:
            if self.counting == "pg_stat_statements":
                rows = await connection.fetch(
                    f"SELECT query, sum(calls) AS calls FROM {self.view} s "
                    "JOIN pg_roles r ON r.oid = s.userid JOIN pg_database d ON d.oid = s.dbid "
                    "WHERE r.rolname = $1 AND d.datname = current_database() GROUP BY query",
                    self.server_role,
                )
                return {r["query"]: float(r["calls"]) for r in rows}
            value = await connection.fetchval(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database "
                "WHERE datname = current_database()"
            )
            return {"transactions": float(value)}
        finally:
            await connection.close()

    def exec_times(self) -> dict[int, tuple[float, float]]:
        """Per statement (pg_stat_statements' queryid) of the server role: calls and total
        execution time in ms so far; empty where pg_stat_statements is not readable."""
        if self.counting != "pg_stat_statements":
            return {}
        return asyncio.run(self._exec_times())

    async def _exec_times(self) -> dict[int, tuple[float, float]]:
        connection = await asyncpg.connect(self.stats_dsn)
        try:
            rows = await connection.fetch(
                f"SELECT queryid, sum(calls) AS calls, sum(total_exec_time) AS ms FROM {self.view} s "
                "JOIN pg_roles r ON r.oid = s.userid JOIN pg_database d ON d.oid = s.dbid "
                "WHERE r.rolname = $1 AND d.datname = current_database() GROUP BY queryid",
                self.server_role,
            )
            return {int(r["queryid"]): (float(r["calls"]), float(r["ms"])) for r in rows}
        finally:
            await connection.close()


def cluster_of(targets: Targets) -> Cluster:
    """The Cluster of the server role's database: its statistics read as the embedded
    server's superuser, or as the owner on a server of DATABASE_URL."""
    owner_dsn, server_dsn = targets.require_owner(), targets.require_server()
    server_parts = pgbouncer_launcher.Upstream.parse(server_dsn)
    stats_dsn = (
        targets.embedded.dsn(embedded.SUPERUSER, server_parts.database)
        if targets.embedded is not None
        else owner_dsn
    )
    return Cluster(server_dsn, stats_dsn, server_parts.user)


def server_env(owner_dsn: str, server_dsn: str, pool_size: int) -> dict[str, str]:
    """The environment of a benchmarked API server: this database, a pool of ``pool_size``
    per worker, and no log-in limit in the way of wrk."""
    return {
        **os.environ,
        "DATABASE_URL": server_dsn,
        "MIGRATION_DATABASE_URL": owner_dsn,
        "DB_POOL_MAX_SIZE": str(pool_size),
        "TASKQL_LOGIN_ATTEMPTS_PER_IP": "1000000",
    }


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {q: n - before.get(q, 0.0) for q, n in after.items() if n - before.get(q, 0.0) > 0}


def run_wrk(
    wrk: str, port: int, script: Path, connections: int, seconds: int, path: str = "/graphql"
) -> dict[str, Any]:
    result = subprocess.run(
        wrk_command(wrk, port, script, connections, seconds, path),
        capture_output=True,
        text=True,
        check=True,
    )
    return wrk_result(result.stdout)


def wrk_command(
    wrk: str, port: int, script: Path, connections: int, seconds: int, path: str = "/graphql"
) -> list[str]:
    threads = min(2, connections)
    return [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}{path}",
    ]


def wrk_result(stdout: str) -> dict[str, Any]:
    line = next(line for line in stdout.splitlines() if line.startswith("RESULT "))
    data: dict[str, Any] = json.loads(line[len("RESULT ") :])
    data["rps"] = data["requests"] / data["seconds"]
    return data


async def session_for(
    owner_dsn: str, server_dsn: str, slug: str | None = None
) -> tuple[str, str, dict[str, Any], int]:
    """A session token of the owner of the tenant ``slug`` (default: the largest by tasks),
    that slug, the variables of the operations for its largest project, and that project's
    task count."""
    owner = await asyncpg.connect(owner_dsn)
    try:
        largest = slug or (await tenant_slugs(owner))[0]
        sample = await find_sample(owner, largest, largest)
        async with owner.transaction():
            await owner.execute("SET LOCAL ROLE taskql_maintenance")
            write_ids = [
                r["id"]
                for r in await owner.fetch(
                    "SELECT id FROM tasks WHERE organization_id = $1 AND project_id = $2 "
                    "ORDER BY created_at DESC LIMIT 400",
                    sample.organization_id,
                    sample.project_id,
                )
            ]
    finally:
        await owner.close()
    token = secrets.token_urlsafe(32)
    from db.engine import DB
    from db.settings import get_database_settings

    DB.configure(server_dsn, get_database_settings())
    async with request_transaction(TenantContext(user_id=sample.user_id)) as (_, executor):
        await users.create_session(
            executor, sample.user_id, token, datetime.now(UTC) + timedelta(hours=2), None, "bench"
        )
    variables = {
        "id": to_global_id("Project", sample.project_id),
        "p": to_global_id("Project", sample.project_id),
        "t": to_global_id("Task", sample.deep_task_id or sample.task_ids[0]),
        "n": to_global_id("Task", sample.task_ids[0]),
        "u": to_global_id("User", sample.user_id),
    }
    ids = {
        "org": str(sample.organization_id),
        "project": str(sample.project_id),
        "user": str(sample.user_id),
    }
    extra = {"write_ids": [to_global_id("Task", i) for i in write_ids]}
    return token, largest, {**variables, **ids, **extra}, sample.tasks_in_project


def graphql_variables(variables: dict[str, Any], query: str) -> dict[str, Any]:
    """The variables ``query`` declares, from the sample's."""
    return {k: v for k, v in variables.items() if f"${k}:" in query and isinstance(v, str)}


async def statements_per_operation(
    token: str, slug: str, variables: dict[str, Any]
) -> dict[str, int]:
    """The same operations once in-process, for their SQL statement counts as taskql counts
    them (``TASKQL_SQL_STATS``: the statements it sends, not BEGIN, COMMIT or resets)."""
    import httpx

    from api.app import create_app
    from api.settings import Settings
    from db.engine import DB

    counts = {}
    await DB.start_connection_pool(session_reset=False)
    app = create_app(Settings(taskql_sql_stats=True))
    operations = {**OPERATIONS, **{WRITE_PREFIX + k: v for k, v in WRITES.items()}}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://bench"
    ) as client:
        for name, query in operations.items():
            given = graphql_variables(variables, query)
            if name.startswith(WRITE_PREFIX):
                given["id"] = variables["write_ids"][0]
                given = {k: v for k, v in given.items() if f"${k}:" in query}
            if "$n: String" in query:
                given["n"] = "bench statements"
            response = await client.post(
                "/graphql",
                json={"query": query, "variables": given},
                headers={"Authorization": f"Bearer {token}", "X-Organization": slug},
            )
            body = response.json()
            assert "errors" not in body, (name, body)
            if name.startswith(WRITE_PREFIX):
                payload = next(iter(body["data"].values()))
                if payload["errors"]:
                    print(f"{name}: payload errors {payload['errors']}", flush=True)
            counts[name] = body["extensions"]["sqlStatements"]
    await DB.close_connection_pool()
    return counts


async def same_response(port: int, limit_port: int, token: str, slug: str, project: str) -> bool:
    """Whether the PostGraphile-shaped reference answers what taskql answers."""
    import httpx

    headers = {"Authorization": f"Bearer {token}", "X-Organization": slug}
    body = {"query": MAIN_QUERY, "variables": {"id": project}}
    async with httpx.AsyncClient(headers=headers) as client:
        ours = await client.post(f"http://127.0.0.1:{port}/graphql", json=body)
        theirs = await client.post(f"http://127.0.0.1:{limit_port}/postgraphile", json=body)
    return bool(ours.json() == theirs.json())


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over repeated runs. wrk's connections stay open for a run, and
    which worker accepts each one is the kernel's choice: one run can load a worker with
    two thirds of them (its p95 doubles), the next spreads them evenly. Each run opens them
    anew, so the median is the typical figure."""
    numeric = [k for k, v in runs[0].items() if isinstance(v, int | float)]
    return {k: statistics.median(run[k] for run in runs) for k in numeric}


class Target:
    """What one row of the table drives: a port and path, the processes whose CPU is the
    app's, which of them are the workers, and the wrk script."""

    def __init__(
        self,
        name: str,
        port: int,
        pids: list[int],
        workers: list[int],
        script: Path,
        path: str = "/graphql",
        concurrencies: list[int] | None = None,
    ) -> None:
        self.name, self.port, self.pids, self.workers = name, port, pids, workers
        self.script, self.path, self.concurrencies = script, path, concurrencies


def main(
    duration: int,
    concurrencies: list[int],
    only: list[str] | None = None,
    pool_size: int | None = None,
    repeat: int = 3,
    through_pgbouncer: bool = False,
    on_replica: bool = False,
    write_concurrencies: tuple[int, ...] = (8, 32),
    balance_runs: int = 10,
) -> None:
    wrk = ensure_wrk()
    targets = resolve()
    owner_dsn, server_dsn = targets.require_owner(), targets.require_server()
    token, slug, variables, project_size = asyncio.run(session_for(owner_dsn, server_dsn))
    server_parts = pgbouncer_launcher.Upstream.parse(server_dsn)
    cluster = cluster_of(targets)
    print(f"statements counted with {cluster.counting}", flush=True)
    workers = os.cpu_count() or 2
    if pool_size is None:
        # PostgreSQL runs on this machine: the pool sized to its cores, as `taskql serve` does.
        pool_size = pool_size_for(os.cpu_count() or 1, workers)
    env = server_env(owner_dsn, server_dsn, pool_size)
    statements = asyncio.run(statements_per_operation(token, slug, variables))
    api_port, limit_port, reuse_port = free_port(), free_port(), free_port()
    api = start("api.app:create_app", api_port, workers, env)
    limit = start(
        "bench.limit_server:app",
        limit_port,
        workers,
        {**env, "LIMIT_PROJECT": variables["project"]},
    )
    reuse = start_reuseport("api.app:create_app", reuse_port, workers, env)
    resetting_port = free_port()
    resetting = start(
        "api.app:create_app", resetting_port, workers, {**env, "DB_SESSION_RESET": "1"}
    )
    same = asyncio.run(same_response(api_port, limit_port, token, slug, variables["id"]))
    print(f"PostGraphile-shaped reference answers the same JSON as taskql: {same}", flush=True)
    bouncer: pgbouncer_launcher.PgBouncer | None = None
    behind: subprocess.Popen[bytes] | None = None
    if through_pgbouncer:
        # As many server connections as the direct API's pools hold together: the same
        # concurrency reaches PostgreSQL, only the hop differs.
        bouncer = pgbouncer_launcher.start(
            [server_dsn], pool_size=workers * pool_size, max_client_conn=1000
        )
        behind_port = free_port()
        behind = start(
            "api.app:create_app",
            behind_port,
            workers,
            {**env, "DATABASE_URL": bouncer.dsn(server_parts.user), "DB_PGBOUNCER": "1"},
        )
    replica: standby.Standby | None = None
    replica_server: subprocess.Popen[bytes] | None = None
    replica_url = os.environ.get("DATABASE_REPLICA_URL")
    if on_replica:
        if replica_url is None:
            if targets.embedded is None:
                raise SystemExit("--replica with DATABASE_URL needs DATABASE_REPLICA_URL")
            replica = standby.create(targets.embedded, ROOT.parent / ".taskql" / "bench-replica")
            replica_url = replica.dsn(server_parts.user, server_parts.database)
        replica_port = free_port()
        replica_server = start(
            "api.app:create_app",
            replica_port,
            workers,
            {**env, "DATABASE_REPLICA_URL": replica_url},
        )
    rows: list[dict[str, Any]] = []
    lag: dict[str, Any] = {}
    balance: dict[str, list[float]] = {}
    try:
        with tempfile.TemporaryDirectory() as scratch:

            def script(name: str, query: str) -> Path:
                path = Path(scratch) / f"{abs(hash(name))}.lua"
                given = graphql_variables(variables, query)
                dynamic = ""
                if name.startswith(WRITE_PREFIX):
                    given.update(id="__ID__", n="__N__")
                    given = {k: v for k, v in given.items() if f"${k}:" in query}
                    dynamic = WRITE_LUA.replace(
                        "IDS", ", ".join(json.dumps(i) for i in variables["write_ids"])
                    )
                body = json.dumps({"query": query, "variables": given})
                path.write_text(LUA.format(token=token, slug=slug, body=body, dynamic=dynamic))
                return path

            def shared(process: subprocess.Popen[bytes]) -> tuple[list[int], list[int]]:
                pids = tree(process)
                return pids, pids[1:]

            def each_own(processes: list[subprocess.Popen[bytes]]) -> tuple[list[int], list[int]]:
                pids = [p for process in processes for p in tree(process)]
                return pids, [process.pid for process in processes]

            # Groups of targets measured alternately, run by run (an operation and its
            # variants; the main query with both references): their ratios compare runs
            # minutes apart at most, on a machine whose load drifts.
            groups: list[list[Target]] = []
            main_script = script("limit", MAIN_QUERY)
            references = [
                Target(LIMIT_HANDWRITTEN, limit_port, *shared(limit), main_script),
                Target(
                    LIMIT_POSTGRAPHILE, limit_port, *shared(limit), main_script, "/postgraphile"
                ),
            ]
            for name, q in OPERATIONS.items():
                if only and not any(word in name for word in only):
                    continue
                plan: list[Target] = [Target(name, api_port, *shared(api), script(name, q))]
                groups.append(plan)
                if name.startswith("main query"):
                    plan.append(
                        Target(
                            name + SESSION_RESET,
                            resetting_port,
                            *shared(resetting),
                            script(name, q),
                        )
                    )
                    plan.append(
                        Target(name + REUSEPORT, reuse_port, *each_own(reuse), script(name, q))
                    )
                    plan += references
                    references = []
                if behind is not None and bouncer is not None and bouncer.process is not None:
                    pids, worker_pids = shared(behind)
                    # PgBouncer's own CPU counts as the app's
                    plan.append(
                        Target(
                            name + THROUGH_PGBOUNCER,
                            behind_port,
                            [*pids, bouncer.process.pid],
                            worker_pids,
                            script(name, q),
                        )
                    )
                if replica_server is not None:
                    plan.append(
                        Target(
                            name + ON_REPLICA,
                            replica_port,
                            *shared(replica_server),
                            script(name, q),
                        )
                    )
            if references:
                groups.append(references)
            for name, q in WRITES.items():
                if only and not any(word in WRITE_PREFIX + name for word in only):
                    continue
                groups.append(
                    [
                        Target(
                            WRITE_PREFIX + name,
                            api_port,
                            *shared(api),
                            script(WRITE_PREFIX + name, q),
                            concurrencies=list(write_concurrencies),
                        )
                    ]
                )
            read_mix = script("read mix", MAIN_QUERY)
            for group in groups:
                for target in group:
                    run_wrk(wrk, target.port, target.script, 8, 2, target.path)  # warm-up
                for connections in group[0].concurrencies or concurrencies:
                    by_target: dict[str, list[dict[str, Any]]] = {t.name: [] for t in group}
                    for _ in range(repeat):
                        for target in group:
                            by_target[target.name].append(
                                measure(
                                    wrk,
                                    target,
                                    connections,
                                    duration,
                                    cluster,
                                    read_mix if target.concurrencies else None,
                                )
                            )
                    for target in group:
                        rows.append(
                            summarise(target, connections, by_target[target.name], statements, rows)
                        )
                        print(line_of(rows[-1]), flush=True)
            if balance_runs:
                main_name = next(iter(OPERATIONS))
                balance = {
                    "shared socket": measure_balance(
                        wrk,
                        Target(main_name, api_port, *shared(api), script(main_name, MAIN_QUERY)),
                        balance_runs,
                    ),
                    "SO_REUSEPORT": measure_balance(
                        wrk,
                        Target(
                            main_name, reuse_port, *each_own(reuse), script(main_name, MAIN_QUERY)
                        ),
                        balance_runs,
                    ),
                }
                for arrangement, shares in balance.items():
                    print(f"busiest worker, {arrangement}: {shares}", flush=True)
        if replica_server is not None and replica_url is not None:
            lag = asyncio.run(
                replica_lag(replica_port, replica_url, token, slug, variables["id"], owner_dsn)
            )
    finally:
        for process in (api, limit, resetting, behind, replica_server, *reuse):
            if process is not None:
                process.terminate()
                process.wait(10)
        if bouncer is not None:
            bouncer.stop()
        if replica is not None:
            replica.stop("immediate")
    write_results(
        rows,
        duration,
        workers,
        project_size,
        repeat,
        pool_size,
        "load-replica" if on_replica else "load-pgbouncer" if through_pgbouncer else "load",
        lag,
        cluster.counting,
        same,
        balance,
    )


def summarise(
    target: Target,
    connections: int,
    runs: list[dict[str, Any]],
    statements: dict[str, int],
    rows: list[dict[str, Any]],
) -> dict[str, Any]:
    """A row: the medians of ``runs``, with the runs themselves."""
    result = median_of(runs)
    result.update(
        operation=target.name,
        concurrency=connections,
        statements=statements.get(base_name(target.name), 1),
        runs=runs,
        breakdown=runs[0].pop("breakdown", {}),
    )
    for run in runs:
        run.pop("breakdown", None)
    if "read_mix_requests" in result:
        # The write's own statements: the read mix's requests at the main
        # query's count of this run taken out.
        main_count = next(
            (
                r["pg_statements_per_request"]
                for r in rows
                if r["operation"] == next(iter(OPERATIONS)) and r["concurrency"] == 8
            ),
            4.0,
        )
        result["pg_statements_per_request"] = statistics.median(
            (run["pg_statements"] - main_count * run["read_mix_requests"]) / max(run["requests"], 1)
            for run in runs
        )
    return result


#: Per request, a task of the project at random and a fresh number (each wrk thread its own
#: random sequence): no two connections keep updating one row.
WRITE_LUA = """
ids = {IDS}
counter = 0
template = wrk.body
threads = 0
setup = function(thread)
  threads = threads + 1
  thread:set("seed", threads)
end
init = function(args)
  math.randomseed(os.time() * 100 + seed)
end
request = function()
  counter = counter + 1
  local body = (template:gsub("__ID__", ids[math.random(#ids)]))
  body = (body:gsub("__N__", "bench " .. counter .. "-" .. math.random(1000000000)))
  return wrk.format(nil, nil, nil, body)
end
"""


def measure(
    wrk: str,
    target: Target,
    connections: int,
    duration: int,
    cluster: Cluster,
    read_mix: Path | None,
) -> dict[str, Any]:
    """One wrk run of ``target`` (with the read mix beside it for a write), and what it cost:
    the app's CPU, its own PostgreSQL cluster's CPU, statements as PostgreSQL counted them."""
    before_app, before_pg = cpu_by_pid(target.pids), cpu_by_pid(cluster.pids())
    before_each = cpu_by_pid(target.workers)
    before_statements = cluster.snapshot()
    beside = None
    if read_mix is not None:
        beside = subprocess.Popen(
            wrk_command(wrk, target.port, read_mix, READ_MIX_CONNECTIONS, duration),
            stdout=subprocess.PIPE,
            text=True,
        )
    run = run_wrk(wrk, target.port, target.script, connections, duration, target.path)
    mix: dict[str, Any] | None = None
    if beside is not None:
        out, _ = beside.communicate()
        mix = wrk_result(out)
    ran = delta(before_statements, cluster.snapshot())
    each = cpu_by_pid(target.workers)
    shares = [each[p] - before_each.get(p, 0.0) for p in each]
    requests = run["requests"] + (mix["requests"] if mix else 0)
    cpu_app = cpu_used(before_app, cpu_by_pid(target.pids))
    cpu_pg = cpu_used(before_pg, cpu_by_pid(cluster.pids()))
    run.update(
        cpu_app_s=cpu_app,
        cpu_postgres_s=cpu_pg,
        # Per request of the run (a write's run includes the read mix's requests).
        cpu_app_ms_per_request=1000 * cpu_app / max(requests, 1),
        cpu_postgres_ms_per_request=1000 * cpu_pg / max(requests, 1),
        pg_statements_per_request=sum(ran.values()) / max(requests, 1),
        pg_statements=sum(ran.values()),
        # The busiest worker's share of the workers' CPU (0.5: even).
        busiest_worker=max(shares) / sum(shares) if sum(shares) > 0 else 0.0,
        breakdown={
            q: n / max(requests, 1) for q, n in sorted(ran.items(), key=lambda i: -i[1])[:12]
        },
    )
    if mix is not None:
        run.update(
            read_mix_rps=mix["rps"], read_mix_p95=mix["p95"], read_mix_requests=mix["requests"]
        )
    return run


def measure_balance(wrk: str, target: Target, runs: int, connections: int = 8) -> list[float]:
    """The busiest worker's share of the workers' CPU in each of ``runs`` 1-second runs
    (wrk opens its connections anew each time: each run is one draw of how the kernel
    handed them out)."""
    shares = []
    for _ in range(runs):
        before = cpu_by_pid(target.workers)
        run_wrk(wrk, target.port, target.script, connections, 1, target.path)
        after = cpu_by_pid(target.workers)
        used = [after[p] - before.get(p, 0.0) for p in after]
        shares.append(round(max(used) / sum(used), 2) if sum(used) > 0 else 0.0)
    return shares


def line_of(result: dict[str, Any]) -> str:
    text = (
        f"{result['operation'][:52]:52} c={result['concurrency']:<3} {result['rps']:8.1f} req/s  "
        f"p50 {result['p50']:6.1f}  p95 {result['p95']:6.1f}  p99 {result['p99']:6.1f} ms  "
        f"err {result['errors'] + result['non2xx']:.0f}  PG stmts/req {result['pg_statements_per_request']:.2f}  "
        f"CPU ms/req app {result['cpu_app_ms_per_request']:.2f} pg {result['cpu_postgres_ms_per_request']:.2f}  "
        f"busiest {result['busiest_worker']:.2f}"
    )
    if "read_mix_rps" in result:
        text += f"  read mix {result['read_mix_rps']:.0f} req/s p95 {result['read_mix_p95']:.1f}"
    return text


def base_name(name: str) -> str:
    for suffix in (THROUGH_PGBOUNCER, ON_REPLICA, REUSEPORT, SESSION_RESET):
        name = name.removesuffix(suffix)
    return name


async def replica_lag(
    port: int,
    replica_url: str,
    token: str,
    slug: str,
    project: str,
    owner_dsn: str,
    mutations: int = 200,
) -> dict[str, Any]:
    """Mutations, one at a time, on the replica-routed server: for each, the time from its
    response (with its commit LSN) until the replica has replayed that LSN (polled every
    0.5 ms on a connection of its own), and where the writer's next read was served."""
    import httpx

    from db.replicas import parse_lsn

    headers = {"Authorization": f"Bearer {token}", "X-Organization": slug}
    rename = (
        "mutation($id: ID!, $name: String!) { updateProject(input: {id: $id, name: $name}) "
        "{ errors { code } } }"
    )
    owner = await asyncpg.connect(owner_dsn)
    original = await owner.fetchval(
        "SELECT p.name FROM projects p WHERE p.id = $1",
        from_global_id(project)[1],
    )
    await owner.close()
    watcher = await asyncpg.connect(replica_url)
    waits: list[float] = []
    at_once = 0
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers) as client:
        for index in range(mutations):
            name = f"{original} ({index})" if original else f"Bench {index}"
            response = await client.post(
                "/graphql", json={"query": rename, "variables": {"id": project, "name": name}}
            )
            answered = time.perf_counter()
            lsn = parse_lsn(response.headers["x-taskql-lsn"])
            polls = 0
            while True:
                replayed = await watcher.fetchval("SELECT pg_last_wal_replay_lsn()::text")
                polls += 1
                if parse_lsn(replayed) >= lsn:
                    break
                await asyncio.sleep(0.0005)
            at_once += polls == 1
            waits.append((time.perf_counter() - answered) * 1000)
        if original:
            await client.post(
                "/graphql",
                json={"query": rename, "variables": {"id": project, "name": original}},
            )
    await watcher.close()
    waits.sort()
    return {
        "mutations": mutations,
        "replay_after_response_ms_p50": statistics.median(waits),
        "replay_after_response_ms_p95": waits[int(0.95 * (len(waits) - 1))],
        "replay_after_response_ms_max": waits[-1],
        "already_replayed_share": at_once / len(waits),
    }


def commit_stamp() -> str:
    """The commit the results were measured at, and whether bench/'s code had changed."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    dirty = subprocess.run(
        # Changed code, not this folder's earlier results.
        ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!results"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout.strip()
    return commit + (" (with uncommitted changes)" if dirty else "")


def write_results(
    rows: list[dict[str, Any]],
    duration: int,
    workers: int,
    project_size: int,
    repeat: int,
    pool_size: int,
    stem: str = "load",
    lag: dict[str, Any] | None = None,
    counting: str = "pg_stat_statements",
    same: bool | None = None,
    balance: dict[str, list[float]] | None = None,
) -> None:
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    commit = commit_stamp()
    (RESULTS / f"{stem}.json").write_text(
        json.dumps(
            {
                "generated": stamp,
                "commit": commit,
                "duration_s": duration,
                "repeat": repeat,
                "workers": workers,
                "pool_size": pool_size,
                "statements_counted_with": counting,
                "busiest_worker_1s_runs_c8": balance or {},
                "rows": rows,
                "replica_lag": lag or {},
            },
            indent=2,
        )
    )
    lines = [
        f"# Load benchmark ({stamp}, commit {commit})",
        "",
        f"uvicorn with {workers} workers per server ({pool_size} pooled connections each), wrk for",
        f"{duration} s per run after a warm-up, {repeat} runs per row: each figure is the median of",
        f"the runs. The largest seeded tenant, a project of {project_size:,} tasks. Latencies in ms.",
        "Statements: taskql's count (TASKQL_SQL_STATS, what it sends) and PostgreSQL's, per",
        f"request, counted with {counting} for the server role (BEGIN, COMMIT and",
        "reset queries included). CPU: ms per request of the app's processes and of its own",
        "PostgreSQL cluster's (the postmaster and its children, nothing else on the machine).",
        "Busiest worker: its share of the workers' CPU (0.50 is even). Writes run with a read",
        f"mix beside them (the main query, {READ_MIX_CONNECTIONS} connections; its req/s and p95 in",
        "the last columns, and its requests in the write's CPU per request; the write's",
        "PostgreSQL statements are the run's less the read mix's at the main query's count).",
        "",
        "| operation | concurrency | req/s | p50 | p95 | p99 | statements (taskql) | statements (PostgreSQL) | CPU app ms/req | CPU postgres ms/req | busiest worker | errors | read mix req/s | read mix p95 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        mix = f"{r['read_mix_rps']:.0f} | {r['read_mix_p95']:.1f}" if "read_mix_rps" in r else " | "
        lines.append(
            f"| {r['operation']} | {r['concurrency']} | {r['rps']:.1f} | {r['p50']:.1f} | {r['p95']:.1f} | "
            f"{r['p99']:.1f} | {r['statements']} | {r.get('pg_statements_per_request', 0):.2f} | "
            f"{r.get('cpu_app_ms_per_request', 0):.2f} | {r.get('cpu_postgres_ms_per_request', 0):.2f} | "
            f"{r.get('busiest_worker', 0):.2f} | {r['errors'] + r['non2xx']:.0f} | {mix} |"
        )
    main_rows = {
        r["concurrency"]: r
        for r in rows
        if r["operation"].startswith("main query") and base_name(r["operation"]) == r["operation"]
    }
    references = {
        label: {r["concurrency"]: r for r in rows if r["operation"] == label}
        for label in (LIMIT_HANDWRITTEN, LIMIT_POSTGRAPHILE)
    }
    lines += [
        "",
        "Main query throughput as a share of each reference (same run; both references",
        "authenticate and set the tenant context as taskql does, through the same pool):",
        "",
        "| concurrency | vs hand-written SQL | vs PostGraphile-shaped SQL |",
        "|---:|---:|---:|",
    ]
    for c in sorted(main_rows):
        shares = [
            f"{main_rows[c]['rps'] / ref[c]['rps']:.2f}" if c in ref else "-"
            for ref in references.values()
        ]
        lines.append(f"| {c} | {' | '.join(shares)} |")
        print(f"main query / references at c={c}: {' / '.join(shares)}", flush=True)
    if same is not None:
        lines += [
            "",
            f"The PostGraphile-shaped statement's response is identical to taskql's: {same}.",
        ]
    breakdown = main_rows.get(8, {}).get("breakdown")
    if breakdown:
        lines += ["", "What PostgreSQL ran per main-query request (concurrency 8, first run):", ""]
        lines += [f"- {n:.2f} x `{' '.join(q.split())[:100]}`" for q, n in breakdown.items()]
    lines += reuseport_ratios(rows, balance or {})
    lines += session_reset_ratios(rows)
    lines += pgbouncer_ratios(rows)
    lines += replica_ratios(rows, lag or {})
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    chart(rows, RESULTS / f"{stem}.png")


def session_reset_ratios(rows: list[dict[str, Any]]) -> list[str]:
    """No reset query on release (the default) against asyncpg's reset, same run."""
    resetting = {r["concurrency"]: r for r in rows if r["operation"].endswith(SESSION_RESET)}
    lines = []
    for r in rows:
        if r["operation"] != base_name(r["operation"]) or r["concurrency"] not in resetting:
            continue
        if not r["operation"].startswith("main query"):
            continue
        before = resetting[r["concurrency"]]
        lines.append(
            f"| {r['concurrency']} | {before['pg_statements_per_request']:.2f} | "
            f"{r['pg_statements_per_request']:.2f} | {r['rps'] / before['rps']:.2f} | "
            f"{r['p95'] / before['p95']:.2f} | {before['cpu_postgres_ms_per_request']:.3f} | "
            f"{r['cpu_postgres_ms_per_request']:.3f} |"
        )
    if not lines:
        return []
    return [
        "",
        "Main query without the pool's reset query (default) against DB_SESSION_RESET=1",
        "(asyncpg's reset after every COMMIT), same run:",
        "",
        "| concurrency | PG statements/req, reset | without | req/s ratio | p95 ratio | PG CPU ms/req, reset | without |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        *lines,
    ]


def reuseport_ratios(rows: list[dict[str, Any]], balance: dict[str, list[float]]) -> list[str]:
    """One socket per worker (SO_REUSEPORT) against uvicorn's shared socket, same run."""
    shared = {(r["operation"], r["concurrency"]): r for r in rows}
    lines = []
    for r in rows:
        if not r["operation"].endswith(REUSEPORT):
            continue
        base = shared.get((r["operation"].removesuffix(REUSEPORT), r["concurrency"]))
        if base is None:
            continue

        def spread(row: dict[str, Any]) -> str:
            return ", ".join(f"{run['busiest_worker']:.2f}" for run in row["runs"])

        lines.append(
            f"| {r['concurrency']} | {r['rps'] / base['rps']:.2f} | {r['p95'] / base['p95']:.2f} | "
            f"{spread(base)} | {spread(r)} |"
        )
    if not lines:
        return []
    return [
        "",
        "Main query, one listening socket per worker (SO_REUSEPORT, bench/reuseport_worker.py)",
        "as a ratio of uvicorn's shared socket, same run, and the busiest worker's share in each run:",
        "",
        "| concurrency | req/s ratio | p95 ratio | busiest worker, shared socket | busiest worker, SO_REUSEPORT |",
        "|---:|---:|---:|---|---|",
        *lines,
        *(
            [
                "",
                "The busiest worker's share in 1-second runs at concurrency 8 (each run opens its",
                "connections anew):",
                "",
                *(f"- {k}: {', '.join(f'{v:.2f}' for v in vs)}" for k, vs in balance.items()),
            ]
            if balance
            else []
        ),
    ]


def pgbouncer_ratios(rows: list[dict[str, Any]]) -> list[str]:
    """Through PgBouncer as a share of direct, per operation and concurrency (same run)."""
    direct = {(r["operation"], r["concurrency"]): r for r in rows}
    lines = []
    for r in rows:
        if not r["operation"].endswith(THROUGH_PGBOUNCER):
            continue
        base = direct.get((r["operation"].removesuffix(THROUGH_PGBOUNCER), r["concurrency"]))
        if base is None:
            continue
        lines.append(
            f"| {base['operation']} | {r['concurrency']} | {r['rps'] / base['rps']:.2f} | "
            f"{r['p95'] / base['p95']:.2f} |"
        )
    if not lines:
        return []
    header = [
        "",
        "Through PgBouncer (transaction pooling, as many server connections as the direct",
        "pools hold; its CPU counted as the app's) as a ratio of direct, in the same run:",
        "",
        "| operation | concurrency | req/s ratio | p95 ratio |",
        "|---|---:|---:|---:|",
    ]
    for line in lines:
        print("PgBouncer/direct " + line, flush=True)
    return header + lines


def replica_ratios(rows: list[dict[str, Any]], lag: dict[str, Any]) -> list[str]:
    """The replica-routed server as a share of the primary-only one (same run), and the lag."""
    direct = {(r["operation"], r["concurrency"]): r for r in rows}
    lines = []
    for r in rows:
        if not r["operation"].endswith(ON_REPLICA):
            continue
        base = direct.get((base_name(r["operation"]), r["concurrency"]))
        if base is None:
            continue
        lines.append(
            f"| {base['operation']} | {r['concurrency']} | {r['rps'] / base['rps']:.2f} | "
            f"{r['p95'] / base['p95']:.2f} |"
        )
    if not lines:
        return []
    for line in lines:
        print("replica/primary " + line, flush=True)
    out = [
        "",
        "Reads on the streaming replica (same machine, same cores) as a ratio of the",
        "primary-only server, in the same run:",
        "",
        "| operation | concurrency | req/s ratio | p95 ratio |",
        "|---|---:|---:|---:|",
        *lines,
    ]
    if lag:
        print(f"replica lag: {lag}", flush=True)
        out += [
            "",
            f"Replica lag behind {lag['mutations']} sequential mutations (time from the",
            "mutation's response until the replica had replayed its commit LSN): "
            f"p50 {lag['replay_after_response_ms_p50']:.2f} ms, "
            f"p95 {lag['replay_after_response_ms_p95']:.2f} ms, "
            f"max {lag['replay_after_response_ms_max']:.2f} ms; already replayed at the "
            f"first poll: {lag['already_replayed_share']:.0%}.",
        ]
    return out


def chart(rows: list[dict[str, Any]], path: Path = RESULTS / "load.png") -> None:
    """bench/results/load.png: req/s and p95 by concurrency, one line per operation, with the
    100 ms p95 target."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no chart (pip install matplotlib)")
        return
    figure, (throughput, latency) = plt.subplots(1, 2, figsize=(12, 5))
    for name in dict.fromkeys(r["operation"] for r in rows):
        points = [r for r in rows if r["operation"] == name]
        concurrency = [r["concurrency"] for r in points]
        style = {"marker": "o", "label": name[:50]}
        if name.startswith("LIMIT"):
            style["linestyle"] = "--"
        throughput.plot(concurrency, [r["rps"] for r in points], **style)
        latency.plot(concurrency, [r["p95"] for r in points], **style)
    latency.axhline(100, color="grey", linewidth=1, linestyle=":", label="p95 target (100 ms)")
    for axis, label in ((throughput, "requests per second"), (latency, "p95 latency, ms")):
        axis.set_xlabel("concurrent clients")
        axis.set_ylabel(label)
        axis.set_xscale("log", base=2)
        axis.grid(alpha=0.3)
    latency.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per row; the table gives their medians"
    )
    parser.add_argument(
        "--pool-size",
        type=int,
        default=None,
        help="DB_POOL_MAX_SIZE of each worker (and of the limit's pool); default: sized to "
        "this machine's cores as `taskql serve` does on the embedded server (db.settings.pool_size_for)",
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument(
        "--balance-runs",
        type=int,
        default=10,
        help="1-second runs of the main query at concurrency 8 on each server arrangement "
        "(shared socket, SO_REUSEPORT), for the busiest worker's share in each",
    )
    parser.add_argument(
        "--write-concurrency",
        type=int,
        nargs="+",
        default=[8, 32],
        help="concurrencies of the write mix (each write runs with a read mix beside it)",
    )
    parser.add_argument(
        "--pgbouncer",
        action="store_true",
        help="also run every operation through a real PgBouncer (transaction pooling) and "
        "report the ratios to direct (bench/results/load-pgbouncer.*)",
    )
    parser.add_argument(
        "--replica",
        action="store_true",
        help="also run every operation on a server whose reads go to a real streaming replica "
        "and measure the replica's lag (bench/results/load-replica.*)",
    )
    parser.add_argument(
        "--only", nargs="+", help="run the operations whose name contains one of these words"
    )
    parser.add_argument(
        "--chart-only", action="store_true", help="Redraw the chart from load.json."
    )
    arguments = parser.parse_args()
    if arguments.chart_only:
        chart(json.loads((RESULTS / "load.json").read_text())["rows"])
    else:
        main(
            arguments.duration,
            arguments.concurrency,
            arguments.only,
            arguments.pool_size,
            arguments.repeat,
            arguments.pgbouncer,
            arguments.replica,
            tuple(arguments.write_concurrency),
            arguments.balance_runs,
        )
