"""A client that goes away cancels its statement (issue 13: "abandoned requests keep
running"). A real `taskql serve`, a real socket closed mid-request, PostgreSQL's own view of
its backends."""

from __future__ import annotations

import asyncio
import json
import time

import asyncpg
import httpx

from api.ids import from_global_id
from tests.api.world import Org
from tests.conftest import ScratchDatabase
from tests.test_serve import serve, stop, wait_healthy

#: Backends of this database waiting for a lock. pg_locks and pg_stat_activity's pid and
#: datname are visible to every role (the query text is not, to the owner role).
WAITING = """SELECT count(*) FROM pg_locks AS l JOIN pg_stat_activity AS a USING (pid)
WHERE NOT l.granted AND a.datname = current_database() AND a.pid <> pg_backend_pid()"""


async def _waiting(observer: asyncpg.Connection) -> int:
    return int(await observer.fetchval(WAITING))


async def test_closing_the_socket_cancels_the_statement(
    test_database: ScratchDatabase, org_a: Org, org_b: Org
) -> None:
    env = {
        **test_database.env(),
        # Far longer than the test: without the cancel, the statement would wait 30 s.
        "DB_LOCK_TIMEOUT_MS": "30000",
        "TASKQL_REQUEST_STATEMENT_TIMEOUT_MS": "30000",
    }
    process, port = serve(env)
    locker = await asyncpg.connect(test_database.owner_dsn)
    observer = await asyncpg.connect(test_database.owner_dsn)
    try:
        await asyncio.to_thread(wait_healthy, process, port)
        task_id = from_global_id(org_a.task(0))[1]
        await locker.execute("SET ROLE taskql_maintenance")
        locked = locker.transaction()
        await locked.start()
        await locker.execute("SELECT 1 FROM tasks WHERE id = $1 FOR UPDATE", task_id)

        body = json.dumps(
            {
                "query": 'mutation($id: ID!) { updateTask(input: {id: $id, title: "Held"}) '
                "{ task { id } } }",
                "variables": {"id": org_a.task(0)},
            }
        ).encode()
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /graphql HTTP/1.1\r\nHost: taskql\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {org_a.tokens['member']}\r\n".encode()
            + f"X-Organization: {org_a.slug}\r\n".encode()
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        deadline = time.monotonic() + 10
        while await _waiting(observer) == 0:
            assert time.monotonic() < deadline, "the update never reached the lock"
            await asyncio.sleep(0.05)

        writer.close()  # the client goes away
        await writer.wait_closed()
        deadline = time.monotonic() + 5
        while await _waiting(observer) > 0:
            assert time.monotonic() < deadline, "the abandoned statement is still waiting"
            await asyncio.sleep(0.05)
        await locked.rollback()

        # Nothing of it was written, and the server still answers both tenants.
        assert await locker.fetchval("SELECT title FROM tasks WHERE id = $1", task_id) != "Held"
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for org in (org_a, org_b):
                answer = await client.post(
                    "/graphql",
                    json={"query": "{ organization { slug } }"},
                    headers={
                        "Authorization": f"Bearer {org.tokens['viewer']}",
                        "X-Organization": org.slug,
                    },
                )
                assert answer.json()["data"]["organization"]["slug"] == org.slug
    finally:
        await locker.close()
        await observer.close()
        stop(process)
