"""The bulk loader (COPY as the maintenance role) and the query-plan report, on a small
dataset: the same seed gives the same data, and every hot statement is planned."""

from __future__ import annotations

import dataclasses
import hashlib

import asyncpg
import pytest

from db.bulk import REBUILT, SeedSpec, secondary_indexes, seed, session_token, share_of_largest
from db.executor import Executor
from db.explain import markdown, report
from db.queries import users
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


DIGEST = {
    table: f"SELECT count(*) AS n, md5(coalesce(string_agg(x.id::text, ',' ORDER BY x.id), '')) AS d "
    f"FROM {table} AS x WHERE {where}"
    for table, where in {
        "users": "x.email LIKE '%@seed.test'",
        "sessions": "x.user_id IN (SELECT id FROM users WHERE email LIKE '%@seed.test')",
        "organizations": "x.slug LIKE 'seed-%'",
        "organization_members": "x.organization_id IN (SELECT id FROM organizations WHERE slug LIKE 'seed-%')",
        "projects": "x.organization_id IN (SELECT id FROM organizations WHERE slug LIKE 'seed-%')",
        "tasks": "x.organization_id IN (SELECT id FROM organizations WHERE slug LIKE 'seed-%')",
        "task_comments": "x.organization_id IN (SELECT id FROM organizations WHERE slug LIKE 'seed-%')",
    }.items()
}
#: Every column of the rows, not only their ids (a worker drawing from another's stream
#: would keep the ids of its own and change the rest).
CONTENT = (
    "SELECT md5(string_agg(concat_ws('|', t.id, t.parent_task_id, t.title, t.status, t.priority, "
    "t.assignee_id, t.created_by, t.due_date, t.completed_at, t.created_at), ',' ORDER BY t.id)) "
    "FROM tasks t JOIN organizations o ON o.id = t.organization_id WHERE o.slug LIKE 'seed-%'"
)


async def digests(owner_dsn: str) -> dict[str, tuple[int, str]]:
    connection = await asyncpg.connect(owner_dsn)
    try:
        async with connection.transaction():
            await connection.execute("SET LOCAL ROLE taskql_maintenance")
            found = {}
            for table, sql in DIGEST.items():
                row = await connection.fetchrow(sql)
                assert row is not None
                found[table] = (row["n"], row["d"])
            found["task content"] = (0, await connection.fetchval(CONTENT))
    finally:
        await connection.close()
    return found


async def foreign_keys(owner_dsn: str) -> list[tuple[str, str, str, bool]]:
    connection = await asyncpg.connect(owner_dsn)
    try:
        rows = await connection.fetch(
            "SELECT conrelid::regclass::text AS t, conname, pg_get_constraintdef(oid) AS d, convalidated "
            "FROM pg_constraint WHERE contype = 'f' AND connamespace = 'public'::regnamespace "
            "AND conparentid = 0 ORDER BY 1, 2"
        )
    finally:
        await connection.close()
    return [(r["t"], r["conname"], r["d"], r["convalidated"]) for r in rows]


async def trigger_state(owner_dsn: str) -> list[tuple[str, str, str]]:
    """The user triggers (the foreign keys' internal ones are renamed when a key is added
    again: ``foreign_keys`` compares the keys themselves)."""
    connection = await asyncpg.connect(owner_dsn)
    try:
        rows = await connection.fetch(
            "SELECT c.relname, t.tgname, t.tgenabled::text AS tgenabled FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "WHERE c.relnamespace = 'public'::regnamespace AND NOT c.relispartition "
            "AND NOT t.tgisinternal "
            "ORDER BY 1, 2"
        )
    finally:
        await connection.close()
    return [(r["relname"], r["tgname"], r["tgenabled"]) for r in rows]


async def test_two_jobs_load_exactly_the_rows_of_one(
    test_database: ScratchDatabase, pool: asyncpg.Pool
) -> None:
    """Workers draw from per-project and per-user streams: the rows do not depend on --jobs.
    Users and their sessions are loaded; afterwards every trigger is as it was, and the
    dropped indexes (tasks, comments, sessions, users) and foreign keys are back, identical."""
    spec = dataclasses.replace(SMALL, sessions_per_user=2, largest_share=0.6)
    indexes = await index_definitions(test_database.owner_dsn)
    assert {"sessions_token_hash_key", "users_email_lower_key"} <= set(dict(indexes))
    triggers = await trigger_state(test_database.owner_dsn)
    keys = await foreign_keys(test_database.owner_dsn)
    assert any(t == "tasks" for t, *_ in keys)
    assert [t for t in triggers if t[2] != "O"] == []
    one = await seed(test_database.owner_dsn, spec, show_progress=False)
    by_one = await digests(test_database.owner_dsn)
    await fingerprint(test_database.owner_dsn)  # removes the seeded rows
    two = await seed(
        test_database.owner_dsn, dataclasses.replace(spec, jobs=2), show_progress=False
    )
    by_two = await digests(test_database.owner_dsn)
    await fingerprint(test_database.owner_dsn)
    assert by_one == by_two
    assert one.counts == two.counts
    assert (one.largest, one.smallest) == (two.largest, two.smallest)
    assert by_one["users"][0] == spec.users
    assert by_one["sessions"][0] == spec.users * 2
    assert by_one["tasks"][0] == one.counts["tasks"]
    assert await index_definitions(test_database.owner_dsn) == indexes
    assert await trigger_state(test_database.owner_dsn) == triggers
    # The foreign keys dropped for the load are back, the same and validated.
    assert await foreign_keys(test_database.owner_dsn) == keys
    assert all(validated for *_, validated in keys)


async def test_a_seeded_session_authenticates_and_a_seeded_user_logs_in(
    test_database: ScratchDatabase, pool: asyncpg.Pool
) -> None:
    spec = dataclasses.replace(SMALL, sessions_per_user=1)
    await seed(test_database.owner_dsn, spec, show_progress=False)
    try:
        server = await asyncpg.connect(test_database.server_dsn)
        try:
            token = hashlib.sha256(session_token(spec.seed, 3, 0).encode()).digest()
            row = await server.fetchrow("SELECT email FROM app_authenticate($1, NULL, NULL)", token)
            assert row is not None
            assert row["email"] == "user3@seed.test"
            async with server.transaction():
                found = await users.login_candidate(Executor(server), "USER3@seed.test")
            assert found is not None
        finally:
            await server.close()
    finally:
        await fingerprint(test_database.owner_dsn)


def test_the_largest_share_sets_the_skew() -> None:
    spec = SeedSpec(orgs=100, largest_share=0.25)
    assert share_of_largest(100, spec.exponent) == pytest.approx(0.25)
    assert SeedSpec().exponent == 0.9  # the default dataset is unchanged
