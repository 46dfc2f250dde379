"""Realtime benchmark: N subscribers (default 1,000) of `taskChanged` over 10 projects of two
tenants, a real server process, mutations at a fixed rate through HTTP.

What it reports (and writes to bench/results/realtime.json):

- commit-to-delivery latency p50/p95/p99: from the mutation's HTTP response (its commit is
  acknowledged) to each subscriber's `next` message, and from the moment the mutation was
  sent (an upper bound: it includes the mutation itself);
- events delivered per second (subscriber messages), and outbox events per second;
- database reads per event: payload executions (``Hub.stats.reads``) and transactions per
  event, against the subscribers and the distinct selections each event reached
  (subscribers of one project are grouped by tenant, role and selection: 4 roles here);
- the server's CPU (seconds per second, during the mutations) and memory (RSS with the
  subscriptions open minus before), per 1,000 subscriptions.

The server is a child process (this file with ``--child``): ``create_app`` under uvicorn,
one worker (one LISTEN connection), plus a ``/bench/stats`` route reading its hub's counters
(the benchmark's only addition). Each subscriber is a WebSocket connection of its own
(``--per-connection`` puts several on one), spread round-robin over the projects and the
four roles of each tenant. The clients run in this process, on the same machine: with 2
cores they compete with the server, so latency is an upper bound.

    .venv/bin/python bench/realtime.py [--subscribers 1000] [--rate 10] [--duration 20]

Without DATABASE_URL it runs on the embedded PostgreSQL, in a database of its own
(``taskql_bench_realtime``, created afresh).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve()
ROOT = SCRIPT.parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psutil  # noqa: E402

RESULTS = ROOT / "bench" / "results"
ROLES = ("owner", "admin", "member", "viewer")
SUBSCRIPTION = """subscription Board($project: ID!) {
  taskChanged(projectId: $project) { cursor action taskId task { title status priority } }
}"""
UPDATE = """mutation Touch($id: ID!, $title: String!) {
  updateTask(input: {id: $id, title: $title}) { task { id } errors { code } }
}"""
CREATE_PROJECT = """mutation($name: String!) {
  createProject(input: {name: $name}) { project { id } errors { code } } }"""
CREATE_TASK = """mutation($project: ID!, $title: String!) {
  createTask(input: {projectId: $project, title: $title}) { task { id } errors { code } } }"""


def free_port(first: int = 8850, last: int = 8899) -> int:
    for port in range(first, last + 1):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {first}-{last}")


# --------------------------------------------------------------------------- the server


def child(port: int) -> None:
    import uvicorn
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from api.app import create_app
    from api.settings import get_settings

    app = create_app()
    hub = app.state.hub

    async def stats(request: Request) -> JSONResponse:
        return JSONResponse(asdict(hub.stats))

    app.router.routes.insert(0, Route("/bench/stats", stats, methods=["GET"]))
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        ws="websockets-sansio",
        ws_max_size=get_settings().taskql_ws_max_message_bytes,
        lifespan="on",
    )


# --------------------------------------------------------------------------- set-up


async def prepare() -> tuple[str, dict[str, str]]:
    """A fresh database, migrated; the pool of this process on it (for seeding)."""
    from db.engine import DB
    from db.migrate import runner
    from db.settings import get_database_settings
    from db.targets import scratch_database

    settings = get_database_settings()
    targets = await scratch_database("taskql_bench_realtime", settings)
    owner, server = targets.require_owner(), targets.require_server()
    DB.configure(owner, settings)
    await runner.forwards()
    DB.configure(server, settings)
    await DB.start_connection_pool()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "MIGRATION_DATABASE_URL", "REDIS_URL")
    }
    env.update(DATABASE_URL=server, MIGRATION_DATABASE_URL=owner)
    return server, env


async def seed(http: httpx.AsyncClient, projects: int, tasks: int) -> list[dict[str, Any]]:
    """Two tenants (users of every role), ``projects`` projects between them, ``tasks``
    tasks each. Returns one entry per project: tenant, tokens, project and task ids."""
    from tests.api.world import seed_org

    orgs = [await seed_org("rta", tasks=tasks), await seed_org("rtb", tasks=tasks)]
    out = []
    for i in range(projects):
        org = orgs[i % 2]
        headers = {"Authorization": f"Bearer {org.tokens['admin']}", "X-Organization": org.slug}
        if i < 2:
            project, task_ids = org.project, [org.task(t) for t in range(tasks)]
        else:
            body = (
                await http.post(
                    "/graphql",
                    json={"query": CREATE_PROJECT, "variables": {"name": f"Board {i}"}},
                    headers=headers,
                )
            ).json()
            project = body["data"]["createProject"]["project"]["id"]
            task_ids = []
            for t in range(tasks):
                body = (
                    await http.post(
                        "/graphql",
                        json={
                            "query": CREATE_TASK,
                            "variables": {"project": project, "title": f"Task {t} of {i}"},
                        },
                        headers=headers,
                    )
                ).json()
                task_ids.append(body["data"]["createTask"]["task"]["id"])
        out.append(
            {"org": org.slug, "tokens": dict(org.tokens), "project": project, "tasks": task_ids}
        )
    return out


# --------------------------------------------------------------------------- clients


class Subscriber:
    """A graphql-transport-ws connection with some subscriptions; records arrival times."""

    def __init__(self, arrivals: list[tuple[int, float]]) -> None:
        self.arrivals = arrivals
        self.ready = asyncio.Event()
        self.errors: list[Any] = []

    async def run(
        self, url: str, token: str, org: str, projects: list[str], stop: asyncio.Event
    ) -> None:
        from websockets.asyncio.client import connect

        async with connect(url, subprotocols=["graphql-transport-ws"], max_size=2**22) as ws:  # type: ignore[list-item]
            await ws.send(
                json.dumps(
                    {"type": "connection_init", "payload": {"token": token, "organization": org}}
                )
            )
            ack = json.loads(await ws.recv())
            assert ack["type"] == "connection_ack", ack
            for n, project in enumerate(projects):
                await ws.send(
                    json.dumps(
                        {
                            "id": str(n),
                            "type": "subscribe",
                            "payload": {"query": SUBSCRIPTION, "variables": {"project": project}},
                        }
                    )
                )
            self.ready.set()
            reader = asyncio.ensure_future(self._read(ws))
            await stop.wait()
            reader.cancel()

    async def _read(self, ws: Any) -> None:
        async for raw in ws:
            now = time.time()
            message = json.loads(raw)
            kind = message.get("type")
            if kind == "ping":
                await ws.send('{"type":"pong"}')
            elif kind == "next":
                data = (message["payload"].get("data") or {}).get("taskChanged") or {}
                title = (data.get("task") or {}).get("title") or ""
                if title.startswith("bench "):
                    self.arrivals.append((int(title.split()[1]), now))
                else:
                    self.errors.append(message["payload"])
            elif kind == "error":
                self.errors.append(message)


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    low = int(k)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def start_server(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, str(SCRIPT), "--child", "--port", str(port)], env=env)


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    from db.engine import DB

    _, env = await prepare()
    port = free_port()
    env.update(
        TASKQL_WS_MAX_SUBSCRIPTIONS_PER_USER=str(max(100, args.subscribers)),
        TASKQL_WS_MAX_SUBSCRIPTIONS_PER_CONNECTION=str(max(20, args.per_connection)),
        TASKQL_WS_IDLE_SECONDS="3600",
        # Open connections re-authenticate every 30 s by default (one statement each): kept
        # out of the window so transactions per event count payload reads only.
        TASKQL_WS_REAUTH_SECONDS="3600",
        TASKQL_METRICS="0",
        TASKQL_MAX_QUEUED_PER_CALLER="1000",
    )
    server = await asyncio.to_thread(start_server, env, port)
    process = psutil.Process(server.pid)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            for _ in range(300):
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
            else:
                raise RuntimeError("the server did not become ready")
            boards = await seed(http, args.projects, args.tasks)
            await asyncio.sleep(1.0)
            rss_before = process.memory_info().rss

            # Subscribers: round-robin over projects, then roles of that project's tenant.
            arrivals: list[tuple[int, float]] = []
            stop = asyncio.Event()
            subscribers: list[Subscriber] = []
            runs = []
            expected: dict[int, int] = {}  # project index -> subscriptions
            connections = -(-args.subscribers // args.per_connection)
            made = 0
            for c in range(connections):
                count = min(args.per_connection, args.subscribers - made)
                indexes = [(made + k) % args.projects for k in range(count)]
                made += count
                board = boards[indexes[0]]
                role = ROLES[(c // args.projects) % len(ROLES)]
                projects = [boards[i]["project"] for i in indexes]
                for i in indexes:
                    expected[i] = expected.get(i, 0) + 1
                sub = Subscriber(arrivals)
                subscribers.append(sub)
                runs.append(
                    asyncio.ensure_future(
                        sub.run(
                            f"ws://127.0.0.1:{port}/graphql",
                            board["tokens"][role],
                            board["org"],
                            projects,
                            stop,
                        )
                    )
                )
                if c % 50 == 49:
                    await asyncio.gather(*(s.ready.wait() for s in subscribers))
            await asyncio.wait_for(asyncio.gather(*(s.ready.wait() for s in subscribers)), 300)
            await asyncio.sleep(3.0)  # every subscribe routed, the memory settled
            rss_after = process.memory_info().rss
            stats_before = (await http.get("/bench/stats")).json()
            xacts_before = await DB.pool.fetchval(  # type: ignore[union-attr]
                "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
            )
            cpu_before = sum(process.cpu_times()[:2])
            own_before = sum(psutil.Process().cpu_times()[:2])

            # Mutations at a fixed rate, round-robin over projects, as each tenant's member.
            sent: dict[int, tuple[float, float, int]] = {}
            interval = 1.0 / args.rate
            total = int(args.rate * args.duration)
            started = time.monotonic()

            async def mutate(n: int) -> None:
                index = n % args.projects
                board = boards[index]
                headers = {
                    "Authorization": f"Bearer {board['tokens']['member']}",
                    "X-Organization": board["org"],
                }
                task = board["tasks"][(n // args.projects) % len(board["tasks"])]
                t0 = time.time()
                response = await http.post(
                    "/graphql",
                    json={"query": UPDATE, "variables": {"id": task, "title": f"bench {n}"}},
                    headers=headers,
                )
                t1 = time.time()
                body = response.json()
                assert body["data"]["updateTask"]["errors"] == [], body
                sent[n] = (t0, t1, index)

            pending = []
            for n in range(total):
                delay = started + n * interval - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                pending.append(asyncio.ensure_future(mutate(n)))
            await asyncio.gather(*pending)
            mutations_done = time.monotonic()
            want = sum(expected[sent[n][2]] for n in sent)
            deadline = time.monotonic() + 30
            while len(arrivals) < want and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.1)  # arrivals are appended by 1,000 readers: poll
            window = time.monotonic() - started
            await asyncio.sleep(
                1.5
            )  # backends report their transactions to pg_stat at most each second
            cpu = sum(process.cpu_times()[:2]) - cpu_before
            own_cpu = sum(psutil.Process().cpu_times()[:2]) - own_before
            stats_after = (await http.get("/bench/stats")).json()
            xacts_after = await DB.pool.fetchval(  # type: ignore[union-attr]
                "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
            )
            stop.set()
            await asyncio.gather(*runs, return_exceptions=True)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()

    from_commit = [(t - sent[n][1]) * 1000 for n, t in arrivals if n in sent]
    from_send = [(t - sent[n][0]) * 1000 for n, t in arrivals if n in sent]
    events = stats_after["events"] - stats_before["events"]
    reads = stats_after["reads"] - stats_before["reads"]
    deliveries = stats_after["delivered"] - stats_before["delivered"]
    # Every transaction of the window in the database (pg_stat_database): the mutations',
    # the payload reads, and the statements outside a transaction (pool resets), less the
    # mutations' own and this process's counter read.
    extra_xacts = (xacts_after - xacts_before) - total - 1
    groups_per_event = len(ROLES)  # the subscribers of one project: 4 roles of its tenant
    errors = [e for s in subscribers for e in s.errors]
    subs = args.subscribers
    result = {
        "subscribers": subs,
        "connections": connections,
        "projects": args.projects,
        "subscribers_per_project": round(subs / args.projects, 1),
        "distinct_selections_per_event": groups_per_event,
        "rate_per_second": args.rate,
        "mutations": total,
        "mutation_seconds": round(mutations_done - started, 2),
        "expected_deliveries": want,
        "deliveries_received": len(arrivals),
        "errors": len(errors),
        "latency_ms_from_commit": {
            "p50": round(percentile(from_commit, 50), 1),
            "p95": round(percentile(from_commit, 95), 1),
            "p99": round(percentile(from_commit, 99), 1),
            "max": round(max(from_commit), 1) if from_commit else None,
        },
        "latency_ms_from_send": {
            "p50": round(percentile(from_send, 50), 1),
            "p95": round(percentile(from_send, 95), 1),
            "p99": round(percentile(from_send, 99), 1),
        },
        "deliveries_per_second": round(len(arrivals) / window, 1),
        "outbox_events": events,
        "outbox_events_per_second": round(events / window, 1),
        "payload_reads": reads,
        "payload_reads_per_event": round(reads / events, 2) if events else None,
        "server_deliveries": deliveries,
        "database_transactions_per_event_besides_the_mutation": round(extra_xacts / events, 2)
        if events
        else None,
        "server_cpu_seconds_per_second": round(cpu / window, 3),
        "server_cpu_ms_per_1000_deliveries": round(cpu * 1000 / max(len(arrivals), 1) * 1000, 1),
        "server_rss_mb_before": round(rss_before / 2**20, 1),
        "server_rss_mb_with_subscriptions": round(rss_after / 2**20, 1),
        "server_rss_mb_per_1000_subscriptions": round(
            (rss_after - rss_before) / 2**20 * 1000 / subs, 1
        ),
        "server_cpu_per_1000_subscriptions": round(cpu / window * 1000 / subs, 3),
        # The clients (this process): on one core at most, they bound what can be measured.
        "bench_clients_cpu_seconds_per_second": round(own_cpu / window, 3),
        "machine": {"cores": os.cpu_count(), "load_average": os.getloadavg()},
    }
    if errors:
        result["first_error"] = errors[0]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--per-connection", type=int, default=1)
    parser.add_argument("--projects", type=int, default=10)
    parser.add_argument("--tasks", type=int, default=3, help="tasks per project")
    parser.add_argument("--rate", type=float, default=10.0, help="mutations per second")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of mutations")
    parser.add_argument("--output", default="realtime.json", help="file in bench/results/")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.port)
        return
    result = asyncio.run(bench(args))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
