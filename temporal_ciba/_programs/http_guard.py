"""What keeps slow clients from pinning an HTTP service: read deadlines, for the callback service and the codec server.

uvicorn has only a keep-alive timeout, which any byte resets: a client sending a header byte
every few seconds holds its connection for good. Both programs serve their app with
`GuardedH11Protocol` (a request head within the read timeout of the connection, or of the
previous response), wrap it in `BodyDeadline` (the body within the read timeout of its head,
else 408), and cap open connections with uvicorn's `limit_concurrency` (503 beyond it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, ClassVar

import h11
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

DEFAULT_READ_TIMEOUT = 10.0
# After an early answer, what the client is still sending is read and dropped, this much and
# this long at most, so that it reads the answer instead of a reset; then the connection closes.
LINGER_BYTES = 1024 * 1024
LINGER_SECONDS = 2.0


def late_body(seconds: float) -> Response:
    """The 408 BodyDeadline answers by default (OAuth's error members, as the callback answers)."""
    return JSONResponse(
        {"error": "invalid_request", "error_description": f"the body did not arrive within {seconds:g} s"},
        status_code=408,
    )


class _ReadTimeout(Exception):
    pass


class BodyDeadline:
    """ASGI middleware: the whole request body must arrive within `seconds` of its head (408).

    `answer(seconds)` is the 408 it sends, unless the app has started its response."""

    def __init__(self, app: ASGIApp, seconds: float, answer: Callable[[float], Response] = late_body) -> None:
        self.app = app
        self.seconds = seconds
        self.answer = answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + self.seconds
        started = False

        async def receive_in_time() -> Message:
            try:
                async with asyncio.timeout_at(deadline) as timeout:
                    return await receive()
            except TimeoutError:
                if timeout.expired():
                    raise _ReadTimeout from None
                raise

        async def send_tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive_in_time, send_tracked)
        except _ReadTimeout:
            if not started:
                await self.answer(self.seconds)(scope, receive, send)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with the read deadlines it lacks.

    uvicorn has only a keep-alive timeout, which any byte resets. Here the request head must
    arrive within `read_timeout` of the connection (or of the previous response), and a client
    answered before it finished sending its body is cut after LINGER_BYTES or LINGER_SECONDS.
    Use `with_read_timeout`."""

    read_timeout: ClassVar[float] = DEFAULT_READ_TIMEOUT
    # Bytes dropped since an early answer, while lingering (else None); connection_made sets it
    # first, through _disarm.
    _lingered: int | None

    @classmethod
    def with_read_timeout(cls, seconds: float) -> type[GuardedH11Protocol]:
        return type(cls.__name__, (cls,), {"read_timeout": seconds})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._cut)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._lingered = None

    def _await_head(self) -> None:
        self._arm(self.read_timeout)

    def _cut(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingered is not None:
            self._lingered += len(data)
            if self._lingered > LINGER_BYTES:
                self._disarm()
                self._cut()
                return
        cycle = self.cycle
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self.cycle is not cycle:
            self._disarm()  # a request head has arrived: the body deadline is BodyDeadline's
        elif self._lingered is not None and self.conn.their_state is not h11.SEND_BODY:
            self._await_head()  # the client finished the body it was sending

    def on_response_complete(self) -> None:
        cycle = self.cycle
        super().on_response_complete()
        if self.transport.is_closing() or self.cycle is not cycle:
            return  # closed, or a pipelined request has started
        if self.conn.their_state is h11.SEND_BODY:
            self._arm(LINGER_SECONDS)  # answered before the body was read
            self._lingered = 0
        else:
            self._await_head()
