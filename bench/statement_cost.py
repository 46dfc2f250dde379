"""What the main query's statement costs PostgreSQL: taskql's compiled statement against the
two references of ``bench/load.py`` (``bench/main_query.sql``, the cheapest hand-written SQL
for the data; ``bench/postgraphile_query.sql``, the same response in PostGraphile 5's
shape), at page sizes 10, 50 and 100.

In-process, with no HTTP and no Python rendering in the measurement: each statement runs as
the server role inside a tenant transaction (row-level security on, as in production), the
three interleaved, ``--rounds`` rounds of ``--runs`` executions after a warm-up; printed:
the median over rounds of the mean execution time (wall clock of ``fetchval``, round trip on
the local socket included, the same for all three), the response size, and each statement's
ratio to PostGraphile's shape (the issue's target: taskql <= 1.0).

Prerequisite: a seeded database (``TASKQL_DATABASE=taskql_bench taskql seed --orgs 4
--users 200 --tasks-per-project 500``). The largest project of the largest tenant is used.

    TASKQL_DATABASE=taskql_bench .venv/bin/python bench/statement_cost.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from api.compiler import Compiler  # noqa: E402
from api.ids import to_global_id  # noqa: E402
from api.schema import build_schema  # noqa: E402
from api.settings import Settings  # noqa: E402
from db.engine import DB  # noqa: E402
from db.settings import get_database_settings  # noqa: E402
from db.targets import resolve  # noqa: E402
from db.tenancy import TenantContext, request_transaction  # noqa: E402

HERE = Path(__file__).resolve().parent
MAIN_QUERY = """query($id: ID!, $n: Int!) { project(id: $id) { name tasks(first: $n) { edges { node {
  id title status priority assignee { id displayName }
  comments(first: 3) { nodes { id content author { id displayName } } } } } } } }"""


def with_page(sql: str, size: int) -> str:
    """A reference statement with its task page size changed (its comment page stays 3)."""
    return re.sub(
        r"ORDER BY t\.created_at, t\.id LIMIT 50", f"ORDER BY t.created_at, t.id LIMIT {size}", sql
    )


async def sample(admin_dsn: str) -> tuple[UUID, UUID, UUID]:
    admin = await asyncpg.connect(admin_dsn)
    try:
        row = await admin.fetchrow(
            "SELECT p.id, p.organization_id, (SELECT m.user_id FROM organization_members m "
            "WHERE m.organization_id = p.organization_id AND m.role = 'owner' LIMIT 1) AS owner "
            "FROM projects p ORDER BY (SELECT count(*) FROM tasks t WHERE t.project_id = p.id) "
            "DESC LIMIT 1"
        )
    finally:
        await admin.close()
    assert row is not None, "no project: seed the database first"
    return row["id"], row["organization_id"], row["owner"]


async def main(rounds: int, runs: int, plan_cache_mode: str | None) -> None:
    settings = get_database_settings()
    targets = await asyncio.to_thread(resolve, settings)
    DB.configure(targets.server_dsn, settings)
    admin = targets.admin_dsn or targets.owner_dsn
    if targets.admin_dsn is not None:
        admin = targets.admin_dsn.replace("/postgres?", f"/{settings.taskql_database}?")
    project, tenant, owner = await sample(admin)
    compiler = Compiler(build_schema(Settings())._schema, Settings())
    context = TenantContext(organization_id=tenant, user_id=owner, role="owner")
    mode = plan_cache_mode or "the server's plan_cache_mode"
    print(f"project {project} of tenant {tenant}; {rounds} rounds of {runs}, medians (ms), {mode}")
    print(
        f"{'page':>5} {'taskql':>9} {'hand-written':>13} {'PostGraphile':>13} "
        f"{'taskql/PG':>10} {'hand/PG':>8}  sizes (bytes)"
    )
    for size in (10, 50, 100):
        prepared = compiler.prepare(
            MAIN_QUERY,
            None,
            {"id": to_global_id("Project", project), "n": size},
            tenant,
            owner,
            "owner",
        )
        assert prepared is not None, "the main query did not compile"
        statements: dict[str, tuple[str, list[Any]]] = {
            "taskql": (prepared[0], prepared[1]),
            "hand": (with_page((HERE / "main_query.sql").read_text(), size), [tenant, project]),
            "pg": (
                with_page((HERE / "postgraphile_query.sql").read_text(), size),
                [tenant, project],
            ),
        }
        times: dict[str, list[float]] = {name: [] for name in statements}
        sizes: dict[str, int] = {}
        for index in range(rounds):
            order = list(statements) if index % 2 == 0 else list(reversed(statements))
            for name in order:
                sql, params = statements[name]
                async with request_transaction(context) as (_, executor):
                    if plan_cache_mode is not None:
                        await executor.execute(f"SET LOCAL plan_cache_mode = {plan_cache_mode}")
                    for _ in range(3):
                        await executor.fetchval(sql, *params)
                    started = time.perf_counter()
                    for _ in range(runs):
                        text = await executor.fetchval(sql, *params)
                    times[name].append((time.perf_counter() - started) / runs * 1000)
                sizes[name] = len(str(text))
        median = {name: statistics.median(values) for name, values in times.items()}
        print(
            f"{size:>5} {median['taskql']:>9.2f} {median['hand']:>13.2f} {median['pg']:>13.2f} "
            f"{median['taskql'] / median['pg']:>10.2f} {median['hand'] / median['pg']:>8.2f}  "
            f"{sizes['taskql']} / {sizes['hand']} / {sizes['pg']}"
        )
    await DB.close_connection_pool()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument(
        "--plan-cache-mode",
        choices=["auto", "force_custom_plan", "force_generic_plan"],
        help="SET LOCAL plan_cache_mode before the statements (default: the server's)",
    )
    arguments = parser.parse_args()
    asyncio.run(main(arguments.rounds, arguments.runs, arguments.plan_cache_mode))
