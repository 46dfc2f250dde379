"""Issue 16's real clients: Python's `gql` (websockets transport, graphql-transport-ws) and the
JavaScript `graphql-ws` client from npm, each against a real uvicorn server: a change made by
another user over HTTP arrives; nothing arrives from another tenant's identical-looking
project; the connection is closed after log-out, and after leaving the organization."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from gql import Client, GraphQLRequest
from gql.transport.exceptions import (
    TransportClosed,
    TransportConnectionFailed,
    TransportServerError,
)
from gql.transport.websockets import WebsocketsTransport

from api.settings import Settings
from tests.api.realtime_client import LiveServer, live_server
from tests.api.world import Org, add_fresh_member, seed_org, session_token

SUBSCRIPTION = "subscription($p: ID!) { taskChanged(projectId: $p) { action task { title } } }"
RENAME = """mutation($id: ID!, $t: String!) { updateTask(input: {id: $id, title: $t}) {
    task { id } errors { code } } }"""
GRAPHQL_WS = Path(__file__).resolve().parent / "js" / "graphql_ws_client.mjs"


@pytest.fixture
async def server(pool: asyncpg.Pool) -> AsyncIterator[LiveServer]:
    async with live_server(Settings(taskql_ws_reauth_seconds=30)) as live:
        yield live


@pytest.fixture
async def twins(pool: asyncpg.Pool) -> tuple[Org, Org]:
    """Two tenants whose projects and tasks look the same (seed_org names them by label:
    both get the same label here, so names and titles match)."""
    return await seed_org("twin"), await seed_org("twin")


async def _rename(server: LiveServer, org: Org, title: str) -> None:
    await server.graphql(
        RENAME, {"id": org.task(0), "t": title}, token=org.tokens["owner"], org=org.slug
    )


def _transport(server: LiveServer, token: str, org: Org) -> WebsocketsTransport:
    return WebsocketsTransport(
        url=server.ws_url,
        init_payload={"token": token, "organization": org.slug},
        subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
    )


async def test_gql_sees_its_tenants_change_and_never_the_twin_tenants(
    server: LiveServer, twins: tuple[Org, Org]
) -> None:
    mine, other = twins
    assert mine.project != other.project
    user_id, _ = await add_fresh_member(mine, "viewer")
    token = await session_token(user_id)
    async with Client(transport=_transport(server, token, mine)) as session:
        events = session.subscribe(
            GraphQLRequest(SUBSCRIPTION, variable_values={"p": mine.project})
        )
        first = asyncio.ensure_future(events.__anext__())
        await server.settled()
        await _rename(server, other, "Twin's change")  # same-looking project, other tenant
        await server.settled()
        await _rename(server, mine, "My change")
        event: dict[str, Any] = await asyncio.wait_for(first, 10)
        assert event == {"taskChanged": {"action": "UPDATED", "task": {"title": "My change"}}}
        # Another tenant subscribing to this tenant's project id sees nothing either.
        second = asyncio.ensure_future(events.__anext__())
        await _rename(server, mine, "Second change")
        assert (await asyncio.wait_for(second, 10))["taskChanged"]["task"] == {
            "title": "Second change"
        }


@pytest.mark.parametrize("how", ["log out", "leave"])
async def test_gql_is_closed_after_log_out_or_leaving(
    server: LiveServer, twins: tuple[Org, Org], how: str
) -> None:
    mine, _ = twins
    user_id, _ = await add_fresh_member(mine, "member")
    token = await session_token(user_id)
    caught: BaseException | None = None
    try:
        async with Client(transport=_transport(server, token, mine)) as session:
            events = session.subscribe(
                GraphQLRequest(SUBSCRIPTION, variable_values={"p": mine.project})
            )
            pending = asyncio.ensure_future(events.__anext__())
            await server.settled()
            if how == "log out":
                await server.graphql("mutation { logOut { ok } }", token=token, org=mine.slug)
            else:
                await server.graphql(
                    "mutation($u: ID!) { removeMember(input: {userId: $u}) { removedUserId } }",
                    {"u": mine.gid("User", user_id)},
                    token=token,
                    org=mine.slug,
                )
            await asyncio.wait_for(pending, 10)
    except (TransportClosed, TransportConnectionFailed, TransportServerError) as exc:
        caught = exc
    assert caught is not None, "the subscription outlived the session"
    chain = []
    while caught is not None:
        chain.append(str(caught))
        caught = caught.__cause__ or caught.__context__
    expected = "session ended" if how == "log out" else "not a member"
    assert any("4403" in text and expected in text for text in chain), chain


async def _node_client(
    folder: Path, server: LiveServer, token: str, org: Org
) -> asyncio.subprocess.Process:
    node = shutil.which("node")
    assert node is not None
    return await asyncio.create_subprocess_exec(
        node,
        str(folder / "client.mjs"),
        server.ws_url,
        token,
        org.slug,
        org.project,
        cwd=folder,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def _line(process: asyncio.subprocess.Process) -> dict[str, Any]:
    assert process.stdout is not None
    raw = await asyncio.wait_for(process.stdout.readline(), 15)
    assert raw, "the graphql-ws client ended without a line"
    line: dict[str, Any] = json.loads(raw)
    return line


async def test_graphql_ws_from_npm(
    server: LiveServer, twins: tuple[Org, Org], tmp_path: Path
) -> None:
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.fail("the graphql-ws client test needs Node.js and npm (the machine's)")
    install = await asyncio.create_subprocess_exec(
        npm,
        "install",
        "--silent",
        "--no-audit",
        "--no-fund",
        "graphql-ws@5.16.2",
        "ws@8",
        "graphql@16",
        cwd=tmp_path,
    )
    assert await asyncio.wait_for(install.wait(), 300) == 0
    shutil.copy(GRAPHQL_WS, tmp_path / "client.mjs")
    mine, other = twins
    user_id, _ = await add_fresh_member(mine, "viewer")
    token = await session_token(user_id)
    process = await _node_client(tmp_path, server, token, mine)
    try:
        assert await _line(process) == {"connected": True}
        await server.settled()
        await _rename(server, other, "Twin's change")
        await server.settled()
        await _rename(server, mine, "Seen by graphql-ws")
        event = await _line(process)
        assert event == {
            "next": {"taskChanged": {"action": "UPDATED", "task": {"title": "Seen by graphql-ws"}}},
            "errors": None,
        }
        await server.graphql("mutation { logOut { ok } }", token=token, org=mine.slug)
        closed = await _line(process)
        assert closed["closed"] == 4403
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
