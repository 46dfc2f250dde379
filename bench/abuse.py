"""Fairness benchmark: normal traffic's p95 with and without one abusive member, same run.

Normal traffic is the load benchmark's mix (``bench/load.py``'s OPERATIONS, rotated) at
concurrency 8 from eight members of the largest tenant; the abuser is another member of the same tenant sending, at
concurrency 8, the worst requests the limits still let through or make it refuse: the
largest page nests the node limit admits, the deepest ``ancestors``, common-word search
pages, fragment fan-out, a 400 KB filter, wrong passwords. Rounds alternate "normal alone"
and "normal + abuser" (3 of each, medians), on uvicorn with one worker per core, driven by
wrk. Issue 13's target: normal p95 with the abuser at most 2x without.

Prerequisite: a seeded database (``TASKQL_DATABASE=taskql_large taskql seed``, or a smaller
one: ``TASKQL_DATABASE=taskql_abuse taskql seed --orgs 4 --tasks-per-project 500``).

    TASKQL_DATABASE=taskql_abuse .venv/bin/python bench/abuse.py [--duration 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import OPERATIONS, ensure_wrk, free_port, session_for, start

from db.queries import users
from db.settings import pool_size_for
from db.targets import resolve
from db.tenancy import TenantContext, request_transaction

ROTATING_LUA = """
local bodies = {{ {bodies} }}
local tokens = {{ {tokens} }}
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Organization"] = "{slug}"
request = function()
  i = i + 1
  wrk.headers["Authorization"] = "Bearer " .. tokens[i % #tokens + 1]
  return wrk.format(nil, nil, nil, bodies[i % #bodies + 1])
end
done = function(summary, latency, requests)
  io.write(string.format('RESULT {{"requests": %d, "seconds": %f, "non2xx": %d, "p50": %f, "p95": %f, "p99": %f}}\\n',
    summary.requests, summary.duration / 1e6, summary.errors.status,
    latency:percentile(50) / 1e3, latency:percentile(95) / 1e3, latency:percentile(99) / 1e3))
end
"""


def fan_out(depth: int) -> str:
    fragments = [f"fragment F{i} on Query {{ ...F{i + 1} ...F{i + 1} }}" for i in range(depth)]
    return (
        "query { ...F0 } " + " ".join(fragments) + f" fragment F{depth} on Query {{ __typename }}"
    )


def abusive(variables: dict[str, str]) -> list[dict[str, Any]]:
    project, task = variables["id"], variables["t"]
    return [
        # The biggest nest under the node limit (100 + 100 * 99 + 100 * 99 ... < 20,000).
        {
            "query": "query($id: ID!) { project(id: $id) { tasks(first: 100) { nodes { title "
            "description subtasks(first: 99) { nodes { title description } } } } } }",
            "variables": {"id": project},
        },
        {
            "query": "query($t: ID!) { task(id: $t) { ancestors { title description "
            "subtasks(first: 100) { nodes { title } } } } }",
            "variables": {"t": task},
        },
        {"query": '{ search(text: "task", first: 100) { totalCount nodes { rank } } }'},
        {"query": fan_out(40)},
        {
            "query": "query($id: ID!, $s: String!) { project(id: $id) { tasks(first: 100, "
            "filter: {search: $s}) { totalCount } } }",
            "variables": {"id": project, "s": "billing " * 50_000},
        },
        {
            "query": 'mutation { logIn(input: {email: "nobody@example.test", '
            'password: "wrong password"}) { token } }'
        },
    ]


def normal(variables: dict[str, str]) -> list[dict[str, Any]]:
    picked = {k: v for k, v in variables.items() if k in ("id", "t")}
    return [{"query": q, "variables": picked} for q in OPERATIONS.values()]


def lua(bodies: list[dict[str, Any]], tokens: list[str], slug: str) -> str:
    quoted = ", ".join("[==[" + json.dumps(b) + "]==]" for b in bodies)
    return ROTATING_LUA.format(bodies=quoted, tokens=", ".join(f'"{t}"' for t in tokens), slug=slug)


def wrk_process(wrk: str, port: int, script: Path, connections: int, seconds: int) -> Any:
    return subprocess.Popen(
        [
            wrk,
            f"-t{min(2, connections)}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}/graphql",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )


def result_of(process: Any) -> dict[str, Any]:
    output, _ = process.communicate()
    line = next(line for line in output.splitlines() if line.startswith("RESULT "))
    data: dict[str, Any] = json.loads(line[len("RESULT ") :])
    data["rps"] = data["requests"] / data["seconds"]
    return data


async def sessions(owner_dsn: str, organization_id: str, count: int, label: str) -> list[str]:
    """Sessions of ``count`` members of the tenant (the abuser is one colleague; normal
    traffic comes from several, as it does from several browsers)."""
    owner = await asyncpg.connect(owner_dsn)
    try:
        async with owner.transaction():
            await owner.execute("SET LOCAL ROLE taskql_maintenance")
            members = await owner.fetch(
                "SELECT user_id FROM organization_members WHERE organization_id = $1 "
                "AND role IN ('member', 'admin') ORDER BY user_id "
                + ("LIMIT $2" if label == "normal" else "OFFSET $2 LIMIT 1"),
                organization_id,
                count if label == "normal" else 8,
            )
    finally:
        await owner.close()
    tokens = []
    for member in members:
        token = secrets.token_urlsafe(32)
        context = TenantContext(user_id=member["user_id"])
        async with request_transaction(context) as (_, executor):
            await users.create_session(
                executor,
                member["user_id"],
                token,
                datetime.now(UTC) + timedelta(hours=2),
                None,
                label,
            )
        tokens.append(token)
    return tokens


def main(duration: int, rounds: int, concurrency: int) -> None:
    wrk = ensure_wrk()
    targets = resolve()
    owner_dsn, server_dsn = targets.require_owner(), targets.require_server()
    _, slug, variables, _ = asyncio.run(session_for(owner_dsn, server_dsn))
    colleagues = asyncio.run(sessions(owner_dsn, variables["org"], 8, "normal"))
    abuser = asyncio.run(sessions(owner_dsn, variables["org"], 1, "abuser"))
    workers = os.cpu_count() or 2
    env = {
        **os.environ,
        "DATABASE_URL": server_dsn,
        "MIGRATION_DATABASE_URL": owner_dsn,
        "DB_POOL_MAX_SIZE": str(pool_size_for(os.cpu_count() or 1, workers)),
    }
    port = free_port()
    server = start("api.app:create_app", port, workers, env)
    alone: list[dict[str, Any]] = []
    abused: list[dict[str, Any]] = []
    attacker: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory() as scratch:
            normal_lua = Path(scratch) / "normal.lua"
            normal_lua.write_text(lua(normal(variables), colleagues, slug))
            abuse_lua = Path(scratch) / "abuse.lua"
            abuse_lua.write_text(lua(abusive(variables), abuser, slug))
            result_of(wrk_process(wrk, port, normal_lua, concurrency, 3))  # warm-up
            for n in range(rounds):
                print(f"round {n + 1}/{rounds}: normal alone", flush=True)
                alone.append(result_of(wrk_process(wrk, port, normal_lua, concurrency, duration)))
                print(f"round {n + 1}/{rounds}: normal + abuser", flush=True)
                bad = wrk_process(wrk, port, abuse_lua, concurrency, duration + 1)
                abused.append(result_of(wrk_process(wrk, port, normal_lua, concurrency, duration)))
                attacker.append(result_of(bad))
    finally:
        server.terminate()
        server.wait(timeout=30)

    def median(rows: list[dict[str, Any]], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    print()
    print(f"normal traffic at c{concurrency}, medians of {rounds} rounds of {duration} s")
    print(f"{'':28} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
    for label, rows in (("alone", alone), ("with the abuser", abused), ("the abuser", attacker)):
        print(
            f"{label:28} {median(rows, 'rps'):8.0f} {median(rows, 'p50'):8.1f} "
            f"{median(rows, 'p95'):8.1f} {median(rows, 'p99'):8.1f} {median(rows, 'non2xx'):8.0f}"
        )
    ratio = median(abused, "p95") / median(alone, "p95")
    print(f"\nfairness: normal p95 with the abuser / without = {ratio:.2f} (target <= 2)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    arguments = parser.parse_args()
    main(arguments.duration, arguments.rounds, arguments.concurrency)
