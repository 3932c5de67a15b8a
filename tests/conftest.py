"""Shared fixtures: real nats-server processes on free loopback ports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from sims.adapters.nats_server import NatsServer
from sims.bootstrap import Runtime, connect_runtime
from sims.config import Settings


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(store_dir=tmp_path / "nats").start()
    yield server
    server.stop()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", command_timeout=10.0)


@pytest.fixture
async def runtime(nats_server: NatsServer, settings: Settings) -> AsyncIterator[Runtime]:
    rt = await connect_runtime(settings, nats_server.url, "test")
    yield rt
    await rt.close()


@pytest.fixture
async def worker(runtime: Runtime, nats_server: NatsServer) -> AsyncIterator[Runtime]:
    """A running worker (FastStream subscribers) over `runtime`."""
    from handlers.worker import build_broker

    broker = build_broker(runtime, nats_server.url)
    await broker.start()
    yield runtime
    await broker.stop()
