"""Subscriptions over a real WebSocket (graphql-transport-ws) against a real uvicorn server:
changes made by other users over HTTP arrive, under the subscriber's own tenant and role;
another tenant's never do; rolled-back writes announce nothing; log-out and removal close
the connection; the protocol's close codes; limits; resume after a cursor."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from api.settings import Settings
from tests.api.realtime_client import LiveServer, WsClient, free_port, live_server
from tests.api.world import Org, add_fresh_member, seed_org, session_token
from tests.conftest import ScratchDatabase
from tests.test_serve import stop, wait_healthy

TASK_CHANGED = """subscription($project: ID!, $after: String) {
  taskChanged(projectId: $project, after: $after) { cursor action taskId task { title status } }
}"""
UPDATE_TASK = """mutation($id: ID!, $title: String!) {
  updateTask(input: {id: $id, title: $title}) { task { id } errors { code } }
}"""


@pytest.fixture
async def server(pool: asyncpg.Pool) -> AsyncIterator[LiveServer]:
    settings = Settings(taskql_ws_reauth_seconds=30, taskql_ws_ping_seconds=10)
    async with live_server(settings) as live:
        yield live


@pytest.fixture
async def org_a(pool: asyncpg.Pool) -> Org:
    return await seed_org("a")


@pytest.fixture
async def org_b(pool: asyncpg.Pool) -> Org:
    return await seed_org("b")


async def _client(server: LiveServer, org: Org, role: str) -> AsyncIterator[WsClient]:
    async with WsClient.opened(server.ws_url) as client:
        ack = await client.init({"token": org.tokens[role], "organization": org.slug})
        assert ack == {"type": "connection_ack"}
        yield client


def _next(message: dict[str, Any], op_id: str) -> dict[str, Any]:
    assert message["type"] == "next", message
    assert message["id"] == op_id
    payload: dict[str, Any] = message["payload"]
    return payload


async def test_a_change_over_http_reaches_its_tenants_subscribers_and_no_one_else(
    server: LiveServer, org_a: Org, org_b: Org
) -> None:
    async with (
        WsClient.opened(server.ws_url) as a,
        WsClient.opened(server.ws_url) as b,
        WsClient.opened(server.ws_url) as b_snooping,
    ):
        assert (await a.init({"token": org_a.tokens["member"], "organization": org_a.slug}))[
            "type"
        ] == "connection_ack"
        for client in (b, b_snooping):
            ack = await client.init({"token": org_b.tokens["member"], "organization": org_b.slug})
            assert ack["type"] == "connection_ack"
        await a.subscribe("1", TASK_CHANGED, {"project": org_a.project})
        await b.subscribe("1", TASK_CHANGED, {"project": org_b.project})
        # Tenant b's member names tenant a's project: routed by b's tenant, it never matches.
        await b_snooping.subscribe("1", TASK_CHANGED, {"project": org_a.project})
        await server.settled()

        await server.graphql(
            UPDATE_TASK,
            {"id": org_a.task(0), "title": "Renamed in A"},
            token=org_a.tokens["admin"],
            org=org_a.slug,
        )
        got = _next(await a.receive(), "1")["data"]["taskChanged"]
        assert got["action"] == "UPDATED"
        assert got["taskId"] == org_a.task(0)
        assert got["task"] == {"title": "Renamed in A", "status": "TODO"}
        await b.nothing_for(0.5)
        await b_snooping.nothing_for(0.1)

        await server.graphql(
            UPDATE_TASK,
            {"id": org_b.task(0), "title": "Renamed in B"},
            token=org_b.tokens["owner"],
            org=org_b.slug,
        )
        got_b = _next(await b.receive(), "1")["data"]["taskChanged"]
        assert got_b["task"]["title"] == "Renamed in B"
        await a.nothing_for(0.5)
        await b_snooping.nothing_for(0.1)


async def test_each_role_sees_what_it_may_and_identical_selections_cost_one_read(
    server: LiveServer, org_a: Org, org_b: Org
) -> None:
    document = """subscription { projectChanged { action project { name
        organization { invitations(first: 5) { edges { node { id } } } } } } }"""
    clients: dict[str, list[WsClient]] = {}
    async with contextlib_stack() as stack:
        for role, count in (("viewer", 3), ("admin", 2)):
            clients[role] = []
            for _ in range(count):
                client = await stack.enter_async_context(WsClient.opened(server.ws_url))
                ack = await client.init({"token": org_a.tokens[role], "organization": org_a.slug})
                assert ack["type"] == "connection_ack"
                await client.subscribe("p", document)
                clients[role].append(client)
        other = await stack.enter_async_context(WsClient.opened(server.ws_url))
        await other.init({"token": org_b.tokens["admin"], "organization": org_b.slug})
        await other.subscribe("p", document)
        await server.settled()
        reads_before = server.hub.stats.reads

        await server.graphql(
            'mutation($id: ID!) { updateProject(input: {id: $id, name: "Relaunch"}) '
            "{ project { id } errors { code } } }",
            {"id": org_a.project},
            token=org_a.tokens["owner"],
            org=org_a.slug,
        )
        for client in clients["viewer"]:
            payload = _next(await client.receive(), "p")
            assert (
                payload["data"]["projectChanged"]["project"] is None
                or payload["data"]["projectChanged"]["project"]["organization"] is None
            )
            assert payload["errors"][0]["extensions"]["code"] == "FORBIDDEN"
        for client in clients["admin"]:
            payload = _next(await client.receive(), "p")
            assert "errors" not in payload, payload
            project = payload["data"]["projectChanged"]["project"]
            assert project["name"] == "Relaunch"
            assert project["organization"]["invitations"] == {"edges": []}
        await other.nothing_for(0.3)
        await server.settled()
        # Five subscribers, two distinct (tenant, role, selection) groups: two reads.
        assert server.hub.stats.reads - reads_before == 2


async def test_a_rolled_back_mutation_announces_nothing_and_a_committed_one_arrives(
    server: LiveServer, org_a: Org
) -> None:
    async for client in _client(server, org_a, "viewer"):
        await client.subscribe("t", TASK_CHANGED, {"project": org_a.project})
        await server.settled()
        # The second mutation fails with a typed error: the whole operation rolls back.
        body = await server.http.post(
            "/graphql",
            json={
                "query": """mutation($id: ID!) {
                  a: updateTask(input: {id: $id, title: "Rolled back"}) { task { id } }
                  b: updateTask(input: {id: $id, priority: 99}) { errors { code } }
                }""",
                "variables": {"id": org_a.task(1)},
            },
            headers={
                "Authorization": f"Bearer {org_a.tokens['member']}",
                "X-Organization": org_a.slug,
            },
        )
        assert body.status_code == 200
        await client.nothing_for(0.7)
        await server.graphql(
            UPDATE_TASK,
            {"id": org_a.task(1), "title": "Committed"},
            token=org_a.tokens["member"],
            org=org_a.slug,
        )
        got = _next(await client.receive(), "t")["data"]["taskChanged"]
        assert got["task"]["title"] == "Committed"


async def test_comments_added_edited_and_deleted_arrive_in_order(
    server: LiveServer, org_a: Org, org_b: Org
) -> None:
    document = """subscription($task: ID!) {
      commentAdded(taskId: $task) { action commentId comment { content deletedAt } } }"""
    async with WsClient.opened(server.ws_url) as other:
        await other.init({"token": org_b.tokens["member"], "organization": org_b.slug})
        await other.subscribe("c", document, {"task": org_b.task(0)})
        async for client in _client(server, org_a, "viewer"):
            await client.subscribe("c", document, {"task": org_a.task(0)})
            await server.settled()
            as_member = {"token": org_a.tokens["member"], "org": org_a.slug}
            added = await server.graphql(
                'mutation($t: ID!) { addComment(input: {taskId: $t, content: "First!"}) '
                "{ comment { id } errors { code } } }",
                {"t": org_a.task(0)},
                **as_member,
            )
            comment_id = added["data"]["addComment"]["comment"]["id"]
            await server.graphql(
                'mutation($c: ID!) { editComment(input: {id: $c, content: "First, edited"}) '
                "{ comment { id } } }",
                {"c": comment_id},
                **as_member,
            )
            await server.graphql(
                "mutation($c: ID!) { deleteComment(input: {id: $c}) { comment { id } } }",
                {"c": comment_id},
                **as_member,
            )
            seen = [_next(await client.receive(), "c")["data"]["commentAdded"] for _ in range(3)]
            assert [s["action"] for s in seen] == ["CREATED", "UPDATED", "UPDATED"]
            assert {s["commentId"] for s in seen} == {comment_id}
            # Each payload is read when its event is handled: the comment as it is by then.
            assert seen[2]["comment"]["deletedAt"] is not None
        await other.nothing_for(0.3)


async def test_log_out_closes_the_connection_at_once(server: LiveServer, org_a: Org) -> None:
    token = await session_token(org_a.users["member"])
    async with WsClient.opened(server.ws_url) as client:
        await client.init({"token": token, "organization": org_a.slug})
        await client.subscribe("t", TASK_CHANGED, {"project": org_a.project})
        await server.graphql("mutation { logOut { ok } }", token=token, org=org_a.slug)
        closed = await client.closed(wait=5)
        assert closed.code == 4403
        assert "session ended" in closed.reason


async def test_removal_closes_and_a_role_change_applies_to_the_next_event(
    server: LiveServer, org_a: Org
) -> None:
    user_id, _ = await add_fresh_member(org_a, "viewer")
    token = await session_token(user_id)
    fresh = org_a.gid("User", user_id)
    document = """subscription { projectChanged { project {
        organization { invitations(first: 1) { edges { node { id } } } } } } }"""
    async with WsClient.opened(server.ws_url) as client:
        await client.init({"token": token, "organization": org_a.slug})
        await client.subscribe("m", "subscription { membershipChanged { action member { role } } }")
        await client.subscribe("p", document)
        await server.settled()
        as_owner = {"token": org_a.tokens["owner"], "org": org_a.slug}
        await server.graphql(
            "mutation($u: ID!) { changeMemberRole(input: {userId: $u, role: ADMIN}) "
            "{ member { role } errors { code } } }",
            {"u": fresh},
            **as_owner,
        )
        change = _next(await client.receive(), "m")["data"]["membershipChanged"]
        assert change == {"action": "UPDATED", "member": {"role": "ADMIN"}}
        await asyncio.sleep(0.5)  # the connection re-authenticates on its membership event
        await server.graphql(
            'mutation($id: ID!) { updateProject(input: {id: $id, name: "As admin"}) '
            "{ project { id } } }",
            {"id": org_a.project},
            **as_owner,
        )
        payload = _next(await client.receive(), "p")
        assert "errors" not in payload, payload  # an admin's read now

        await server.graphql(
            "mutation($u: ID!) { removeMember(input: {userId: $u}) { removedUserId } }",
            {"u": fresh},
            **as_owner,
        )
        closed = await client.closed(wait=5)
        assert closed.code == 4403
        assert "not a member" in closed.reason


async def test_the_protocols_close_codes(server: LiveServer, org_a: Org, org_b: Org) -> None:
    async with WsClient.opened(server.ws_url) as client:
        await client.send(
            {"type": "connection_init", "payload": {"token": "nope", "organization": org_a.slug}}
        )
        assert (await client.closed()).code == 4403
    async with WsClient.opened(server.ws_url) as client:
        # A real token, but not a member of the organization it names.
        await client.send(
            {
                "type": "connection_init",
                "payload": {"token": org_b.tokens["owner"], "organization": org_a.slug},
            }
        )
        closed = await client.closed()
        assert (closed.code, "not a member" in closed.reason) == (4403, True)
    async with WsClient.opened(server.ws_url) as client:
        await client.subscribe("1", TASK_CHANGED, {"project": org_a.project})
        assert (await client.closed()).code == 4401
    async for client in _client(server, org_a, "member"):
        await client.send({"type": "connection_init", "payload": {}})
        assert (await client.closed()).code == 4429
    async for client in _client(server, org_a, "member"):
        await client.subscribe("1", TASK_CHANGED, {"project": org_a.project})
        await client.subscribe("1", TASK_CHANGED, {"project": org_a.project})
        assert (await client.closed()).code == 4409
    async for client in _client(server, org_a, "member"):
        await client.send({"type": "nonsense"})
        assert (await client.closed()).code == 4400
    async for client in _client(server, org_a, "member"):
        await client.connection.send("x" * (70 * 1024))
        assert (await client.closed()).code == 1009
    async for client in _client(server, org_a, "member"):
        await client.send({"type": "ping"})
        assert await client.receive() == {"type": "pong"}


async def test_no_connection_init_in_time_and_idleness_close_the_socket(
    pool: asyncpg.Pool, org_a: Org
) -> None:
    settings = Settings(taskql_ws_init_timeout_seconds=0.5, taskql_ws_idle_seconds=1.0)
    async with live_server(settings) as server:
        async with WsClient.opened(server.ws_url) as client:
            assert (await client.closed(wait=5)).code == 4408
        async for client in _client(server, org_a, "member"):
            closed = await client.closed(wait=5)
            assert (closed.code, closed.reason) == (1001, "idle timeout")


async def test_subscription_documents_get_the_operation_limits(
    server: LiveServer, org_a: Org
) -> None:
    async for client in _client(server, org_a, "member"):
        nested = "parent { " * 14 + "id" + " }" * 14
        deep = f'subscription {{ taskChanged(projectId: "{org_a.project}") {{ task {{ {nested} }} }} }}'
        await client.subscribe("deep", deep)
        error = await client.receive()
        assert (error["type"], error["id"]) == ("error", "deep")
        assert error["payload"][0]["extensions"]["code"] == "BAD_USER_INPUT"

        costly = """subscription($p: ID!) { taskChanged(projectId: $p) { task {
            subtasks(first: 100) { edges { node { subtasks(first: 100) { edges { node {
            comments(first: 100) { edges { node { id } } } } } } } } } } } }"""
        await client.subscribe("costly", costly, {"p": org_a.project})
        error = await client.receive()
        assert error["type"] == "error"
        assert "nodes" in error["payload"][0]["message"]

        await client.subscribe("query", "{ viewer { user { id } } }")
        error = await client.receive()
        assert "only subscriptions" in error["payload"][0]["message"]

        for i in range(20):
            await client.subscribe(f"s{i}", TASK_CHANGED, {"project": org_a.project})
        await client.subscribe("one-too-many", TASK_CHANGED, {"project": org_a.project})
        error = await client.receive()
        assert error["id"] == "one-too-many"
        assert error["payload"][0]["extensions"]["code"] == "RATE_LIMITED"


async def test_resume_after_a_cursor_replays_what_was_missed(
    server: LiveServer, org_a: Org, org_b: Org
) -> None:
    as_member = {"token": org_a.tokens["member"], "org": org_a.slug}
    async for client in _client(server, org_a, "member"):
        await client.subscribe("t", TASK_CHANGED, {"project": org_a.project})
        await server.settled()
        await server.graphql(UPDATE_TASK, {"id": org_a.task(0), "title": "One"}, **as_member)
        cursor = _next(await client.receive(), "t")["data"]["taskChanged"]["cursor"]
        await client.send({"id": "t", "type": "complete"})
    # While nobody listens: two changes in a, one in b.
    await server.graphql(UPDATE_TASK, {"id": org_a.task(1), "title": "Two"}, **as_member)
    await server.graphql(UPDATE_TASK, {"id": org_a.task(2), "title": "Three"}, **as_member)
    await server.graphql(
        UPDATE_TASK,
        {"id": org_b.task(0), "title": "Not yours"},
        token=org_b.tokens["member"],
        org=org_b.slug,
    )
    async for client in _client(server, org_a, "member"):
        await client.subscribe("t", TASK_CHANGED, {"project": org_a.project, "after": cursor})
        replayed = [_next(await client.receive(), "t")["data"]["taskChanged"] for _ in range(2)]
        assert [r["task"]["title"] for r in replayed] == ["Two", "Three"]
        await client.nothing_for(0.3)
        await client.subscribe("bad", TASK_CHANGED, {"project": org_a.project, "after": "1.2.3"})
        error = await client.receive()
        assert "retention" in error["payload"][0]["message"]


async def test_two_tenants_writing_concurrently_each_subscriber_gets_exactly_its_own(
    server: LiveServer, org_a: Org, org_b: Org
) -> None:
    writes = 10
    async with contextlib_stack() as stack:
        subscribers: list[tuple[Org, WsClient]] = []
        for org in (org_a, org_b):
            for role in ("owner", "member", "viewer"):
                client = await stack.enter_async_context(WsClient.opened(server.ws_url))
                await client.init({"token": org.tokens[role], "organization": org.slug})
                await client.subscribe("t", TASK_CHANGED, {"project": org.project})
                subscribers.append((org, client))
        await server.settled()

        async def write(org: Org) -> None:
            for i in range(writes):
                await server.graphql(
                    UPDATE_TASK,
                    {"id": org.task(i % 3), "title": f"{org.label}-{i}"},
                    token=org.tokens["member"],
                    org=org.slug,
                )

        await asyncio.gather(write(org_a), write(org_b))
        for org, client in subscribers:
            titles = []
            for _ in range(writes):
                change = _next(await client.receive(), "t")["data"]["taskChanged"]
                titles.append(change["task"]["title"])
            assert all(t.startswith(f"{org.label}-") for t in titles), titles
            await client.nothing_for(0.2)


def contextlib_stack() -> Any:
    import contextlib

    return contextlib.AsyncExitStack()


async def test_with_two_workers_every_subscriber_gets_a_committed_change(
    test_database: ScratchDatabase, org_a: Org
) -> None:
    """A real `taskql serve` with two worker processes, each with its own LISTEN connection:
    the kernel spreads the connections over both, and every one gets the change."""
    port = free_port()
    process = _serve(test_database, port, workers=2)
    try:
        wait_healthy(process, port)
        url = f"ws://127.0.0.1:{port}/graphql"
        async with contextlib_stack() as stack:
            clients = []
            for _ in range(8):
                client = await stack.enter_async_context(WsClient.opened(url))
                await client.init({"token": org_a.tokens["viewer"], "organization": org_a.slug})
                await client.subscribe("t", TASK_CHANGED, {"project": org_a.project})
                clients.append(client)
            await asyncio.sleep(1.0)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                response = await http.post(
                    "/graphql",
                    json={
                        "query": UPDATE_TASK,
                        "variables": {"id": org_a.task(0), "title": "Seen by all"},
                    },
                    headers={
                        "Authorization": f"Bearer {org_a.tokens['member']}",
                        "X-Organization": org_a.slug,
                    },
                )
                assert response.status_code == 200, response.text
            for client in clients:
                got = _next(await client.receive(wait=10), "t")["data"]["taskChanged"]
                assert got["task"]["title"] == "Seen by all"
    finally:
        output = stop(process)
    assert "Traceback" not in output


def _serve(database: ScratchDatabase, port: int, workers: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "api.cli", "serve", "--port", str(port), "--no-demo"],
        env={**database.env(), "TASKQL_WORKERS": str(workers)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
