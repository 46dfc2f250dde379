"""Load benchmark: the hot operations against uvicorn (workers = cores), driven by wrk.

Prerequisite: the large dataset (``TASKQL_DATABASE=taskql_large taskql seed``, or
DATABASE_URL/MIGRATION_DATABASE_URL of a seeded database). For each operation and each
concurrency (1, 8, 32), after a warm-up, wrk runs for a fixed time and reports req/s and
latency percentiles; the same run measures the limit (``bench/limit_server.py``: one
hand-written SQL statement per request) for the main query, and the CPU time each process
used. Results go to bench/results/ as JSON and markdown (and a PNG chart when matplotlib is
installed).

    TASKQL_DATABASE=taskql_large .venv/bin/python bench/load.py [--duration 10]

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
from db import pgbouncer as pgbouncer_launcher
from db import standby
from db.explain import find_sample, tenant_slugs
from db.queries import users
from db.settings import pool_size_for
from db.targets import resolve
from db.tenancy import TenantContext, request_transaction

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
#: Suffix of the operations run through PgBouncer.
THROUGH_PGBOUNCER = " [PgBouncer]"
#: Suffix of the operations run by the server whose reads go to the replica.
ON_REPLICA = " [replica]"
MAIN_QUERY = """query($id: ID!) { project(id: $id) { name tasks(first: 50) { edges { node {
  id title status priority assignee { id displayName }
  comments(first: 3) { nodes { id content author { id displayName } } } } } } } }"""
OPERATIONS = {
    "main query (50 tasks, assignee, 3 comments + authors)": MAIN_QUERY,
    "project tasks by priority, with totalCount": "query($id: ID!) { project(id: $id) { tasks(first: 50, orderBy: PRIORITY, direction: DESC) { totalCount nodes { id title priority status } } } }",
    "task detail (ancestors, subtasks, history)": "query($t: ID!) { task(id: $t) { title ancestors { title } subtasks(first: 10) { nodes { title } } history(first: 5) { nodes { action createdAt } } } }",
    "search": '{ search(text: "billing export", first: 20) { nodes { rank node { __typename } } } }',
    "viewer with memberships": "{ viewer { user { email } memberships(first: 10) { nodes { role organization { slug } } } } }",
    "audit log page (newest 20, with actor)": "{ auditLog(first: 20) { edges { cursor node { action entityType changes createdAt actor { displayName } } } pageInfo { hasNextPage endCursor } } }",
}
LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {token}"
wrk.headers["X-Organization"] = "{slug}"
wrk.body = [[{body}]]
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


def start(app: str, port: int, workers: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    if app.endswith("create_app"):
        command.append("--factory")
    process = subprocess.Popen(command, env=env, cwd=ROOT.parent)
    wait_for(port)
    return process


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


def postgres_pids() -> list[int]:
    return [p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == "postgres"]


def run_wrk(wrk: str, port: int, script: Path, connections: int, seconds: int) -> dict[str, Any]:
    threads = min(2, connections)
    result = subprocess.run(
        [
            wrk,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}/graphql",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))
    data: dict[str, Any] = json.loads(line[len("RESULT ") :])
    data["rps"] = data["requests"] / data["seconds"]
    return data


async def session_for(owner_dsn: str, server_dsn: str) -> tuple[str, str, dict[str, str], int]:
    owner = await asyncpg.connect(owner_dsn)
    try:
        largest, _ = await tenant_slugs(owner)
        sample = await find_sample(owner, largest, largest)
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
        "t": to_global_id("Task", sample.deep_task_id or sample.task_ids[0]),
    }
    ids = {"org": str(sample.organization_id), "project": str(sample.project_id)}
    return token, largest, {**variables, **ids}, sample.tasks_in_project


async def statements_per_operation(
    app_env: dict[str, str], token: str, slug: str, variables: dict[str, str]
) -> dict[str, int]:
    """The same operations once in-process, for their SQL statement counts."""
    import httpx

    from api.app import create_app
    from api.settings import Settings
    from db.engine import DB

    counts = {}
    await DB.start_connection_pool()
    app = create_app(Settings(taskql_sql_stats=True))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://bench"
    ) as client:
        for name, query in OPERATIONS.items():
            response = await client.post(
                "/graphql",
                json={"query": query, "variables": variables},
                headers={"Authorization": f"Bearer {token}", "X-Organization": slug},
            )
            body = response.json()
            assert "errors" not in body, body
            counts[name] = body["extensions"]["sqlStatements"]
    await DB.close_connection_pool()
    return counts


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over repeated runs. wrk's connections stay open for a run, and
    which worker accepts each one is the kernel's choice: one run can load a worker with
    two thirds of them (its p95 doubles), the next spreads them evenly. Each run opens them
    anew, so the median is the typical figure."""
    numeric = [k for k, v in runs[0].items() if isinstance(v, int | float)]
    return {k: statistics.median(run[k] for run in runs) for k in numeric}


def main(
    duration: int,
    concurrencies: list[int],
    only: list[str] | None = None,
    pool_size: int | None = None,
    repeat: int = 3,
    through_pgbouncer: bool = False,
    on_replica: bool = False,
) -> None:
    wrk = ensure_wrk()
    targets = resolve()
    owner_dsn, server_dsn = targets.require_owner(), targets.require_server()
    token, slug, variables, project_size = asyncio.run(session_for(owner_dsn, server_dsn))
    workers = os.cpu_count() or 2
    if pool_size is None:
        # PostgreSQL runs on this machine: the pool sized to its cores, as `taskql serve` does.
        pool_size = pool_size_for(os.cpu_count() or 1, workers)
    env = {
        **os.environ,
        "DATABASE_URL": server_dsn,
        "MIGRATION_DATABASE_URL": owner_dsn,
        "DB_POOL_MAX_SIZE": str(pool_size),
        "TASKQL_LOGIN_ATTEMPTS_PER_IP": "1000000",
    }
    statements = asyncio.run(statements_per_operation(env, token, slug, variables))
    api_port, limit_port = free_port(), free_port()
    api = start("api.app:create_app", api_port, workers, env)
    limit = start(
        "bench.limit_server:app",
        limit_port,
        workers,
        {
            **env,
            "LIMIT_DSN": server_dsn,
            "LIMIT_ORG": variables["org"],
            "LIMIT_PROJECT": variables["project"],
            "LIMIT_POOL_SIZE": str(pool_size),
        },
    )
    bouncer: pgbouncer_launcher.PgBouncer | None = None
    behind: subprocess.Popen[bytes] | None = None
    if through_pgbouncer:
        # As many server connections as the direct API's pools hold together: the same
        # concurrency reaches PostgreSQL, only the hop differs.
        bouncer = pgbouncer_launcher.start(
            [server_dsn], pool_size=workers * pool_size, max_client_conn=1000
        )
        user = pgbouncer_launcher.Upstream.parse(server_dsn).user
        behind_port = free_port()
        behind = start(
            "api.app:create_app",
            behind_port,
            workers,
            {**env, "DATABASE_URL": bouncer.dsn(user), "DB_PGBOUNCER": "1"},
        )
    replica: standby.Standby | None = None
    replica_server: subprocess.Popen[bytes] | None = None
    replica_url = os.environ.get("DATABASE_REPLICA_URL")
    if on_replica:
        if replica_url is None:
            if targets.embedded is None:
                raise SystemExit("--replica with DATABASE_URL needs DATABASE_REPLICA_URL")
            replica = standby.create(targets.embedded, ROOT.parent / ".taskql" / "bench-replica")
            parts = pgbouncer_launcher.Upstream.parse(server_dsn)
            replica_url = replica.dsn(parts.user, parts.database)
        replica_port = free_port()
        replica_server = start(
            "api.app:create_app",
            replica_port,
            workers,
            {**env, "DATABASE_REPLICA_URL": replica_url},
        )
    rows: list[dict[str, Any]] = []
    lag: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory() as scratch:

            def script(name: str, query: str) -> Path:
                path = Path(scratch) / f"{abs(hash(name))}.lua"
                body = json.dumps(
                    {
                        "query": query,
                        "variables": {k: v for k, v in variables.items() if k in ("id", "t")},
                    }
                )
                path.write_text(LUA.format(token=token, slug=slug, body=body))
                return path

            targets_to_run = []
            for name, q in OPERATIONS.items():
                if only and not any(word in name for word in only):
                    continue
                targets_to_run.append((name, api_port, tree(api), script(name, q)))
                if behind is not None and bouncer is not None and bouncer.process is not None:
                    targets_to_run.append(
                        (
                            name + THROUGH_PGBOUNCER,
                            behind_port,
                            [*tree(behind), bouncer.process.pid],
                            script(name, q),
                        )
                    )
                if replica_server is not None:
                    targets_to_run.append(
                        (name + ON_REPLICA, replica_port, tree(replica_server), script(name, q))
                    )
            targets_to_run.append(
                (
                    "LIMIT: main query as one SQL statement",
                    limit_port,
                    tree(limit),
                    script("limit", MAIN_QUERY),
                )
            )
            for name, port, pids, lua in targets_to_run:
                run_wrk(wrk, port, lua, 8, 2)  # warm-up
                for connections in concurrencies:
                    runs = []
                    for _ in range(repeat):
                        before_app, before_pg = cpu_seconds(pids), cpu_by_pid(postgres_pids())
                        before_each = [cpu_seconds([pid]) for pid in pids[1:]]
                        run = run_wrk(wrk, port, lua, connections, duration)
                        each = [
                            cpu_seconds([pid]) - b
                            for pid, b in zip(pids[1:], before_each, strict=True)
                        ]
                        if name.endswith(THROUGH_PGBOUNCER):
                            each = each[:-1]  # PgBouncer's own CPU counts as the app's
                        run.update(
                            cpu_app_s=cpu_seconds(pids) - before_app,
                            cpu_postgres_s=cpu_used(before_pg, cpu_by_pid(postgres_pids())),
                            # The busiest worker's share of the workers' CPU (0.5: even).
                            busiest_worker=max(each) / sum(each) if sum(each) > 0 else 0.0,
                        )
                        runs.append(run)
                    result = median_of(runs)
                    result.update(
                        operation=name,
                        concurrency=connections,
                        statements=statements.get(base_name(name), 1),
                        runs=runs,
                    )
                    rows.append(result)
                    print(
                        f"{name[:48]:48} c={connections:<3} {result['rps']:8.1f} req/s  p50 {result['p50']:7.1f} ms  "
                        f"p95 {result['p95']:7.1f} ms  p99 {result['p99']:7.1f} ms  errors {result['errors'] + result['non2xx']}  "
                        f"busiest worker {result['busiest_worker']:.2f}",
                        flush=True,
                    )
        if replica_server is not None and replica_url is not None:
            lag = asyncio.run(
                replica_lag(replica_port, replica_url, token, slug, variables["id"], owner_dsn)
            )
    finally:
        for process in (api, limit, behind, replica_server):
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
    )


def base_name(name: str) -> str:
    return name.removesuffix(THROUGH_PGBOUNCER).removesuffix(ON_REPLICA)


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


def write_results(
    rows: list[dict[str, Any]],
    duration: int,
    workers: int,
    project_size: int,
    repeat: int,
    pool_size: int,
    stem: str = "load",
    lag: dict[str, Any] | None = None,
) -> None:
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    (RESULTS / f"{stem}.json").write_text(
        json.dumps(
            {
                "generated": stamp,
                "duration_s": duration,
                "repeat": repeat,
                "workers": workers,
                "pool_size": pool_size,
                "rows": rows,
                "replica_lag": lag or {},
            },
            indent=2,
        )
    )
    lines = [
        f"# Load benchmark ({stamp})",
        "",
        f"uvicorn with {workers} workers per server ({pool_size} pooled connections each), wrk for",
        f"{duration} s per run after a warm-up, {repeat} runs per row: each figure is the median of",
        f"the runs. The largest seeded tenant, a project of {project_size:,} tasks. Latencies in ms;",
        "CPU seconds per run; busiest worker: its share of the workers' CPU (0.50 is even).",
        "",
        "| operation | concurrency | req/s | p50 | p95 | p99 | statements | CPU app s | CPU postgres s | busiest worker | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['operation']} | {r['concurrency']} | {r['rps']:.1f} | {r['p50']:.1f} | {r['p95']:.1f} | "
            f"{r['p99']:.1f} | {r['statements']} | {r['cpu_app_s']:.1f} | {r['cpu_postgres_s']:.1f} | "
            f"{r.get('busiest_worker', 0):.2f} | {r['errors'] + r['non2xx']} |"
        )
    main_rows = {
        r["concurrency"]: r
        for r in rows
        if r["operation"].startswith("main query") and base_name(r["operation"]) == r["operation"]
    }
    limit_rows = {r["concurrency"]: r for r in rows if r["operation"].startswith("LIMIT")}
    lines += [
        "",
        "Main query throughput as a share of the limit (one SQL statement per request):",
        "",
    ]
    for c in sorted(main_rows):
        if c in limit_rows:
            lines.append(f"- concurrency {c}: {main_rows[c]['rps'] / limit_rows[c]['rps']:.2f}")
    lines += pgbouncer_ratios(rows)
    lines += replica_ratios(rows, lag or {})
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    chart(rows, RESULTS / f"{stem}.png")


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
        )
