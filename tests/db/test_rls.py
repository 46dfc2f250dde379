"""Tenant isolation is enforced by PostgreSQL itself, as the server role."""

from __future__ import annotations

import asyncio
import dataclasses

import asyncpg
import pytest

from db import tables
from db.engine import DB, Engine
from db.settings import get_database_settings
from db.tenancy import TenantContext, allow_lookup, tenant_transaction
from db.uuid7 import uuid7
from tests.conftest import ScratchDatabase
from tests.seed import Tenant

TENANT_TABLES = ("organization_members", "projects", "tasks", "task_comments", "audit_logs")


async def _org_ids(table: str, context: TenantContext) -> set[object]:
    column = "id" if table == "organizations" else "organization_id"
    async with tenant_transaction(context) as tx:
        rows = await tx.connection.fetch(f"SELECT DISTINCT {column} AS org FROM {table}")
    return {r["org"] for r in rows}


@pytest.mark.parametrize("table", [*TENANT_TABLES, "organizations"])
async def test_each_tenant_table_shows_only_the_current_tenants_rows(
    table: str, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    assert await _org_ids(table, tenant_a.context()) == {tenant_a.organization_id}
    assert await _org_ids(table, tenant_b.context()) == {tenant_b.organization_id}


@pytest.mark.parametrize("table", [*TENANT_TABLES, "organizations", "users", "sessions"])
async def test_no_tenant_set_means_zero_rows_and_no_error(
    table: str, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    async with tenant_transaction(TenantContext()) as tx:
        assert await tx.connection.fetchval(f"SELECT count(*) FROM {table}") == 0


async def test_a_plain_pooled_query_outside_any_transaction_sees_nothing(
    tenant_a: Tenant, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as connection:
        assert await connection.fetchval("SELECT count(*) FROM tasks") == 0
        assert await connection.fetchval("SELECT current_setting('app.organization_id', true)") in (
            None,
            "",
        )


async def test_inserting_a_row_for_another_tenant_is_rejected(
    tenant_a: Tenant, tenant_b: Tenant
) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        async with tenant_transaction(tenant_a.context()):
            await tables.Project.insert(
                tables.Project(organization_id=tenant_b.organization_id, name="smuggled")
            )


async def test_a_task_under_another_tenants_project_is_rejected(
    tenant_a: Tenant, tenant_b: Tenant
) -> None:
    # Claiming tenant A while naming B's project: the composite key finds no (A, project).
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        async with tenant_transaction(tenant_a.context()):
            await tables.Task.insert(
                tables.Task(
                    organization_id=tenant_a.organization_id,
                    project_id=tenant_b.project_id,
                    title="cross-tenant",
                )
            )


async def test_a_comment_on_another_tenants_task_is_rejected(
    tenant_a: Tenant, tenant_b: Tenant
) -> None:
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        async with tenant_transaction(tenant_a.context()):
            await tables.TaskComment.insert(
                tables.TaskComment(
                    organization_id=tenant_a.organization_id,
                    task_id=tenant_b.root_task_id,
                    author_id=tenant_a.owner_id,
                    content="hello",
                )
            )


async def test_another_tenants_rows_cannot_be_updated_or_deleted(
    tenant_a: Tenant, tenant_b: Tenant
) -> None:
    async with tenant_transaction(tenant_a.context()) as tx:
        updated = await tx.connection.execute(
            "UPDATE tasks SET title = 'hijacked' WHERE id = $1", tenant_b.root_task_id
        )
        deleted = await tx.connection.execute(
            "DELETE FROM projects WHERE id = $1", tenant_b.project_id
        )
    assert (updated, deleted) == ("UPDATE 0", "DELETE 0")
    async with tenant_transaction(tenant_b.context()):
        task = (
            await tables.Task.select(tables.Task.title)
            .where(tables.Task.id == tenant_b.root_task_id)
            .first()
        )
    assert task == {"title": "Root b"}


async def test_users_see_themselves_and_members_of_the_current_tenant_only(
    tenant_a: Tenant, tenant_b: Tenant
) -> None:
    async with tenant_transaction(tenant_a.context()):
        visible = {r["id"] for r in await tables.User.select(tables.User.id)}
    assert visible == {tenant_a.owner_id, tenant_a.member_id}
    async with tenant_transaction(TenantContext(user_id=tenant_b.member_id)):
        alone = {r["id"] for r in await tables.User.select(tables.User.id)}
    assert alone == {tenant_b.member_id}


async def test_log_in_lookup_reveals_exactly_the_named_user(
    tenant_a: Tenant, tenant_b: Tenant
) -> None:
    async with tenant_transaction(TenantContext()) as tx:
        await allow_lookup(tx, login_email=tenant_a.owner_email.upper())
        found = await tables.User.select(tables.User.id)
    assert [r["id"] for r in found] == [tenant_a.owner_id]


async def test_members_see_their_own_memberships_before_a_tenant_is_chosen(
    tenant_a: Tenant, tenant_b: Tenant
) -> None:
    async with tenant_transaction(TenantContext(user_id=tenant_a.member_id)):
        memberships = await tables.OrganizationMember.select(
            tables.OrganizationMember.organization_id, tables.OrganizationMember.role
        )
        organizations = await tables.Organization.select(tables.Organization.id)
    assert memberships == [{"organization_id": tenant_a.organization_id, "role": "member"}]
    assert [o["id"] for o in organizations] == [tenant_a.organization_id]


async def test_no_setting_survives_its_transaction_on_a_pool_of_one(
    test_database: ScratchDatabase, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    engine = Engine()
    engine.configure(test_database.server_dsn, get_database_settings())
    await engine.start_connection_pool(min_size=1, max_size=1)
    try:
        async with tenant_transaction(tenant_a.context(), engine) as tx:
            a_pid = tx.connection.get_server_pid()
            a_rows = await tx.connection.fetchval("SELECT count(*) FROM tasks")
        async with tenant_transaction(tenant_b.context(), engine) as tx:
            b_pid = tx.connection.get_server_pid()
            b_orgs = await tx.connection.fetch("SELECT DISTINCT organization_id FROM tasks")
        async with tenant_transaction(TenantContext(), engine) as tx:
            none_pid = tx.connection.get_server_pid()
            none_rows = await tx.connection.fetchval("SELECT count(*) FROM tasks")
            leftovers = await tx.connection.fetch(
                "SELECT name, setting FROM pg_settings WHERE name LIKE 'app.%' AND setting <> ''"
            )
        assert a_pid == b_pid == none_pid  # really one connection
        assert a_rows == 2
        assert [r["organization_id"] for r in b_orgs] == [tenant_b.organization_id]
        assert none_rows == 0
        assert leftovers == []
    finally:
        await engine.close_connection_pool()


async def test_concurrent_tenant_transactions_never_see_each_other(
    tenant_a: Tenant, tenant_b: Tenant
) -> None:
    async def read(tenant: Tenant) -> set[object]:
        async with tenant_transaction(tenant.context()) as tx:
            await asyncio.sleep(0)
            rows = await tx.connection.fetch("SELECT organization_id FROM tasks")
        return {r["organization_id"] for r in rows}

    tenants = [tenant_a, tenant_b] * 20
    results = await asyncio.gather(*(read(t) for t in tenants))
    for tenant, seen in zip(tenants, results, strict=True):
        assert seen == {tenant.organization_id}


async def test_engine_refuses_a_nested_tenant_transaction(tenant_a: Tenant) -> None:
    from piccolo.engine.exceptions import TransactionError

    with pytest.raises(TransactionError):
        async with tenant_transaction(tenant_a.context()), tenant_transaction(tenant_a.context()):
            pass
    assert DB.current_transaction.get() is None


async def test_organization_insert_needs_its_own_id_as_tenant(tenant_a: Tenant) -> None:
    new_id = uuid7()
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with tenant_transaction(tenant_a.context()):
            await tables.Organization.insert(
                tables.Organization(id=new_id, name="x", slug=f"x-{new_id.hex[-8:]}")
            )


async def test_search_hits_answers_only_for_the_transactions_tenant(
    tenant_a: Tenant, tenant_b: Tenant
) -> None:
    """search_hits() bypasses RLS to use its indexes: it must take the tenant from the
    transaction's settings, and return nothing without one."""
    async with tenant_transaction(TenantContext()) as tx:
        assert await tx.connection.fetch("SELECT * FROM search_hits('root', 50, NULL, NULL)") == []
    for tenant, other in ((tenant_a, tenant_b), (tenant_b, tenant_a)):
        async with tenant_transaction(tenant.context()) as tx:
            hits = {
                r["id"]
                for r in await tx.connection.fetch(
                    "SELECT * FROM search_hits('root', 50, NULL, NULL)"
                )
            }
            total = await tx.connection.fetchval("SELECT search_count('root')")
        assert tenant.root_task_id in hits
        assert other.root_task_id not in hits
        assert total == len(hits)


async def test_search_keys_are_per_tenant_and_keep_the_query_language(
    server_connection: asyncpg.Connection, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    """search_hits() reads an index whose keys are "<tenant>/<bucket>/<lexeme>" (migration
    12): the same words in two tenants never meet, and phrases, negation, "or", prefixes and
    apostrophes mean what they mean on the task's own search vector, in the task's own
    bucket and over all buckets. The relaxed form given to the index (migration 14) matches
    at least what the query matches."""
    titles = [
        "Billing export fails at midnight",
        "Export the billing report",
        "O'Brien's billing dashboard",
        "Midnight deploy of back\\slash",
    ]
    queries = [
        "websearch_to_tsquery('english', 'billing export')",
        "websearch_to_tsquery('english', '\"billing export\"')",
        "websearch_to_tsquery('english', 'billing -export')",
        "websearch_to_tsquery('english', '-\"billing export\" billing')",
        "websearch_to_tsquery('english', 'deploy or dashboard')",
        "websearch_to_tsquery('english', 'o''brien''s')",
        "websearch_to_tsquery('english', 'back\\slash')",
        "to_tsquery('english', 'bill:* & !midnight')",
    ]
    a, b = tenant_a.organization_id, tenant_b.organization_id
    rows = await server_connection.fetch(
        f"""
        SELECT t.title, q.query, q.q @@ to_tsvector('english', t.title) AS plain,
               search_lexemes($1, t.id, to_tsvector('english', t.title))
                   @@ search_tsquery($1, right(t.id::text, 1), q.q) AS own_bucket,
               search_lexemes($1, t.id, to_tsvector('english', t.title))
                   @@ search_tsquery_all($1, q.q) AS all_buckets,
               search_lexemes($1, t.id, to_tsvector('english', t.title))
                   @@ search_tsquery_all($2, q.q) AS other_tenant,
               search_lexemes($1, t.id, to_tsvector('english', t.title))
                   @@ search_tsquery($1, right(t.id::text, 1), search_tsquery_relaxed(q.q))
                   AS relaxed,
               search_tsquery_relaxed(q.q) = q.q AS unchanged,
               q.q::text LIKE '%<->%' AS phrase
        FROM unnest($3::text[], $4::uuid[]) AS t(title, id),
             (VALUES {", ".join(f"({i}, {q})" for i, q in enumerate(queries))}) AS q(query, q)
        """,
        a,
        b,
        titles,
        [uuid7() for _ in titles],
    )
    assert len(rows) == len(titles) * len(queries)
    assert {r["query"] for r in rows if r["plain"]} == set(range(len(queries)))  # none vacuous
    for row in rows:
        where = (row["title"], queries[row["query"]])
        assert row["own_bucket"] == row["plain"], where
        assert row["all_buckets"] == row["plain"], where
        assert row["other_tenant"] is False, where
        # The index condition of migration 14: phrases relaxed to AND, never losing a match.
        assert row["relaxed"] or not row["plain"], where
        assert row["unchanged"] == (
            not row["phrase"] or "!" in queries[row["query"]] or "-" in queries[row["query"]]
        ), where
    phrase = {r["title"]: r for r in rows if r["query"] == 1}  # "billing export" as a phrase
    assert phrase["Export the billing report"]["relaxed"]  # both words, not as a phrase
    assert not phrase["Export the billing report"]["plain"]


async def test_common_words_rank_a_sample_and_rare_words_every_match(
    tenant_a: Tenant, tenant_b: Tenant
) -> None:
    """Words in many of a tenant's tasks: search_hits() ranks the tasks of sample bucket 0
    (the last hex digit of the id); words in few: every match. Never another tenant's."""
    async with tenant_transaction(tenant_a.context()) as tx:
        await tx.connection.execute(
            "INSERT INTO tasks (organization_id, project_id, title, created_by) "
            "SELECT $1, $2, 'Quarterly ledger ' || i || CASE WHEN i % 400 = 0 THEN ' audit' "
            "ELSE '' END || CASE WHEN i % 4 = 0 THEN ' closing entry' ELSE ' entry closing' END, "
            "$3 FROM generate_series(1, 3200) AS i",
            tenant_a.organization_id,
            tenant_a.project_id,
            tenant_a.owner_id,
        )
        common = await tx.connection.fetch(
            "SELECT id FROM search_hits('quarterly ledger', 1000, NULL, NULL) WHERE kind = 'task'"
        )
        rare = await tx.connection.fetch(
            "SELECT id FROM search_hits('ledger audit', 1000, NULL, NULL) WHERE kind = 'task'"
        )
        phrases = {
            words: await tx.connection.fetch(
                "SELECT t.title FROM search_hits($1, 1000, NULL, NULL) AS h "
                "JOIN tasks AS t ON t.id = h.id WHERE h.kind = 'task'",
                words,
            )
            for words in ('"closing entry"', '"quarterly ledger" -audit')
        }
    assert 100 <= len(common) <= 500  # about 3200 / 16
    assert {str(r["id"])[-1] for r in common} == {"0"}
    assert len(rare) == 8
    assert len({str(r["id"])[-1] for r in rare}) > 1
    # A phrase in 800 tasks: every task holds both words, so the sample bucket's 50 or so
    # exact matches are too few: every bucket is read (the index given the words without
    # their order), and each candidate checked for the phrase.
    closing = [r["title"] for r in phrases['"closing entry"']]
    assert len(closing) == 500
    assert all(title.endswith(" closing entry") for title in closing)
    # A common phrase with a negation: the sample, without the tasks the negation excludes.
    negated = [r["title"] for r in phrases['"quarterly ledger" -audit']]
    assert 100 <= len(negated) <= 500
    assert not any("audit" in title for title in negated)
    async with tenant_transaction(tenant_b.context()) as tx:
        assert (
            await tx.connection.fetch(
                "SELECT id FROM search_hits('quarterly ledger', 1000, NULL, NULL)"
            )
            == []
        )


async def test_words_in_very_many_tasks_rank_the_finer_sample(
    tenant_a: Tenant, tenant_b: Tenant, maintenance: asyncpg.Connection
) -> None:
    """Words matching 100 or more of the tasks whose id ends in "00" (1/256 of a tenant, the
    partial index of migration 29): only those are ranked, though better-ranked matches sit
    in bucket 0 outside them. The other tenant's equally many matches are never among them,
    and in its own transaction it finds only its own."""

    async def load(tenant: Tenant, label: str) -> None:
        async with tenant_transaction(tenant.context()) as tx:
            # 150 tasks in the finer sample (ids made to end in 00), each with the words once;
            # 300 of bucket 0 outside it (ids ending in 10) with the words three times.
            await tx.connection.execute(
                "INSERT INTO tasks (id, organization_id, project_id, title, created_by) "
                "SELECT (left(gen_random_uuid()::text, 34) || CASE WHEN i <= 150 THEN '00' "
                "ELSE '10' END)::uuid, $1, $2, CASE WHEN i <= 150 THEN $4 || ' ledger ' || i "
                "ELSE repeat($4 || ' ledger ', 3) || i END, $3 FROM generate_series(1, 450) AS i",
                tenant.organization_id,
                tenant.project_id,
                tenant.owner_id,
                label,
            )

    await load(tenant_a, "Zebra")
    await load(tenant_b, "Zebra")
    async with tenant_transaction(tenant_a.context()) as tx:
        mine = {
            r["id"]
            for r in await tx.connection.fetch(
                "SELECT id FROM tasks WHERE organization_id = $1", tenant_a.organization_id
            )
        }
        hits = await tx.connection.fetch(
            "SELECT id, rank FROM search_hits('zebra ledger', 1000, NULL, NULL) WHERE kind = 'task'"
        )
    assert {str(r["id"])[-2:] for r in hits} == {"00"}
    assert len(hits) >= 150
    assert {r["id"] for r in hits} <= mine
    # The finer sample's condition is the partial index's predicate (no other index of tasks
    # can serve it once sequential scans are ruled out).
    async with maintenance.transaction():
        await maintenance.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(
            r[0]
            for r in await maintenance.fetch(
                "EXPLAIN SELECT id FROM tasks AS t WHERE "
                "search_lexemes(t.organization_id, t.id, t.search_vector) @@ "
                "search_tsquery($1, '0', to_tsquery('english', 'zebra')) "
                "AND pg_catalog.right(t.id::text, 2) = '00'",
                tenant_a.organization_id,
            )
        )
    assert "tasks_tenant_lexemes_sample_idx" in plan, plan
    async with tenant_transaction(tenant_b.context()) as tx:
        theirs = await tx.connection.fetch(
            "SELECT h.id, t.organization_id FROM search_hits('zebra ledger', 1000, NULL, NULL) "
            "AS h JOIN tasks AS t ON t.id = h.id WHERE h.kind = 'task'"
        )
    assert len(theirs) >= 150
    assert {r["organization_id"] for r in theirs} == {tenant_b.organization_id}
    assert not {r["id"] for r in theirs} & mine


# --- the last owner (issue 11, finding 8) -------------------------------------------------


async def _two_owners(tenant: Tenant) -> None:
    async with tenant_transaction(tenant.context()) as tx:
        await tx.connection.execute(
            "UPDATE organization_members SET role = 'owner' WHERE user_id = $1", tenant.member_id
        )


async def _owners(tenant: Tenant) -> set[object]:
    async with tenant_transaction(tenant.context()) as tx:
        rows = await tx.connection.fetch(
            "SELECT user_id FROM organization_members WHERE role = 'owner'"
        )
    return {r["user_id"] for r in rows}


async def _server_in_tenant(database: ScratchDatabase, tenant: Tenant) -> asyncpg.Connection:
    """A server-role connection in an open transaction as an owner of ``tenant``."""
    connection = await asyncpg.connect(database.server_dsn)
    await connection.execute("BEGIN")
    await connection.execute(
        "SELECT set_config('app.organization_id', $1, true), "
        "set_config('app.user_id', $2, true), set_config('app.role', 'owner', true)",
        str(tenant.organization_id),
        str(tenant.owner_id),
    )
    return connection


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE organization_members SET role = 'admin' WHERE role = 'owner'",
        "DELETE FROM organization_members WHERE role = 'owner'",
    ],
)
async def test_one_statement_cannot_leave_an_organization_without_an_owner(
    tenant_a: Tenant, tenant_b: Tenant, test_database: ScratchDatabase, statement: str
) -> None:
    await _two_owners(tenant_a)
    # A direct connection: the violation is reported by COMMIT (the check is deferred).
    connection = await _server_in_tenant(test_database, tenant_a)
    try:
        await connection.execute(statement)
        with pytest.raises(asyncpg.IntegrityConstraintViolationError) as raised:
            await connection.execute("COMMIT")
    finally:
        await connection.close()
    assert raised.value.constraint_name == "organization_members_keep_an_owner"
    assert await _owners(tenant_a) == {tenant_a.owner_id, tenant_a.member_id}
    assert await _owners(tenant_b) == {tenant_b.owner_id}


async def test_ownership_can_be_handed_over_in_either_order_in_one_transaction(
    tenant_a: Tenant,
) -> None:
    async with tenant_transaction(tenant_a.context()) as tx:
        # Demote the only owner first: checked at commit, not after the statement.
        await tx.connection.execute(
            "UPDATE organization_members SET role = 'admin' WHERE user_id = $1", tenant_a.owner_id
        )
        await tx.connection.execute(
            "UPDATE organization_members SET role = 'owner' WHERE user_id = $1", tenant_a.member_id
        )
    assert await _owners(tenant_a) == {tenant_a.member_id}


async def test_deleting_an_organization_still_cascades_to_its_owners(
    tenant_a: Tenant, tenant_b: Tenant
) -> None:
    async with tenant_transaction(tenant_a.context()) as tx:
        await tx.connection.execute(
            "DELETE FROM organizations WHERE id = $1", tenant_a.organization_id
        )
    async with tenant_transaction(tenant_a.context()) as tx:
        assert await tx.connection.fetchval("SELECT count(*) FROM organization_members") == 0
    assert await _owners(tenant_b) == {tenant_b.owner_id}


async def test_two_concurrent_demotions_cannot_both_commit(
    tenant_a: Tenant, test_database: ScratchDatabase
) -> None:
    await _two_owners(tenant_a)
    first = await _server_in_tenant(test_database, tenant_a)
    second = await _server_in_tenant(test_database, tenant_a)
    try:
        for connection, user_id in ((first, tenant_a.owner_id), (second, tenant_a.member_id)):
            await connection.execute(
                "UPDATE organization_members SET role = 'admin' WHERE user_id = $1", user_id
            )
        await first.execute("COMMIT")
        with pytest.raises(asyncpg.IntegrityConstraintViolationError):
            await second.execute("COMMIT")
    finally:
        await first.close()
        await second.close()
    assert await _owners(tenant_a) == {tenant_a.member_id}


#: Every custom setting taskql's SQL reads or sets (placeholders are not in pg_settings).
CUSTOM_SETTINGS = (
    "app.client_ip",
    "app.login_email",
    "app.organization_id",
    "app.request_id",
    "app.role",
    "app.session_token_hash",
    "app.user_agent",
    "app.user_id",
    "taskql.max_task_depth",
)
#: A connection's session state as PostgreSQL reports it: settings made by SET or
#: set_config at session level, taskql's custom settings, the listened channels, advisory
#: locks, open cursors, prepared statements made by SQL (asyncpg's own are protocol-level),
#: temporary tables.
SESSION_STATE_SQL = """
SELECT (SELECT coalesce(array_agg(name || '=' || setting ORDER BY name), '{}')
          FROM pg_settings WHERE source IN ('session', 'override')) AS settings,
       (SELECT array_agg(coalesce(nullif(current_setting(n, true), ''), '<empty>'))
          FROM unnest($1::text[]) n)
           AS custom,
       (SELECT coalesce(array_agg(c ORDER BY c), '{}') FROM pg_listening_channels() c) AS listening,
       (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()) AS advisory,
       (SELECT count(*) FROM pg_cursors) AS cursors,
       (SELECT count(*) FROM pg_prepared_statements WHERE from_sql) AS prepared,
       (SELECT count(*) FROM pg_class WHERE relpersistence = 't') AS temporary
"""


async def test_a_pool_without_session_reset_keeps_nothing_taskql_sets(
    test_database: ScratchDatabase, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    """The API server's pool sends no reset query after a request's transaction ended
    cleanly (``session_reset=False``): the transactions taskql opens (tenant transactions,
    requests that commit, roll back, fail) on a pool of one leave the connection's session
    state as a fresh connection has it."""
    from db.tenancy import open_transaction

    engine = Engine()
    engine.configure(test_database.server_dsn, get_database_settings())
    await engine.start_connection_pool(min_size=1, max_size=1, session_reset=False)
    fresh = await asyncpg.connect(test_database.server_dsn, **_start_up(engine))
    try:
        expected = dict(await fresh.fetchrow(SESSION_STATE_SQL, CUSTOM_SETTINGS))
        sent: list[str] = []
        pids = set()
        for tenant in (tenant_a, tenant_b):
            context = dataclasses.replace(tenant.context(), statement_timeout_ms=1234)
            async with tenant_transaction(context, engine) as tx:
                pids.add(tx.connection.get_server_pid())
                assert await tx.connection.fetchval("SELECT count(*) FROM tasks") == 2
        for commit in (True, False):
            opened = await open_transaction(tenant_a.context(), engine)
            assert opened.connection is not None
            if not sent:
                opened.connection.add_query_logger(lambda q: sent.append(q.query))
            pids.add(opened.connection.get_server_pid())
            await opened.executor.fetchval("SELECT count(*) FROM tasks")
            await (opened.commit() if commit else opened.rollback())
        opened = await open_transaction(tenant_b.context(), engine)
        with pytest.raises(asyncpg.DivisionByZeroError):
            await opened.executor.fetchval("SELECT 1/0")
        await opened.close()
        # After the first clean end, nothing but bare ends (the requests' own statements).
        assert not any("RESET" in q or "UNLISTEN" in q for q in sent), sent
        assert engine.pool is not None
        async with engine.pool.acquire() as again:
            pids.add(again.get_server_pid())
            assert len(pids) == 1  # really one connection
            assert dict(await again.fetchrow(SESSION_STATE_SQL, CUSTOM_SETTINGS)) == expected
            assert await again.fetchval("SELECT count(*) FROM tasks") == 0  # no tenant
    finally:
        await fresh.close()
        await engine.close_connection_pool()


def _start_up(engine: Engine) -> dict[str, object]:
    """The start-up parameters of the engine's connections, for a fresh one to compare."""
    return {"server_settings": engine.config["server_settings"]}
