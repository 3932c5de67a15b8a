"""Async pytest fixtures for the local delivery servers; import the ones a test module uses.

    from tests.support.fixtures import smtp_server, twilio_server  # noqa: F401
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from .smtp_server import SmtpServer
from .twilio_server import TwilioServer, WebhookReceiver


@pytest_asyncio.fixture
async def twilio_server() -> AsyncIterator[TwilioServer]:
    """A Twilio-like Messages API on 127.0.0.1 (`.base_url`, `.account_sid`, `.auth_token`)."""
    async with TwilioServer(seed=1) as server:
        yield server


@pytest_asyncio.fixture
async def webhook_receiver() -> AsyncIterator[WebhookReceiver]:
    """An HTTP endpoint that records the status callbacks it receives."""
    receiver = await WebhookReceiver().start()
    yield receiver
    await receiver.stop()


@pytest_asyncio.fixture
async def smtp_server() -> AsyncIterator[SmtpServer]:
    """aiosmtpd on 127.0.0.1 with a RecordingHandler (`.handler`) whose answers can be switched."""
    server = await SmtpServer().start()
    yield server
    await server.stop()
