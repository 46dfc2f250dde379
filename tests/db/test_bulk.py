"""The bulk loader (COPY as the maintenance role) and the query-plan report, on a small
dataset: the same seed gives the same data, and every hot statement is planned."""

from __future__ import annotations

import asyncpg

from db.bulk import REBUILT, SeedSpec, secondary_indexes, seed
from db.explain import markdown, report
from tests.conftest import ScratchDatabase

SMALL = SeedSpec(
    orgs=3, users=30, projects_per_org=2, tasks_per_project=150, comments_per_task=2, seed=7
)


async def fingerprint(owner_dsn: str) -> tuple[int, int, str]:
    connection = await asyncpg.connect(owner_dsn)
    try:
        async with connection.transaction():
            await connection.execute("SET LOCAL ROLE taskql_maintenance")
            row = await connection.fetchrow(
                "SELECT (SELECT count(*) FROM tasks t JOIN organizations o ON o.id = t.organization_id "
                "        WHERE o.slug LIKE 'seed-%') AS tasks, "
                "       (SELECT count(*) FROM task_comments c JOIN organizations o ON o.id = c.organization_id "
                "        WHERE o.slug LIKE 'seed-%') AS comments, "
                "       (SELECT md5(string_agg(t.title || t.status, ',' ORDER BY t.id)) FROM tasks t "
                "        JOIN organizations o ON o.id = t.organization_id WHERE o.slug LIKE 'seed-%') AS digest"
            )
            await connection.execute(
                "DELETE FROM organizations WHERE slug LIKE 'seed-%'; DELETE FROM users WHERE email LIKE '%@seed.test'"
            )
    finally:
        await connection.close()
    assert row is not None
    return row["tasks"], row["comments"], row["digest"]


async def index_definitions(owner_dsn: str) -> list[tuple[str, str]]:
    connection = await asyncpg.connect(owner_dsn)
    try:
        return await secondary_indexes(connection, REBUILT)
    finally:
        await connection.close()


async def test_the_same_seed_loads_the_same_data(
    test_database: ScratchDatabase, pool: asyncpg.Pool
) -> None:
    indexes = await index_definitions(test_database.owner_dsn)
    assert "tasks_tenant_lexemes_idx" in dict(indexes)
    first = await seed(test_database.owner_dsn, SMALL, show_progress=False)
    # The load drops the secondary indexes and builds them again, exactly as they were.
    assert await index_definitions(test_database.owner_dsn) == indexes
    assert first.counts["tasks"] > 0
    assert first.counts["task_comments"] > 0
    assert first.counts["audit_logs"] == first.counts["tasks"]
    once = await fingerprint(test_database.owner_dsn)
    await seed(test_database.owner_dsn, SMALL, show_progress=False)
    again = await fingerprint(test_database.owner_dsn)
    assert once == again
    assert once[0] == first.counts["tasks"]


async def test_every_hot_statement_is_planned_for_two_tenants(
    test_database: ScratchDatabase, pool: asyncpg.Pool
) -> None:
    await seed(test_database.owner_dsn, SMALL, show_progress=False)
    try:
        plans, unused = await report(test_database.owner_dsn, test_database.server_dsn)
    finally:
        await fingerprint(test_database.owner_dsn)  # removes the seeded tenants
    tenants = {p.tenant for p in plans}
    assert len(tenants) == 2
    names = {p.statement for p in plans}
    for expected in (
        "project tasks, first 50, DUE_DATE DESC",
        "loader: comments of 50 tasks, first 3 each",
        "search (full text + trigram), first 20",
        "log-in: user by e-mail",
        "task counts by status",
    ):
        assert expected in names
    # On a dataset this small the planner may prefer scans; budgets must still hold.
    assert [p.statement for p in plans if p.milliseconds > p.budget_ms] == []
    text = markdown(plans, unused, "today")
    assert "## Indexes no hot read path used" in text
    assert text.count("| project tasks, first 50, CREATED_AT ASC |") == 2
