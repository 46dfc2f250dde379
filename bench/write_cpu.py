"""The server's CPU per request of one operation, for one or more checkouts of taskql,
interleaved: one uvicorn worker each, the same database, wrk at one concurrency.

    python bench/write_cpu.py updateTask --code . ../taskql-before --rounds 3

Each round runs every checkout once, in turn, so a noisy machine slows all of them alike;
the summary gives each checkout's median and its ratio to the first one's. The operation is
one of ``bench/load.py``'s (``WRITES`` or ``OPERATIONS``), with its scripts, its sample
(the largest tenant's largest project) and its server environment. For the figures of
docs/performance.md ("Round three").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import load
from db.targets import resolve


def script(directory: Path, operation: str, token: str, slug: str, variables: dict) -> Path:
    query = load.WRITES.get(operation) or load.OPERATIONS[operation]
    given = load.graphql_variables(variables, query)
    dynamic = ""
    if operation in load.WRITES:
        given.update(id="__ID__", n="__N__")
        given = {k: v for k, v in given.items() if f"${k}:" in query}
        dynamic = load.WRITE_LUA.replace(
            "IDS", ", ".join(json.dumps(i) for i in variables["write_ids"])
        )
    path = directory / "operation.lua"
    body = json.dumps({"query": query, "variables": given})
    path.write_text(load.LUA.format(token=token, slug=slug, body=body, dynamic=dynamic))
    return path


def measure(code: Path, env: dict[str, str], lua: Path, connections: int, seconds: int) -> dict:
    port = load.free_port()
    command = load._uvicorn("api.app:create_app", ["--port", str(port), "--workers", "1"])
    server = subprocess.Popen(command, env={**env, "PYTHONPATH": str(code)}, cwd=code)
    try:
        load.wait_for(port)
        pids = load.tree(server)
        load.run_wrk(load.ensure_wrk(), port, lua, connections, 1, "/graphql")  # warm-up
        before = load.cpu_seconds(pids)
        run = load.run_wrk(load.ensure_wrk(), port, lua, connections, seconds, "/graphql")
        used = load.cpu_seconds(pids) - before
    finally:
        server.terminate()
        server.wait()
    run["cpu_ms_per_request"] = 1000 * used / max(run["requests"], 1)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("operation")
    parser.add_argument("--code", nargs="+", type=Path, default=[Path(".")])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--duration", type=int, default=4)
    arguments = parser.parse_args()
    targets = resolve()
    owner, server = targets.require_owner(), targets.require_server()
    token, slug, variables, _ = asyncio.run(load.session_for(owner, server))
    env = load.server_env(owner, server, 4)
    codes = [c.resolve() for c in arguments.code]
    figures: dict[Path, list[float]] = {c: [] for c in codes}
    with tempfile.TemporaryDirectory() as scratch:
        lua = script(Path(scratch), arguments.operation, token, slug, variables)
        for round_ in range(arguments.rounds):
            for code in codes:
                run = measure(code, env, lua, arguments.connections, arguments.duration)
                if run["non2xx"] or run["errors"]:
                    raise SystemExit(f"{code}: {run['non2xx']} non-2xx, {run['errors']} errors")
                figures[code].append(run["cpu_ms_per_request"])
                print(
                    f"round {round_ + 1} {code}: {run['rps']:.0f} req/s, p95 {run['p95']:.1f} ms, "
                    f"CPU {run['cpu_ms_per_request']:.2f} ms/request",
                    flush=True,
                )
    first = statistics.median(figures[codes[0]])
    for code in codes:
        median = statistics.median(figures[code])
        print(f"{code}: median {median:.2f} ms/request, {median / first:.2f} of {codes[0].name}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
