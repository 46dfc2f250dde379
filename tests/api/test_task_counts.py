"""``totalCount`` of a project's tasks and ``taskCountsByStatus`` come from the maintained
counts (migration 27) on both read paths, answer what ``count(*)`` answers for every role
of both tenants after the API's own writes, and read no row of tasks to count them."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

import asyncpg

from tests.api.conftest import Api
from tests.api.test_tenant_scoped_statements import logged as logged
from tests.api.world import ROLES, Org, add_tasks
from tests.conftest import ScratchDatabase, admin_url

COUNTS = """query($p: ID!) { project(id: $p) {
  all: tasks(first: 1) { totalCount }
  open: tasks(first: 1, filter: {status: [TODO, IN_PROGRESS]}) { totalCount }
  none: tasks(first: 1, filter: {status: []}) { totalCount }
  roots: tasks(first: 1, filter: {rootOnly: true}) { totalCount }
  found: tasks(first: 1, filter: {search: "task"}) { totalCount }
  taskCountsByStatus { status count }
} }"""

STATUS = {
    "TODO": "todo",
    "IN_PROGRESS": "in_progress",
    "BLOCKED": "blocked",
    "DONE": "done",
    "CANCELLED": "cancelled",
}


async def expected(maintenance: asyncpg.Connection, project: UUID) -> dict[str, Any]:
    """The same answer, by count(*)."""

    async def count(where: str = "") -> int:
        n: int = await maintenance.fetchval(
            f"SELECT count(*) FROM tasks t WHERE t.project_id = $1 {where}", project
        )
        return n

    by_status = dict(
        await maintenance.fetch(
            "SELECT status, count(*) FROM tasks WHERE project_id = $1 GROUP BY status", project
        )
    )
    return {
        "all": {"totalCount": await count()},
        "open": {"totalCount": await count("AND t.status IN ('todo', 'in_progress')")},
        "none": {"totalCount": 0},
        "roots": {"totalCount": await count("AND t.parent_task_id IS NULL")},
        "found": {
            "totalCount": await count(
                "AND t.search_vector @@ websearch_to_tsquery('english', 'task')"
            )
        },
        "taskCountsByStatus": [
            {"status": name, "count": by_status.get(value, 0)} for name, value in STATUS.items()
        ],
    }


async def write_through_the_api(api: Api, org: Org) -> None:
    """createTask, createTasks (with a subtask), updateTask (status), deleteTask (a subtree)."""
    as_ = (org, "member")
    created = await api(
        'mutation($p: ID!) { createTask(input: {projectId: $p, title: "one", status: BLOCKED}) '
        "{ task { id } errors { message } } }",
        {"p": org.project},
        as_=as_,
    )
    task = created["data"]["createTask"]["task"]["id"]
    bulk = await api(
        "mutation($p: ID!) { createTasks(input: {projectId: $p, tasks: ["
        '{title: "a", status: DONE}, {title: "b", parentIndex: 0, status: CANCELLED}, '
        '{title: "c"}]}) { tasks { id } errors { message } } }',
        {"p": org.project},
        as_=as_,
    )
    assert not bulk["data"]["createTasks"]["errors"], bulk
    parent = bulk["data"]["createTasks"]["tasks"][0]["id"]
    updated = await api(
        "mutation($t: ID!) { updateTask(input: {id: $t, status: IN_PROGRESS}) "
        "{ errors { message } } }",
        {"t": task},
        as_=as_,
    )
    assert not updated["data"]["updateTask"]["errors"], updated
    deleted = await api(
        "mutation($t: ID!) { deleteTask(input: {id: $t}) { errors { message } } }",
        {"t": parent},
        as_=(org, "admin"),
    )
    assert not deleted["data"]["deleteTask"]["errors"], deleted


async def test_counts_equal_count_star_for_every_role_of_both_tenants_on_both_paths(
    read_api: Api, org_a: Org, org_b: Org, maintenance: asyncpg.Connection
) -> None:
    for org in (org_a, org_b):
        await add_tasks(org, 12, 0)
        await write_through_the_api(read_api, org)
    for org, other in ((org_a, org_b), (org_b, org_a)):
        want = await expected(maintenance, org.project_id)
        assert want["all"]["totalCount"] > 10
        for role in ROLES:
            body = await read_api(COUNTS, {"p": org.project}, as_=(org, role))
            assert "errors" not in body, body
            assert body["data"]["project"] == want, (role, read_api.compiled)
            # The other tenant's project is not there, nor its counts.
            body = await read_api(COUNTS, {"p": other.project}, as_=(org, role))
            assert body["data"]["project"] is None, body


def _rows_read(plan: Any, table: str) -> int:
    """Rows the plan's scans of ``table`` returned (EXPLAIN ANALYZE)."""
    if isinstance(plan, list):
        return sum(_rows_read(p, table) for p in plan)
    if not isinstance(plan, dict):
        return 0
    own = 0
    if plan.get("Relation Name") == table:
        own = int(plan.get("Actual Rows", 0)) * int(plan.get("Actual Loops", 1))
    return own + sum(_rows_read(v, table) for k, v in plan.items() if k in ("Plan", "Plans"))


async def test_counting_a_large_project_reads_no_row_of_tasks_on_either_path(
    read_api: Api,
    org_a: Org,
    org_b: Org,
    test_database: ScratchDatabase,
    logged: list[tuple[str, tuple[Any, ...]]],
) -> None:
    await add_tasks(org_a, 400, 0)
    logged.clear()
    body = await read_api(
        "query($p: ID!) { project(id: $p) { tasks(first: 1) { totalCount } "
        "done: tasks(first: 1, filter: {status: [DONE]}) { totalCount } "
        "taskCountsByStatus { status count } } }",
        {"p": org_a.project},
        as_=(org_a, "viewer"),
    )
    assert body["data"]["project"]["tasks"]["totalCount"] >= 400, body
    database = urlsplit(test_database.owner_dsn).path.lstrip("/")
    superuser = await asyncpg.connect(admin_url(test_database), database=database)
    try:
        # Statistics, so the pages are planned as in production (an index range, LIMIT).
        await superuser.execute("ANALYZE tasks")
        planned = 0
        for sql, args in logged:
            if "tasks" not in sql or not sql.lstrip().upper().startswith(("SELECT", "WITH")):
                continue
            plan = json.loads(
                await superuser.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", *args)
            )
            planned += 1
            # At most the pages' rows (first: 1, plus the one that says whether there is more).
            assert _rows_read(plan, "tasks") <= 4, sql
        assert planned >= 1
    finally:
        await superuser.close()
