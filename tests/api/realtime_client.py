"""A real uvicorn server in the test's event loop, and a real graphql-transport-ws client
(the ``websockets`` package) that speaks the protocol message by message."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from api.app import create_app
from api.realtime.hub import Hub
from api.settings import Settings

PROTOCOL = "graphql-transport-ws"


def free_port(first: int = 8700, last: int = 8799) -> int:
    """A free port in the range this suite may use."""
    for port in range(first, last + 1):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {first}-{last}")


@dataclass
class LiveServer:
    port: int
    hub: Hub
    http: httpx.AsyncClient

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/graphql"

    async def graphql(
        self, query: str, variables: dict[str, Any] | None = None, *, token: str, org: str
    ) -> dict[str, Any]:
        response = await self.http.post(
            "/graphql",
            json={"query": query, "variables": variables or {}},
            headers={"Authorization": f"Bearer {token}", "X-Organization": org},
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        assert "errors" not in body, body
        return body

    async def settled(self) -> None:
        """Until the hub has handled every notification it had received."""
        await asyncio.sleep(0.05)
        for _ in range(200):
            if self.hub._inbox.empty() and not self.hub._background:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def live_server(settings: Settings) -> AsyncIterator[LiveServer]:
    """uvicorn serving ``create_app(settings)`` on a real socket (the caller's pool)."""
    app = create_app(settings)
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        lifespan="on",
        log_level="warning",
        ws="websockets-sansio",
        ws_max_size=settings.taskql_ws_max_message_bytes,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        try:
            yield LiveServer(port, app.state.hub, http)
        finally:
            server.should_exit = True
            await task


class Closed(Exception):
    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"closed {code}: {reason}")
        self.code = code
        self.reason = reason


class WsClient:
    """One graphql-transport-ws connection. Answers the server's pings."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.received: list[dict[str, Any]] = []

    @classmethod
    @contextlib.asynccontextmanager
    async def opened(cls, url: str, **kwargs: Any) -> AsyncIterator[WsClient]:
        async with connect(url, subprotocols=[PROTOCOL], **kwargs) as connection:  # type: ignore[list-item]
            yield cls(connection)

    async def send(self, message: dict[str, Any]) -> None:
        await self.connection.send(json.dumps(message))

    async def init(self, payload: dict[str, Any] | None) -> dict[str, Any]:
        await self.send({"type": "connection_init", "payload": payload})
        return await self.receive()

    async def receive(self, wait: float = 5.0) -> dict[str, Any]:
        """The next message that is not a ping (pings are answered); Closed if it closes."""
        while True:
            try:
                text = await asyncio.wait_for(self.connection.recv(), wait)
            except ConnectionClosed as exc:
                rcvd = exc.rcvd
                raise Closed(rcvd.code if rcvd else None, rcvd.reason if rcvd else "") from None
            message: dict[str, Any] = json.loads(text)
            if message.get("type") == "ping":
                await self.send({"type": "pong"})
                continue
            self.received.append(message)
            return message

    async def subscribe(
        self, op_id: str, query: str, variables: dict[str, Any] | None = None
    ) -> None:
        await self.send(
            {"id": op_id, "type": "subscribe", "payload": {"query": query, "variables": variables}}
        )

    async def nothing_for(self, seconds: float) -> None:
        """Assert no message (other than pings) arrives within ``seconds``."""
        try:
            message = await self.receive(wait=seconds)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected message: {message}")

    async def closed(self, wait: float = 10.0) -> Closed:
        """Wait for the server to close the socket; its code and reason."""
        try:
            while True:
                await self.receive(wait=wait)
        except Closed as closed:
            return closed
