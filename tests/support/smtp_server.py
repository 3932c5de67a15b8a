"""A local SMTP server (aiosmtpd) that records what it accepts; its answers can be switched per test.

    server = await SmtpServer().start()      # 127.0.0.1, free port: server.port
    server.handler.data_response = "451 4.3.0 Try again later"
    server.handler.rcpt_response = "550 5.1.1 No such user"
    server.handler.mail_response = "553 5.1.8 Sender rejected"
    await server.stop(); await server.start()  # down, then up again on the same port
    server.handler.messages[0].message["Subject"]
"""

from __future__ import annotations

import asyncio
import email
import email.policy
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, Self, cast

from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass(frozen=True, slots=True)
class Received:
    """One mail the server accepted: the envelope and the parsed message."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes
    message: EmailMessage
    peer: Any


class RecordingHandler:
    """aiosmtpd handler: records each accepted mail; `mail_response`/`rcpt_response`/`data_response`
    refuse instead."""

    def __init__(self) -> None:
        self.messages: list[Received] = []
        self.mail_response: str | None = None  # e.g. "553 5.1.8 Sender rejected"
        self.rcpt_response: str | None = None  # e.g. "550 5.1.1 No such user"
        self.data_response: str | None = None  # e.g. "451 4.3.0 Try again later"
        self.delay = 0.0
        self.received = asyncio.Event()
        self.in_data = self.most_in_data = 0  # ends of data being answered now, and the most at once

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          mail_options: list[str]) -> str:
        if self.mail_response:
            return self.mail_response
        envelope.mail_from = address  # what aiosmtpd does itself when a handler has no handle_MAIL
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        if self.rcpt_response:
            return self.rcpt_response
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.in_data += 1
        self.most_in_data = max(self.most_in_data, self.in_data)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
        finally:
            self.in_data -= 1
        if self.data_response:
            return self.data_response
        raw = cast(bytes, envelope.original_content or envelope.content)
        parsed = email.message_from_bytes(raw.replace(b"\r\n", b"\n"), policy=email.policy.default)
        self.messages.append(Received(mail_from=envelope.mail_from or "", rcpt_tos=tuple(envelope.rcpt_tos),
                                      raw=raw, message=parsed, peer=session.peer))
        self.received.set()
        return "250 2.0.0 Message accepted for delivery"


class SmtpServer:
    """aiosmtpd's SMTP protocol served with loop.create_server (Controller(port=0) does not work)."""

    def __init__(self, handler: RecordingHandler | None = None, port: int = 0) -> None:
        self.handler = handler or RecordingHandler()
        self.host = "127.0.0.1"
        self.port = port
        self.connections_made = 0
        self._server: asyncio.Server | None = None
        self._protocols: set[SMTP] = set()

    def _protocol(self) -> SMTP:
        protocol = SMTP(self.handler, hostname="sims-test.local", enable_SMTPUTF8=True, timeout=30)
        self._protocols.add(protocol)
        self.connections_made += 1
        return protocol

    async def start(self) -> Self:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, self.host, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def drop_connections(self) -> None:
        """Close every open client connection from the server side, as an idle timeout would."""
        for protocol in list(self._protocols):
            transport = protocol.transport
            if transport is not None and not transport.is_closing():
                transport.close()
        self._protocols.clear()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self.drop_connections()
            await self._server.wait_closed()
            self._server = None
            await asyncio.sleep(0)  # let the protocols see connection_lost

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
