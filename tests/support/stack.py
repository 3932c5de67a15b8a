"""A whole SIMS on loopback for integration tests: NATS, worker, web, Twilio-like and SMTP servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from handlers.http import create_app
from handlers.serve import sweep_forever
from handlers.worker import build_broker
from sims.adapters.commands import submit
from sims.adapters.nats_server import NatsServer, free_port
from sims.bootstrap import Runtime, connect_runtime
from sims.config import Settings
from sims.messages import RaiseIncident
from tests.support.smtp_server import SmtpServer
from tests.support.twilio_server import TwilioServer

RAISE = {"actor": "duty-officer", "type": "stabbing", "level": "1", "occurred_at": "2026-11-30T21:40:00Z",
         "ward": "Peckham", "location": "Rye Lane, near the station", "outline": "A young man was stabbed",
         "restricted": "Victim: Jordan Smith, 17, of 12 Acacia Road"}
SECRET_WORDS = ("Jordan", "Smith", "Acacia")


class Stack:
    """Handles on every running part, and helpers to wait for what the worker does."""

    def __init__(self, rt: Runtime, twilio: TwilioServer, smtp: SmtpServer, http_url: str) -> None:
        self.rt, self.twilio, self.smtp, self.http_url = rt, twilio, smtp, http_url

    async def run(self, command: Any) -> dict[str, Any]:
        return await submit(self.rt.nc, self.rt.js, self.rt.kv, command)

    async def raise_incident(self, **overrides: Any) -> dict[str, Any]:
        result = await submit(self.rt.nc, self.rt.js, self.rt.kv, RaiseIncident.model_validate({**RAISE, **overrides}))
        assert result["ok"], result
        return result

    async def wait_for(self, condition: Callable[[], Any], timeout: float = 15.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            value = condition()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return
            await asyncio.sleep(0.05)
        raise AssertionError("condition not met in time")

    async def deliveries(self, incident_id: str) -> list[dict[str, Any]]:
        return await self.rt.notifications.deliveries(incident_id)

    async def settled(self, incident_id: str, count: int) -> list[dict[str, Any]]:
        async def done() -> bool:
            found = await self.deliveries(incident_id)
            return len(found) >= count and all(d["status"] not in ("pending", "retrying") for d in found)
        await self.wait_for(done)
        return await self.deliveries(incident_id)


async def start_stack(nats_server: NatsServer, twilio_server: TwilioServer, smtp_server: SmtpServer,
                      tmp_path: Path, protocol: Path | None = None, sweep: bool = False,
                      port: int | None = None, nats_roles: bool = False,
                      **overrides: Any) -> tuple[Stack, Callable[[], Any]]:
    """Start worker and web over `nats_server`; returns the stack and an async stop function.

    `nats_roles`: the server runs with the roles' NKeys (seeds under `<tmp>/data/nats`, see
    `nats_auth`): the admin sets up streams, the worker and the web connect as themselves, and the
    stack's runtime is the web's.
    """
    port = port or free_port()
    extra: dict[str, Any] = {"protocol": protocol} if protocol else {}
    extra.update(overrides)
    settings = Settings(
        data_dir=tmp_path / "data", public_base_url=f"http://127.0.0.1:{port}", http_port=port,
        twilio_account_sid=twilio_server.account_sid, twilio_auth_token=twilio_server.auth_token,
        twilio_from="+447700900999", twilio_api_base=twilio_server.base_url,
        smtp_host="127.0.0.1", smtp_port=smtp_server.port, smtp_tls="none", smtp_from="sims@example.org",
        link_secrets="k:test-secret-for-links", **extra)
    if nats_roles:
        from handlers.serve import prepare_nats

        await prepare_nats(settings, nats_server.url)
        rt = await connect_runtime(settings, nats_server.url, "test-worker", role="worker", setup=False)
        web = await connect_runtime(settings, nats_server.url, "test-web", role="web", setup=False)
    else:
        rt = web = await connect_runtime(settings, nats_server.url, "test")
    rt.notifications.retry_base = 0.05
    broker = build_broker(rt, nats_server.url)
    await broker.start()
    server = uvicorn.Server(uvicorn.Config(create_app(web), host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off", timeout_graceful_shutdown=3))
    task = asyncio.create_task(server.serve())
    sweeping = asyncio.Event()
    sweeper = asyncio.create_task(sweep_forever(rt, every=0.2, stop=sweeping)) if sweep else None
    while not server.started:
        await asyncio.sleep(0.02)

    async def stop() -> None:
        if sweeper:
            sweeping.set()
            await asyncio.wait_for(sweeper, 15)
        server.should_exit = True
        await task
        await broker.stop()
        await rt.close()
        if web is not rt:
            await web.close()

    return Stack(web, twilio_server, smtp_server, f"http://127.0.0.1:{port}"), stop


def protocol_without_steps(tmp_path: Path) -> Path:
    """The demo protocol with no tasks, for tests about the notices alone."""
    from sims.protocol_config import DEFAULT_PROTOCOL

    text = DEFAULT_PROTOCOL.read_text()
    path = tmp_path / "protocol-no-steps.yaml"
    path.write_text(text[:text.index("\nsteps:")] + "\nsteps: []\n")
    return path


@pytest.fixture
async def stack(nats_server: NatsServer, twilio_server: TwilioServer, smtp_server: SmtpServer,
                tmp_path: Path) -> AsyncIterator[Stack]:
    """SIMS with the demo protocol's notices but no tasks."""
    started, stop = await start_stack(nats_server, twilio_server, smtp_server, tmp_path,
                                      protocol=protocol_without_steps(tmp_path))
    yield started
    await stop()


@pytest.fixture
async def full_stack(nats_server: NatsServer, twilio_server: TwilioServer, smtp_server: SmtpServer,
                     tmp_path: Path) -> AsyncIterator[Stack]:
    """SIMS with the demo protocol's tasks, and the timer sweeper running."""
    started, stop = await start_stack(nats_server, twilio_server, smtp_server, tmp_path, sweep=True)
    yield started
    await stop()
