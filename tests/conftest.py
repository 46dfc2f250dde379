"""Test database set-up: a real PostgreSQL, never a mock.

Default: the embedded PostgreSQL 18, in a fresh database ``taskql_test`` created for the
session. With ``DATABASE_URL`` and ``MIGRATION_DATABASE_URL`` set (CI's PostgreSQL 15 run),
that database is used; it must be dedicated to the run, as the migration tests reverse
every migration on it.

With ``TASKQL_TEST_PGBOUNCER=1`` (CI's PgBouncer leg over ``tests/api``), the engine's pool
connects through a real PgBouncer in transaction pooling with a server pool of
``PGBOUNCER_POOL_SIZE`` connections (``db.pgbouncer``), configured as production is behind
one (``DB_PGBOUNCER``: no start-up settings, statement cache off).
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Generator, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from api.settings import Settings
from db import pgbouncer, roles
from db.engine import DB
from db.migrate import runner
from db.settings import DatabaseSettings, get_database_settings
from db.targets import run_sync, scratch_database
from tests.seed import Tenant, seed_tenant

TEST_DATABASE = "taskql_test"
#: The PgBouncer leg: the pool goes through PgBouncer (see the module's docstring).
THROUGH_PGBOUNCER = os.environ.get("TASKQL_TEST_PGBOUNCER", "") not in ("", "0")
#: PgBouncer's server connections for the test database in that leg: fewer than the
#: engine's pool (DB_POOL_MAX_SIZE, 10), so client connections really share them.
PGBOUNCER_POOL_SIZE = 3


#: Seconds into one test (set-up, call and teardown) after which the watchdog reports what the
#: event loop is waiting for: before pytest-timeout (300 s) ends the run with only the
#: threads' stacks, which show a loop in select() and not the awaiting task.
WATCHDOG_SECONDS = float(os.environ.get("TASKQL_TEST_WATCHDOG_SECONDS", "240"))


class _Watchdog:
    """Reports, once per test, a test that takes longer than ``WATCHDOG_SECONDS``: its id and
    every pending asyncio task with its stack (found through the garbage collector, as
    the loop belongs to another thread)."""

    def __init__(self) -> None:
        self.config: pytest.Config | None = None
        self.current: tuple[str, float] | None = None
        self.reported: str | None = None
        threading.Thread(target=self._run, name="taskql-test-watchdog", daemon=True).start()

    def _run(self) -> None:
        while True:
            time.sleep(5)
            current = self.current
            if current is None or current[0] == self.reported:
                continue
            nodeid, started = current
            if time.monotonic() - started > WATCHDOG_SECONDS:
                self.reported = nodeid
                self._report(nodeid)

    def _report(self, nodeid: str) -> None:
        # Past pytest's output capture, as pytest-timeout does for its dump.
        capture = self.config.pluginmanager.getplugin("capturemanager") if self.config else None
        if capture is not None:
            capture.suspend_global_capture(in_=True)
        try:
            print(f"\n=== watchdog: {nodeid} still running after {WATCHDOG_SECONDS:g} s")
            tasks = [o for o in gc.get_objects() if isinstance(o, asyncio.Task) and not o.done()]
            for task in tasks:
                print(f"--- pending task {task.get_name()}: {task.get_coro()!r}")
                task.print_stack(file=sys.stdout)
            sys.stdout.flush()
        finally:
            if capture is not None:
                capture.resume_global_capture()


_WATCHDOG = _Watchdog()


def pytest_configure(config: pytest.Config) -> None:
    _WATCHDOG.config = config


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, None, None]:
    _WATCHDOG.current = (item.nodeid, time.monotonic())
    try:
        yield
    finally:
        _WATCHDOG.current = None


@dataclass(frozen=True)
class ScratchDatabase:
    owner_dsn: str
    server_dsn: str
    #: Superuser URL, only on the embedded server.
    admin_dsn: str | None

    def env(self) -> dict[str, str]:
        """Environment for a `taskql` subprocess pointed at this database."""
        return {
            **os.environ,
            "DATABASE_URL": self.server_dsn,
            "MIGRATION_DATABASE_URL": self.owner_dsn,
        }


async def _migrate(owner_dsn: str) -> None:
    DB.pool = None
    DB.configure(owner_dsn, get_database_settings())
    await runner.forwards()


@pytest.fixture(scope="session")
def test_database() -> ScratchDatabase:
    targets = run_sync(scratch_database(TEST_DATABASE))
    database = ScratchDatabase(
        owner_dsn=targets.require_owner(),
        server_dsn=targets.require_server(),
        admin_dsn=targets.admin_dsn,
    )
    run_sync(_migrate(database.owner_dsn))
    return database


def admin_url(database: ScratchDatabase) -> str:
    """A superuser URL of the test server: the embedded one's, or TASKQL_TEST_ADMIN_URL."""
    url = database.admin_dsn or os.environ.get("TASKQL_TEST_ADMIN_URL")
    if url is None:
        pytest.skip("needs a superuser URL: the embedded server, or TASKQL_TEST_ADMIN_URL")
    return url


@pytest.fixture
def fresh_database(test_database: ScratchDatabase) -> Iterator[ScratchDatabase]:
    """A database of this test's own, bootstrapped (roles, CONNECT) but not migrated;
    dropped after the test."""
    admin = admin_url(test_database)
    name = f"taskql_fresh_{os.getpid()}"
    names = roles.RoleNames.for_database(name)  # logins of its own: roles are per database
    logins = (names.owner, names.server_login)
    run_sync(roles.drop_database(admin, name, logins))
    run_sync(roles.bootstrap(admin, name, names))
    try:
        yield ScratchDatabase(
            owner_dsn=roles.role_url(admin, names.owner, None, name),
            server_dsn=roles.role_url(admin, names.server_login, None, name),
            admin_dsn=admin,
        )
    finally:
        run_sync(roles.drop_database(admin, name, logins))


def pgbouncer_settings(settings: DatabaseSettings | None = None) -> DatabaseSettings:
    """Settings as an operator sets them behind PgBouncer 1.18 (DB_PGBOUNCER=1)."""
    return (settings or get_database_settings()).model_copy(update={"db_pgbouncer": True})


@pytest.fixture(scope="session")
def pgbouncer_server(test_database: ScratchDatabase) -> Iterator[pgbouncer.PgBouncer]:
    """A real PgBouncer (transaction pooling) in front of the test database, for the
    server and owner roles, with ``PGBOUNCER_POOL_SIZE`` server connections per role."""
    bouncer = pgbouncer.start(
        [test_database.server_dsn, test_database.owner_dsn], pool_size=PGBOUNCER_POOL_SIZE
    )
    yield bouncer
    bouncer.stop()


def server_user(test_database: ScratchDatabase) -> str:
    return pgbouncer.Upstream.parse(test_database.server_dsn).user


@pytest.fixture(scope="session")
async def pool(
    test_database: ScratchDatabase, request: pytest.FixtureRequest
) -> AsyncIterator[asyncpg.Pool]:
    """The engine's bounded pool, connected as the server role to the test database (through
    PgBouncer in the PgBouncer leg)."""
    DB.pool = None
    if THROUGH_PGBOUNCER:
        bouncer: pgbouncer.PgBouncer = request.getfixturevalue("pgbouncer_server")
        DB.configure(bouncer.dsn(server_user(test_database)), pgbouncer_settings())
        # LISTEN needs a session: realtime's listening connection bypasses PgBouncer, as
        # docs/operations/deploy.md tells operators to configure it.
        os.environ["TASKQL_LISTEN_DATABASE_URL"] = test_database.server_dsn
    else:
        DB.configure(test_database.server_dsn, get_database_settings())
    await DB.start_connection_pool(session_reset=False)  # as the API server
    assert DB.pool is not None
    started = DB.pool
    yield started
    # Bounded (a connection a test leaked is never released): terminated, and said so.
    if not await DB.close_pool_within(30):
        raise AssertionError("the pool did not close within 30 s: a connection was never released")


@pytest.fixture
async def owner(test_database: ScratchDatabase) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection as the owner role (still subject to the FORCEd policies)."""
    connection = await asyncpg.connect(test_database.owner_dsn)
    yield connection
    await connection.close()


@pytest.fixture
async def maintenance(test_database: ScratchDatabase) -> AsyncIterator[asyncpg.Connection]:
    """The owner connection become taskql_maintenance (BYPASSRLS): reads every tenant, for
    the checks that compare what a tenant sees with what is there."""
    connection = await asyncpg.connect(test_database.owner_dsn)
    await connection.execute("SET ROLE taskql_maintenance")
    yield connection
    await connection.close()


@pytest.fixture
async def server_connection(test_database: ScratchDatabase) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection as the server role, outside the pool."""
    connection = await asyncpg.connect(test_database.server_dsn)
    yield connection
    await connection.close()


@pytest.fixture
async def tenant_a(pool: asyncpg.Pool) -> Tenant:
    return await seed_tenant("a")


@pytest.fixture
async def tenant_b(pool: asyncpg.Pool) -> Tenant:
    return await seed_tenant("b")


#: The machine's Redis (CI's too); REDIS_URL overrides it for the tests that ask for it. It
#: is taken out of the environment: every other test (and subprocess) counts in memory,
#: never under a shared prefix nobody cleans.
TEST_REDIS_URL = os.environ.pop("REDIS_URL", None) or "redis://127.0.0.1:6379/0"
#: Every key this run writes starts with it; each test adds its own part and deletes its keys.
RUN_PREFIX = f"taskql-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class RedisTarget:
    url: str
    prefix: str

    def settings(self, **overrides: Any) -> Settings:
        """Settings that point the rate limits at this Redis and prefix."""
        return Settings(redis_url=self.url, taskql_rate_limit_prefix=self.prefix, **overrides)

    def env(self) -> dict[str, str]:
        return {"REDIS_URL": self.url, "TASKQL_RATE_LIMIT_PREFIX": self.prefix}


async def redis_keys(target: RedisTarget) -> list[bytes]:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(target.url)
    try:
        return [key async for key in client.scan_iter(match=f"{target.prefix}*")]
    finally:
        await client.aclose()


@pytest.fixture
async def redis_target() -> AsyncIterator[RedisTarget]:
    """The real Redis, under a key prefix of this test's own; its keys are deleted after."""
    import redis.asyncio

    target = RedisTarget(TEST_REDIS_URL, f"{RUN_PREFIX}-{uuid.uuid4().hex[:8]}")
    client = redis.asyncio.Redis.from_url(target.url, socket_connect_timeout=2)
    try:
        try:
            await client.ping()  # type: ignore[misc]  # redis types it as bool | Awaitable
        except redis.RedisError as exc:
            pytest.fail(f"Redis is needed at {target.url} (set REDIS_URL): {exc}")
        yield target
        keys = [key async for key in client.scan_iter(match=f"{target.prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()
