"""Latency of the main query against tenant size and page size (issue 17's chart).

For tenants spread over the size range (by default the smallest, the median, the 90th
percentile and the largest by task count), each with its largest project, and for page sizes
10, 50 and 100, the main query of ``bench/load.py`` (``first: N`` tasks, each with its
assignee and 3 comments with their authors) runs at concurrency 1 through the real HTTP
server: uvicorn with one worker per core, started as ``bench/load.py`` starts it, driven by
wrk. After a warm-up of each cell, ``--repeat`` rounds each run every cell once for
``--duration`` seconds, the order rotated each round (the machine is noisy: a slow minute
falls on every cell in turn); each figure is the median over the rounds.

Per cell it records wrk's p50/p95/p99 latency (the whole request: HTTP, authentication,
the tenant context, the compiled statement, the response), the tenant's and the project's
task counts, and from pg_stat_statements (the server role's statements, deltas over each
run) the compiled statement's mean execution time and PostgreSQL's execution time per
request over all its statements (``app_begin_request``, the statement, BEGIN/COMMIT):
the gap between p50 and those is the Python and HTTP side. The compiled statement is found
by its query identifier (``EXPLAIN (VERBOSE)`` of the SQL that taskql's compiler writes for
the request), the same for every page size and tenant (they are parameters).

Writes ``bench/results/scaling-<label>.json``, ``.md`` (the table) and ``.png`` (p50 and p95
latency and the statement's time against tenant size, log x, one colour per page size; needs
matplotlib: ``pip install -e '.[bench]'``). Needs wrk (``apt-get install wrk``), and a seeded
database: ``TASKQL_DATABASE`` names one of the embedded server (or DATABASE_URL and
MIGRATION_DATABASE_URL point at a server, where pg_stat_statements must be loaded for the
statement's time). It adds one session row per measured tenant, nothing else.

    # the 1M-task dataset (taskql seed's defaults: 20 tenants, 10 projects each, 5,000 tasks
    # per project on average) and a 10M-task one (10 x the tasks per project):
    TASKQL_DATABASE=taskql_large .venv/bin/taskql seed
    TASKQL_DATABASE=taskql_large .venv/bin/python bench/scaling.py --label 1M
    TASKQL_DATABASE=taskql_10m .venv/bin/taskql seed --tasks-per-project 50000
    TASKQL_DATABASE=taskql_10m .venv/bin/python bench/scaling.py --label 10M
    # one chart of both, side by side, from their JSON (no run): scaling-1M-vs-10M.png
    .venv/bin/python bench/scaling.py --chart 1M 10M
    # a small dataset, to try it (bench/results/scaling-small.*):
    TASKQL_DATABASE=taskql_scaling .venv/bin/taskql seed --orgs 12 --users 300 --tasks-per-project 400
    TASKQL_DATABASE=taskql_scaling .venv/bin/python bench/scaling.py --label small

Options: ``--duration 5`` seconds per run, ``--repeat 3`` rounds, ``--warmup 2`` seconds per
cell, ``--percentiles 0 50 90 100`` (tenants by task count, nearest rank),
``--page-sizes 10 50 100``, ``--note TEXT`` (what the dataset is, printed in the .md),
``--chart LABEL [LABEL ...]`` (redraw from JSON, no run). A run takes about cells x (warm-up
+ repeat x duration), 12 x 17 s = 204 s at the defaults, plus the start-up (counting every
tenant's tasks and the tables' rows: seconds on 10M tasks); 215 s in all on the small dataset.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import (
    LUA,
    RESULTS,
    Cluster,
    cluster_of,
    commit_stamp,
    ensure_wrk,
    free_port,
    main_query,
    run_wrk,
    server_env,
    session_for,
    start,
)

from api.compiler import Compiler
from api.schema import build_schema
from api.settings import Settings
from db import pgbouncer
from db.engine import DB
from db.explain import tenant_task_counts
from db.settings import pool_size_for
from db.targets import resolve
from db.tenancy import TenantContext, request_transaction

PAGE_SIZES = (10, 50, 100)
PERCENTILES = (0, 50, 90, 100)


@dataclass
class Tenant:
    """A tenant picked by its rank in task count, with a session of its owner."""

    percentile: int
    slug: str
    tasks: int
    project_tasks: int
    token: str
    project: str  # the global id of its largest project
    organization_id: UUID
    user_id: UUID


def pick(counts: list[tuple[str, int]], percentiles: list[int]) -> list[tuple[int, str, int]]:
    """The tenants at these percentiles of task count (nearest rank; fewest tasks first),
    each once."""
    ascending = sorted(counts, key=lambda c: (c[1], c[0]))
    picked: dict[str, tuple[int, str, int]] = {}
    for p in sorted(percentiles):
        slug, n = ascending[round(p / 100 * (len(ascending) - 1))]
        picked.setdefault(slug, (p, slug, n))
    return list(picked.values())


async def prepare(
    owner_dsn: str, server_dsn: str, percentiles: list[int], page_sizes: list[int]
) -> tuple[list[Tenant], dict[str, int], set[int]]:
    """The tenants (with sessions), the dataset's totals, and the query identifiers of the
    compiled main query (one, normally: tenant and page size are parameters)."""
    owner = await asyncpg.connect(owner_dsn)
    try:
        counts = await tenant_task_counts(owner)
        async with owner.transaction():
            await owner.execute("SET LOCAL ROLE taskql_maintenance")
            totals = {
                table: int(await owner.fetchval(f"SELECT count(*) FROM {table}"))
                for table in ("organizations", "users", "projects", "tasks", "task_comments")
            }
    finally:
        await owner.close()
    tenants = []
    for percentile, slug, n in pick(counts, percentiles):
        token, _, variables, project_tasks = await session_for(owner_dsn, server_dsn, slug)
        tenants.append(
            Tenant(
                percentile,
                slug,
                n,
                project_tasks,
                token,
                variables["id"],
                UUID(variables["org"]),
                UUID(variables["user"]),
            )
        )
    settings = Settings()
    compiler = Compiler(build_schema(settings)._schema, settings)
    query_ids: set[int] = set()
    for tenant in tenants:
        context = TenantContext(
            organization_id=tenant.organization_id, user_id=tenant.user_id, role="owner"
        )
        for size in page_sizes:
            prepared = compiler.prepare(
                main_query(size),
                None,
                {"id": tenant.project},
                tenant.organization_id,
                tenant.user_id,
                "owner",
            )
            if prepared is None:
                raise SystemExit(f"the main query with first: {size} did not compile")
            sql, params = prepared
            async with request_transaction(context) as (_, executor):
                plan = await executor.fetchval(f"EXPLAIN (VERBOSE, FORMAT JSON) {sql}", *params)
            query_id = json.loads(plan)[0].get("Query Identifier")
            if query_id is not None:
                query_ids.add(int(query_id))
    if DB.pool is not None:
        await DB.close_connection_pool()
    return tenants, totals, query_ids


async def check(port: int, tenant: Tenant, size: int) -> int:
    """One request of the cell, checked (HTTP 200, no errors, the page's length): the
    response's size in bytes."""
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"http://127.0.0.1:{port}/graphql",
            json={"query": main_query(size), "variables": {"id": tenant.project}},
            headers={"Authorization": f"Bearer {tenant.token}", "X-Organization": tenant.slug},
        )
    body = response.json()
    if response.status_code != 200 or "errors" in body:
        raise SystemExit(f"{tenant.slug}, first {size}: {response.status_code} {body}")
    edges = body["data"]["project"]["tasks"]["edges"]
    if len(edges) != min(size, tenant.project_tasks):
        raise SystemExit(f"{tenant.slug}, first {size}: {len(edges)} tasks in the page")
    return len(response.content)


def measure(
    wrk: str,
    port: int,
    script: Path,
    duration: int,
    cluster: Cluster,
    query_ids: set[int],
) -> dict[str, Any]:
    """One wrk run at concurrency 1, with what PostgreSQL spent executing (deltas of
    pg_stat_statements over the run)."""
    before = cluster.exec_times()
    run = run_wrk(wrk, port, script, 1, duration)
    after = cluster.exec_times()
    ran = {
        q: (calls - before.get(q, (0.0, 0.0))[0], ms - before.get(q, (0.0, 0.0))[1])
        for q, (calls, ms) in after.items()
    }
    statement = [ran[q] for q in query_ids if q in ran and ran[q][0] > 0]
    calls = sum(c for c, _ in statement)
    requests = max(run["requests"], 1)
    if after:
        run["statement_ms"] = sum(ms for _, ms in statement) / calls if calls else None
        run["statement_calls_per_request"] = calls / requests
        run["pg_ms_per_request"] = sum(ms for _, ms in ran.values()) / requests
    return run


def median_or_none(values: list[Any]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def main(
    label: str,
    duration: int,
    repeat: int,
    warmup: int,
    percentiles: list[int],
    page_sizes: list[int],
    note: str | None,
) -> None:
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    wrk = ensure_wrk()
    targets = resolve()
    owner_dsn, server_dsn = targets.require_owner(), targets.require_server()
    database = pgbouncer.Upstream.parse(server_dsn).database
    tenants, totals, query_ids = asyncio.run(
        prepare(owner_dsn, server_dsn, percentiles, page_sizes)
    )
    cluster = cluster_of(targets)
    print(
        f"{database}: {totals['tasks']:,} tasks in {totals['organizations']} tenants; picked "
        + ", ".join(f"p{t.percentile} {t.slug} ({t.tasks:,} tasks)" for t in tenants)
        + f"; statement query ids {sorted(query_ids)}; PostgreSQL time from {cluster.counting}",
        flush=True,
    )
    workers = os.cpu_count() or 2
    pool_size = pool_size_for(os.cpu_count() or 1, workers)
    port = free_port()
    server = start(
        "api.app:create_app", port, workers, server_env(owner_dsn, server_dsn, pool_size)
    )
    cells = [(tenant, size) for tenant in tenants for size in page_sizes]
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {(t.slug, s): [] for t, s in cells}
    sizes: dict[tuple[str, int], int] = {}
    try:
        with tempfile.TemporaryDirectory() as scratch:
            scripts: dict[tuple[str, int], Path] = {}
            for tenant, size in cells:
                path = Path(scratch) / f"{tenant.slug}-{size}.lua"
                body = json.dumps({"query": main_query(size), "variables": {"id": tenant.project}})
                path.write_text(
                    LUA.format(token=tenant.token, slug=tenant.slug, body=body, dynamic="")
                )
                scripts[tenant.slug, size] = path
                sizes[tenant.slug, size] = asyncio.run(check(port, tenant, size))
                if warmup:
                    run_wrk(wrk, port, path, 1, warmup)
            for index in range(repeat):
                # Each round in another order: a noisy stretch is spread over the cells.
                shift = index * len(cells) // max(repeat, 1)
                for tenant, size in cells[shift:] + cells[:shift]:
                    run = measure(
                        wrk, port, scripts[tenant.slug, size], duration, cluster, query_ids
                    )
                    runs[tenant.slug, size].append(run)
                    print(
                        f"round {index + 1}/{repeat} {tenant.slug} ({tenant.tasks:,} tasks) "
                        f"first {size:>3}: p50 {run['p50']:.2f} p95 {run['p95']:.2f} ms, "
                        f"statement {run.get('statement_ms') or 0:.2f} ms",
                        flush=True,
                    )
    finally:
        server.terminate()
        server.wait(10)
    rows = []
    for tenant, size in cells:
        cell = runs[tenant.slug, size]
        rows.append(
            {
                "tenant": tenant.slug,
                "percentile": tenant.percentile,
                "tenant_tasks": tenant.tasks,
                "project_tasks": tenant.project_tasks,
                "page_size": size,
                "response_bytes": sizes[tenant.slug, size],
                **{
                    key: median_or_none([run.get(key) for run in cell])
                    for key in (
                        "p50",
                        "p95",
                        "p99",
                        "rps",
                        "statement_ms",
                        "pg_ms_per_request",
                        "statement_calls_per_request",
                    )
                },
                "errors": sum(run["errors"] + run["non2xx"] for run in cell),
                "runs": cell,
            }
        )
    result = {
        "label": label,
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit_stamp(),
        "database": database,
        "note": note,
        "totals": totals,
        "duration_s": duration,
        "repeat": repeat,
        "warmup_s": warmup,
        "workers": workers,
        "pool_size": pool_size,
        "statement_query_ids": sorted(query_ids),
        "postgres_time_from": cluster.counting,
        "run_seconds": round(time.monotonic() - started),
        # The machine's 1-minute load average before and after the run (others share it).
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"scaling-{label}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"scaling-{label}.md").write_text(markdown(result))
    chart([result], RESULTS / f"scaling-{label}.png")
    print(f"wrote bench/results/scaling-{label}.* in {result['run_seconds']} s", flush=True)


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def markdown(result: dict[str, Any]) -> str:
    totals = result["totals"]
    lines = [
        f"# Main query latency against tenant size and page size: {result['label']}",
        "",
        f"Dataset **{result['label']}**: database `{result['database']}`, "
        f"{totals['tasks']:,} tasks, {totals['task_comments']:,} comments, "
        f"{totals['projects']:,} projects, {totals['organizations']:,} tenants, "
        f"{totals['users']:,} users." + (f" {result['note']}" if result.get("note") else ""),
        "",
        f"Measured {result['generated']} at commit {result['commit']} by `bench/scaling.py` "
        f"in {result['run_seconds']} s. The main query of `bench/load.py` (`first: N` tasks of "
        "the tenant's largest project, each with its assignee and 3 comments with their "
        "authors) through uvicorn "
        f"({result['workers']} workers, {result['pool_size']} pooled connections each), wrk at "
        f"concurrency 1 for {result['duration_s']} s per run after a {result['warmup_s']} s "
        f"warm-up per cell; {result['repeat']} round{'s' if result['repeat'] != 1 else ''}, "
        "the cells in a rotated order each round; each figure is the median over the rounds. Latencies in ms (the whole request). "
        "Statement: the compiled statement's mean execution time; PostgreSQL per request: the "
        "execution time of all the server role's statements per request (both from "
        f"{result['postgres_time_from']}, deltas over each run; planning not included)."
        + (
            f" The machine's 1-minute load average was {result['load_average'][0]:.1f} before "
            f"the run and {result['load_average'][1]:.1f} after it ({result['workers']} cores)."
            if result.get("load_average")
            else ""
        ),
        "",
        "| tenant (percentile by tasks) | tenant tasks | project tasks | page size | p50 | p95 | p99 | statement ms | PostgreSQL ms/request | req/s | response bytes | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['tenant']} (p{r['percentile']}) | {r['tenant_tasks']:,} | "
            f"{r['project_tasks']:,} | {r['page_size']} | {ms(r['p50'])} | {ms(r['p95'])} | "
            f"{ms(r['p99'])} | {ms(r['statement_ms'])} | {ms(r['pg_ms_per_request'])} | "
            f"{r['rps']:.0f} | {r['response_bytes']:,} | {r['errors']} |"
        )
    lines += ["", f"Chart: `scaling-{result['label']}.png`."]
    return "\n".join(lines) + "\n"


def chart(results: list[dict[str, Any]], path: Path) -> None:
    """One panel per dataset: p50 (solid), p95 (dashed) and the compiled statement's time
    (dotted) against the tenant's task count (log x), one colour per page size."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no chart (pip install -e '.[bench]')")
        return
    figure, axes = plt.subplots(
        1, len(results), figsize=(max(8.0, 6.5 * len(results)), 5.6), sharey=True, squeeze=False
    )
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for axis, result in zip(axes[0], results, strict=True):
        sizes = sorted({r["page_size"] for r in result["rows"]})
        for colour, size in zip(colours, sizes, strict=False):
            points = sorted(
                (r for r in result["rows"] if r["page_size"] == size),
                key=lambda r: r["tenant_tasks"],
            )
            x = [r["tenant_tasks"] for r in points]
            axis.plot(x, [r["p50"] for r in points], "o-", color=colour, label=f"first {size}: p50")
            axis.plot(
                x, [r["p95"] for r in points], "^--", color=colour, label=f"first {size}: p95"
            )
            statement = [(a, r["statement_ms"]) for a, r in zip(x, points, strict=True)]
            statement = [(a, s) for a, s in statement if s is not None]
            if statement:
                axis.plot(
                    [a for a, _ in statement],
                    [s for _, s in statement],
                    "s:",
                    color=colour,
                    label=f"first {size}: statement in PostgreSQL",
                )
        axis.set_xscale("log")
        # Ticks at the tenants measured: their task counts and percentiles.
        tenants = sorted({(r["tenant_tasks"], r["percentile"]) for r in result["rows"]})
        axis.set_xticks([n for n, _ in tenants], [f"{n:,}\n(p{p})" for n, p in tenants])
        axis.minorticks_off()
        axis.set_xlabel("tenant size, tasks (log)")
        axis.set_title(f"{result['label']}: {result['totals']['tasks']:,} tasks", fontsize=10)
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("main query latency, ms (concurrency 1)")
    # Below the panels, one column per page size: the lines stay uncovered.
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0.13, 1, 1))
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", help="the dataset's name in the results: 1M, 10M, small")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; figures are medians")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per cell")
    parser.add_argument("--percentiles", type=int, nargs="+", default=list(PERCENTILES))
    parser.add_argument("--page-sizes", type=int, nargs="+", default=list(PAGE_SIZES))
    parser.add_argument("--note", help="what the dataset is (printed in the .md)")
    parser.add_argument(
        "--chart",
        nargs="+",
        metavar="LABEL",
        help="no run: draw the chart from scaling-LABEL.json; with two or more labels, one "
        "chart of them side by side (scaling-A-vs-B.png)",
    )
    arguments = parser.parse_args()
    if arguments.chart:
        loaded = [
            json.loads((RESULTS / f"scaling-{label}.json").read_text()) for label in arguments.chart
        ]
        target = RESULTS / f"scaling-{'-vs-'.join(arguments.chart)}.png"
        chart(loaded, target)
        print(f"wrote {target.relative_to(RESULTS.parent.parent)}")
    elif not arguments.label:
        parser.error("--label is required (or --chart LABEL ...)")
    else:
        main(
            arguments.label,
            arguments.duration,
            arguments.repeat,
            arguments.warmup,
            arguments.percentiles,
            arguments.page_sizes,
            arguments.note,
        )
