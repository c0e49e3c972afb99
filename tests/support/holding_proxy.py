"""A loopback HTTP proxy that can hold an answer back.

The way a crash test puts a worker in the window between "the resource server did it" and "the
worker heard so".

Every request is forwarded to the upstream server; the first `hold` POST answers are recorded
and never delivered (the connection stays open until the proxy stops), and `held` is set once
one has been recorded upstream."""

from __future__ import annotations

import asyncio

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.temporal import free_port, wait_for

FORWARDED_HEADERS = ("authorization", "content-type", "idempotency-key")


class HoldingProxy:
    def __init__(self, upstream: str, *, hold: int = 1) -> None:
        self.upstream = upstream.rstrip("/")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.hold = hold
        self.posts: list[tuple[str, int]] = []  # (path, upstream status) of every POST forwarded
        self.held = asyncio.Event()
        self._release = asyncio.Event()
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def _forward(self, request: Request) -> Response:
        headers = {name: value for name, value in request.headers.items() if name in FORWARDED_HEADERS}
        async with httpx.AsyncClient(timeout=30) as http:
            answer = await http.request(
                request.method, self.upstream + request.url.path, headers=headers, content=await request.body()
            )
        if request.method == "POST":
            self.posts.append((request.url.path, answer.status_code))
            if self.hold > 0:
                self.hold -= 1
                self.held.set()
                await self._release.wait()  # the caller never hears back
        return Response(answer.content, status_code=answer.status_code, media_type=answer.headers.get("content-type"))

    async def __aenter__(self) -> HoldingProxy:
        app = Starlette(routes=[Route("/{path:path}", self._forward, methods=["GET", "POST"])])
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        server = self._server
        await wait_for(lambda: server.started, timeout=10, interval=0.01, what="the holding proxy to serve")
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None and self._task is not None
        self._release.set()
        self._server.should_exit = True
        await self._task
