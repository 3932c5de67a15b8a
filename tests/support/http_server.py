"""What the local fake HTTP servers share: an aiohttp app on a port of 127.0.0.1 (0: a free one), a client
session for the calls they make out (receipts, status callbacks), and the tasks making those calls."""

from __future__ import annotations

import asyncio
import socket
from abc import ABC, abstractmethod
from collections.abc import Coroutine
from typing import Any, ClassVar, Self

from aiohttp import ClientSession, ClientTimeout, web


async def serve(app: web.Application, host: str, port: int, *, backlog: int = 128,
                reuse_address: bool = True) -> tuple[web.AppRunner, int]:
    """Serve `app` on host:port; the runner (`cleanup()` stops it) and the port bound."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if reuse_address:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound: int = sock.getsockname()[1]
    await web.SockSite(runner, sock, backlog=backlog).start()
    return runner, bound


class LocalHttpServer(ABC):
    """Base of a fake server: `start` serves the routes `_routes` adds on `host`:`port` (0: a free port, set
    once bound); `_spawn` runs a call out in the background; `stop` cancels those and closes everything."""

    host: str
    port: int
    _backlog: ClassVar[int] = 128

    def __init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @abstractmethod
    def _routes(self, app: web.Application) -> None:
        """Add the server's routes to `app` (each fake server has its own)."""

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> Self:
        app = web.Application()
        self._routes(app)
        self._runner, self.port = await serve(app, self.host, self.port, backlog=self._backlog)
        self._session = ClientSession(timeout=ClientTimeout(total=5))
        return self

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
