"""taskql behind a real PgBouncer in transaction pooling (``db.pgbouncer``, Debian's 1.18).

In transaction pooling a server connection goes from one client to the next at every COMMIT
or ROLLBACK, and PgBouncer resets nothing (it runs no ``server_reset_query`` in this mode):
whatever a transaction leaves in the session, the next client gets. These tests prove that
taskql leaves nothing there, with the pool reset of asyncpg out of the picture, and that the
API stays correct and isolated with many more clients than server connections.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import pytest

from api.app import create_app
from api.settings import Settings
from db import pgbouncer
from db.engine import DB
from db.settings import get_database_settings
from db.tenancy import SET_CONTEXT_SQL, TenantContext
from tests.api.conftest import Api
from tests.api.test_queries import create_task
from tests.api.world import Org
from tests.conftest import (
    PGBOUNCER_POOL_SIZE,
    THROUGH_PGBOUNCER,
    ScratchDatabase,
    pgbouncer_settings,
    server_user,
)

#: What a session carries that taskql sets (NULLIF: a placeholder set transaction-locally
#: once reads '' afterwards, never NULL again on that connection; both mean "unset").
SNAPSHOT_SQL = """
SELECT current_user AS current_user, session_user AS session_user,
       current_setting('statement_timeout') AS statement_timeout,
       current_setting('lock_timeout') AS lock_timeout,
       current_setting('idle_in_transaction_session_timeout') AS idle_timeout,
       current_setting('transaction_read_only') AS read_only,
       nullif(current_setting('taskql.max_task_depth', true), '') AS max_task_depth,
       nullif(current_setting('app.organization_id', true), '') AS organization_id,
       nullif(current_setting('app.user_id', true), '') AS user_id,
       nullif(current_setting('app.role', true), '') AS role,
       nullif(current_setting('app.request_id', true), '') AS request_id,
       nullif(current_setting('app.client_ip', true), '') AS client_ip,
       nullif(current_setting('app.user_agent', true), '') AS user_agent,
       nullif(current_setting('app.login_email', true), '') AS login_email,
       nullif(current_setting('app.session_token_hash', true), '') AS session_token_hash
"""


async def snapshot(connection: asyncpg.Connection) -> dict[str, Any]:
    row = await connection.fetchrow(SNAPSHOT_SQL)
    assert row is not None
    return dict(row)


async def baseline(test_database: ScratchDatabase) -> dict[str, Any]:
    """A fresh direct connection of the server role that sends no setting: the defaults."""
    connection = await asyncpg.connect(test_database.server_dsn)
    try:
        return await snapshot(connection)
    finally:
        await connection.close()


async def raw_client(
    bouncer: pgbouncer.PgBouncer, user: str, **server_settings: str
) -> asyncpg.Connection:
    """A client of PgBouncer with no pool around it: no reset query, ever."""
    return await asyncpg.connect(
        bouncer.dsn(user), statement_cache_size=0, server_settings=server_settings
    )


@pytest.fixture
async def single_server(test_database: ScratchDatabase) -> AsyncIterator[pgbouncer.PgBouncer]:
    """A PgBouncer of its own with ONE server connection: every client gets that one."""
    bouncer = pgbouncer.start([test_database.server_dsn], pool_size=1)
    yield bouncer
    bouncer.stop()


@asynccontextmanager
async def engine_through(bouncer: pgbouncer.PgBouncer, user: str, size: int) -> AsyncIterator[Any]:
    """The engine (and so the app) pointed at ``bouncer`` with ``size`` client connections,
    configured as for production behind PgBouncer 1.18; put back as it was afterwards."""
    saved, saved_pool, saved_config = dict(DB.__dict__), DB.pool, DB.config  # (slots too)
    settings = pgbouncer_settings().model_copy(
        update={"db_pool_min_size": size, "db_pool_max_size": size}
    )
    DB.configure(bouncer.dsn(user), settings)
    DB.pool = None
    await DB.start_connection_pool()
    try:
        yield DB.pool
    finally:
        await DB.close_connection_pool()
        DB.__dict__.update(saved)
        DB.pool, DB.config = saved_pool, saved_config


async def test_pgbouncer_refuses_the_direct_start_up_settings_so_taskql_sends_them_per_transaction(
    test_database: ScratchDatabase, single_server: pgbouncer.PgBouncer
) -> None:
    user = server_user(test_database)
    direct = get_database_settings()
    direct_start_up = {
        "statement_timeout": str(direct.db_statement_timeout_ms),
        "taskql.max_task_depth": str(direct.taskql_max_task_depth),
    }
    for name, value in direct_start_up.items():
        with pytest.raises(asyncpg.ProtocolViolationError, match="unsupported startup parameter"):
            await raw_client(single_server, user, **{name: value})

    async with engine_through(single_server, user, 2):
        assert set(DB.config["server_settings"]) == {"application_name", "DateStyle"}
        assert DB.config["statement_cache_size"] == 0
        async with DB.transaction() as transaction:
            inside = await snapshot(transaction.connection)
            units = dict(
                await transaction.connection.fetch(
                    "SELECT name, setting FROM pg_settings WHERE name = ANY($1)",
                    ["statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout"],
                )
            )
            depth = await transaction.connection.fetchval("SELECT app_max_task_depth()")
            datestyle = await transaction.connection.fetchval("SHOW DateStyle")
        assert units == {
            "statement_timeout": str(direct.db_statement_timeout_ms),
            "lock_timeout": str(direct.db_lock_timeout_ms),
            "idle_in_transaction_session_timeout": str(direct.db_idle_in_transaction_timeout_ms),
        }
        assert inside["max_task_depth"] == str(direct.taskql_max_task_depth)
        assert depth == direct.taskql_max_task_depth
        assert datestyle == "ISO, MDY"
    # and none of it stayed on the server connection
    after = await raw_client(single_server, user)
    try:
        assert await snapshot(after) == await baseline(test_database)
    finally:
        await after.close()


@pytest.mark.parametrize("ending", ["COMMIT", "ROLLBACK", "error then ROLLBACK"])
async def test_nothing_taskql_sets_survives_its_transaction_through_pgbouncer(
    test_database: ScratchDatabase,
    single_server: pgbouncer.PgBouncer,
    org_a: Org,
    org_b: Org,
    ending: str,
) -> None:
    """Client A runs taskql's transaction exactly as the server does (BEGIN with the
    connection settings, then the tenant context) and ends it with a bare COMMIT or
    ROLLBACK, no reset of any kind; client B, on the same server connection (PgBouncer has
    one), finds the defaults a fresh connection has, and no tenant's rows."""
    user = server_user(test_database)
    defaults = await baseline(test_database)
    settings = pgbouncer_settings()
    begin_sql = _begin_sql(settings)
    a = await raw_client(single_server, user, application_name="taskql", DateStyle="ISO, MDY")
    b = await raw_client(single_server, user, DateStyle="SQL, DMY")
    try:
        for org in (org_a, org_b):
            context = TenantContext(
                organization_id=org.id,
                user_id=org.users["owner"],
                role="owner",
                request_id="req-pgbouncer",
                client_ip="203.0.113.9",
                user_agent="pgbouncer-test",
                statement_timeout_ms=1234,
            )
            await a.execute(begin_sql)
            pid_a = await a.fetchval("SELECT pg_backend_pid()")
            await a.execute(SET_CONTEXT_SQL, *context.parameters())
            inside = await snapshot(a)
            assert inside["organization_id"] == str(org.id)
            assert inside["role"] == "owner"
            assert inside["statement_timeout"] == "1234ms"
            assert inside["max_task_depth"] == str(settings.taskql_max_task_depth)
            assert await a.fetchval("SHOW DateStyle") == "ISO, MDY"
            assert await a.fetchval("SELECT count(*) FROM projects") == 1
            if ending == "COMMIT":
                await a.execute("COMMIT")
            else:
                if ending.startswith("error"):
                    with pytest.raises(asyncpg.DivisionByZeroError):
                        await a.execute("SELECT 1/0")
                await a.execute("ROLLBACK")

            # B gets the same server connection, and nothing of A's transaction with it.
            assert await b.fetchval("SELECT pg_backend_pid()") == pid_a
            assert await snapshot(b) == defaults
            assert await b.fetchval("SHOW DateStyle") == "SQL, DMY"
            assert await b.fetchval("SELECT count(*) FROM projects") == 0
            assert await b.fetchval("SELECT count(*) FROM tasks") == 0
            # and B's DateStyle does not follow A back either
            assert await a.fetchval("SHOW DateStyle") == "ISO, MDY"
            assert await a.fetchval("SELECT pg_backend_pid()") == pid_a
    finally:
        await a.close()
        await b.close()


def _begin_sql(settings: Any) -> str:
    """The BEGIN the engine sends behind PgBouncer (db.engine.Engine.begin_sql)."""
    from db.engine import Engine

    engine = Engine()
    engine.configure("postgresql://unused", settings)
    return engine.begin_sql


QUERY = """{ organization { slug projects(first: 5) { nodes { name tasks(first: 20) {
  nodes { title comments(first: 5) { nodes { content author { email } } } } } } } } }"""


async def test_many_concurrent_mixed_tenant_requests_through_pgbouncer_on_two_server_connections(
    api: Api, org_a: Org, org_b: Org, test_database: ScratchDatabase
) -> None:
    resolvers = Api(
        httpx.AsyncClient(
            transport=httpx.ASGITransport(
                app=create_app(
                    # Many concurrent requests per session, on purpose: no fair-share queue.
                    Settings(taskql_compiled_queries=False, taskql_max_queued_per_caller=1000)
                ),
                client=("198.51.100.8", 50000),
            ),
            base_url="http://taskql.test",
        )
    )
    """120 concurrent requests (queries, compiled and not, and mutations) of two tenants and
    all roles, from 20 client connections over 2 PgBouncer server connections: every answer
    is its own tenant's, and the server connections carry nothing afterwards."""
    user = server_user(test_database)
    bouncer = pgbouncer.start([test_database.server_dsn], pool_size=2)
    try:
        async with engine_through(bouncer, user, 20) as pool:

            async def read(org: Org, role: str, compiled: bool) -> tuple[Org, dict[str, Any]]:
                return org, await (api if compiled else resolvers)(QUERY, as_=(org, role))

            async def write(org: Org, index: int) -> tuple[Org, dict[str, Any]]:
                task = await create_task(api, org, title=f"pgbouncer {index} of {org.label}")
                return org, {"created": task}

            calls = []
            for i in range(120):
                org = org_a if i % 2 else org_b
                if i % 5 == 0:
                    calls.append(write(org, i))
                else:
                    calls.append(
                        read(org, ("owner", "admin", "member", "viewer")[i % 4], i % 3 != 0)
                    )
            results = await asyncio.gather(*calls)
            servers = [s for s in bouncer.show("SERVERS") if s["user"] == user]
            clients = [c for c in bouncer.show("CLIENTS") if c["user"] == user]
            assert pool.get_size() == 20
            assert len(clients) >= 20
            assert 1 <= len(servers) <= 2

        for org, body in results:
            if "created" in body:
                continue
            assert "errors" not in body, body
            organization = body["data"]["organization"]
            assert organization["slug"] == org.slug
            projects = organization["projects"]["nodes"]
            assert [p["name"] for p in projects] == [f"Launch {org.label}"]
            for task in projects[0]["tasks"]["nodes"]:
                assert task["title"].endswith(f"of {org.label}"), task
                for comment in task["comments"]["nodes"]:
                    assert comment["content"].endswith(f"of {org.label}")
                    assert comment["author"]["email"] == org.emails["member"]
        for org in (org_a, org_b):
            body = await api(
                "query($p: ID!) { project(id: $p) { tasks(first: 100) { nodes { title } } } }",
                {"p": org.project},
                as_=(org, "viewer"),
            )
            titles = [t["title"] for t in body["data"]["project"]["tasks"]["nodes"]]
            assert len([t for t in titles if t.startswith("pgbouncer ")]) == 12
            assert all(t.endswith(f"of {org.label}") for t in titles), titles

        # Both server connections, held at once, carry nothing of those 120 requests.
        defaults = await baseline(test_database)
        first = await raw_client(bouncer, user)
        second = await raw_client(bouncer, user)
        try:
            await first.execute("BEGIN")
            await second.execute("BEGIN")
            assert await first.fetchval("SELECT pg_backend_pid()") != await second.fetchval(
                "SELECT pg_backend_pid()"
            )
            for connection in (first, second):
                seen = await snapshot(connection)
                assert seen == defaults
                assert await connection.fetchval("SELECT count(*) FROM tasks") == 0
                await connection.execute("COMMIT")
        finally:
            await first.close()
            await second.close()
    finally:
        await resolvers.client.aclose()
        bouncer.stop()


async def test_the_pgbouncer_leg_really_goes_through_pgbouncer(
    pool: asyncpg.Pool, test_database: ScratchDatabase, request: pytest.FixtureRequest
) -> None:
    """With TASKQL_TEST_PGBOUNCER=1 every API test's pool is PgBouncer's client; without it,
    the engine connects directly and sends its settings at start-up."""
    if not THROUGH_PGBOUNCER:
        assert DB.dsn == test_database.server_dsn
        assert not DB.pgbouncer
        assert "statement_timeout" in DB.config["server_settings"]
        return
    bouncer: pgbouncer.PgBouncer = request.getfixturevalue("pgbouncer_server")
    user = server_user(test_database)
    assert DB.dsn == bouncer.dsn(user)
    assert DB.pgbouncer
    assert DB.config["statement_cache_size"] == 0
    async with pool.acquire() as connection:
        await connection.fetchval("SELECT 1")
        clients = [c for c in bouncer.show("CLIENTS") if c["user"] == user]
        assert len(clients) >= 1
    servers = [s for s in bouncer.show("SERVERS") if s["user"] == user]
    assert 1 <= len(servers) <= PGBOUNCER_POOL_SIZE < pool.get_max_size()
