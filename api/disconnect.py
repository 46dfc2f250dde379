"""Cancel a request's work when its client goes away.

A client that closes the socket used to leave its operation running: its statement went on
until it finished or hit the statement timeout, holding a pooled connection (and any locks)
for nobody (issue 13: three backends still busy 4 s after their clients left). This pure ASGI
middleware runs the rest of the application as a task and watches the connection once the
request's body has been read: on ``http.disconnect`` before the response is complete, it
cancels that task. asyncpg answers the cancellation of a running query by sending
PostgreSQL a cancel request, and the request's transaction is rolled back by the clean-up
that runs as the task unwinds (``api.middleware``), so the connection returns to the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_log = logging.getLogger("taskql.request")

#: Methods whose request carries no body: the watch starts at once.
_BODILESS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})


class CancelOnDisconnect:
    def __init__(self, app: ASGIApp, paths: tuple[str, ...] = ("/graphql",)) -> None:
        self.app = app
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        gone = asyncio.Event()
        complete = False
        body_read = scope["method"] in _BODILESS
        #: A bodiless request's app still gets its (empty) body message, once.
        empty_body_given = not body_read
        work: asyncio.Task[None] | None = None
        watcher: asyncio.Task[None] | None = None

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    gone.set()
                    if not complete and work is not None and not work.done():
                        _log.info("client went away: cancelling its request")
                        work.cancel()
                    return
                # Otherwise a bodiless request's (empty) body message: the app gets its own.

        def start_watching() -> None:
            nonlocal watcher
            if watcher is None:
                watcher = asyncio.create_task(watch())

        async def wrapped_receive() -> Message:
            nonlocal body_read, empty_body_given
            if not empty_body_given:
                empty_body_given = True
                return {"type": "http.request", "body": b"", "more_body": False}
            if body_read:
                start_watching()
                await gone.wait()
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.disconnect":
                gone.set()
            elif not message.get("more_body", False):
                body_read = True
                start_watching()
            return message

        async def wrapped_send(message: Message) -> None:
            nonlocal complete
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                complete = True
            await send(message)

        work = asyncio.ensure_future(self.app(scope, wrapped_receive, wrapped_send))
        if body_read:
            start_watching()
        try:
            await work
        except asyncio.CancelledError:
            if not gone.is_set():
                raise  # cancelled from outside (shutdown): not ours to swallow
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
