"""Issue 13, "no single caller may stall the server for others": the fair share of
``api.fairness`` through the real HTTP stack. One caller's operations beyond its share wait
in its own short queue before they take a pooled connection, past that queue it is told to
slow down (429, RATE_LIMITED, Retry-After), and everybody else, of its tenant or another, is
served meanwhile."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from api.app import create_app
from api.ids import from_global_id
from api.settings import Settings
from db.tenancy import TenantContext, tenant_transaction
from tests.api.conftest import Api
from tests.api.world import Org

RENAME = "mutation($id: ID!, $t: String!) { updateTask(input: {id: $id, title: $t}) { task { title } errors { code } } }"
TITLE = "query($id: ID!) { task(id: $id) { title } }"


@pytest.fixture
async def fair(pool: asyncpg.Pool) -> AsyncIterator[Api]:
    """One operation in flight per caller, one more waiting."""
    settings = Settings(taskql_max_operations_per_caller=1, taskql_max_queued_per_caller=1)
    transport = httpx.ASGITransport(app=create_app(settings), client=("198.51.100.21", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://taskql.test") as client:
        yield Api(client)


async def _waiting_for_locks(pool: asyncpg.Pool, count: int) -> None:
    deadline = time.monotonic() + 10
    while await pool.fetchval("SELECT count(*) FROM pg_locks WHERE NOT granted") < count:
        assert time.monotonic() < deadline, "the first operation never reached its lock"
        await asyncio.sleep(0.02)


async def test_a_caller_past_its_share_waits_then_is_refused_while_others_are_served(
    fair: Api, pool: asyncpg.Pool, org_a: Org, org_b: Org
) -> None:
    task = org_a.task(0)
    member = (org_a, "member")
    # Hold the task's row: the member's first rename blocks on it inside PostgreSQL.
    async with tenant_transaction(
        TenantContext(organization_id=org_a.id, user_id=org_a.users["owner"], role="owner")
    ) as held:
        await held.connection.execute(
            "SELECT 1 FROM tasks WHERE id = $1 FOR UPDATE", from_global_id(task)[1]
        )
        first = asyncio.create_task(fair(RENAME, {"id": task, "t": "first"}, as_=member))
        await _waiting_for_locks(pool, 1)
        # The second waits in the member's queue (no connection taken: still one lock waiter).
        second = asyncio.create_task(fair(RENAME, {"id": task, "t": "second"}, as_=member))
        await asyncio.sleep(0.2)
        assert not second.done()
        # The third finds the share taken and the queue full: told to slow down, at once.
        refused = await fair.post(TITLE, {"id": task}, token=org_a.tokens["member"], org=org_a.slug)
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"
        error = refused.json()["errors"][0]
        assert error["extensions"]["code"] == "RATE_LIMITED"
        assert uuid.UUID(error["extensions"]["requestId"])
        # Everybody else is served meanwhile: the same tenant's viewer, the other tenant.
        for org, role in ((org_a, "viewer"), (org_b, "member"), (org_b, "viewer")):
            body = await asyncio.wait_for(fair(TITLE, {"id": org.task(0)}, as_=(org, role)), 5)
            assert "errors" not in body, body
        assert await pool.fetchval("SELECT count(*) FROM pg_locks WHERE NOT granted") == 1
    # The row released: both queued renames ran, in order, and the member is served again.
    answers = [await asyncio.wait_for(t, 10) for t in (first, second)]
    assert [a["data"]["updateTask"]["task"]["title"] for a in answers] == ["first", "second"]
    again = await fair(TITLE, {"id": task}, as_=member)
    assert again["data"]["task"]["title"] == "second"
    # The other tenant never saw org A's task.
    hidden = await fair(TITLE, {"id": task}, as_=(org_b, "owner"))
    assert hidden["data"]["task"] is None


async def test_anonymous_callers_share_by_address(
    fair: Api, pool: asyncpg.Pool, org_a: Org
) -> None:
    """Without a token the key is the client's address: an anonymous flood from one address
    is refused past its queue, and an authenticated caller from the same address is not."""
    slow = 'mutation($e: String!) { logIn(input: {email: $e, password: "wrong password"}) { errors { code } } }'
    flood = [
        asyncio.create_task(fair.post(slow, {"e": f"nobody{i}@example.test"})) for i in range(6)
    ]
    served = await asyncio.wait_for(fair(TITLE, {"id": org_a.task(0)}, as_=(org_a, "viewer")), 10)
    assert "errors" not in served, served
    statuses = sorted(r.status_code for r in await asyncio.gather(*flood))
    assert 429 in statuses
    assert 200 in statuses
