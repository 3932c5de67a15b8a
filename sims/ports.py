"""Ports: what the services need from the outside world, as Protocols. Adapters implement them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class OutgoingSms:
    """One SMS (or WhatsApp, with `whatsapp:` addresses) to one person; `key` is its idempotency key."""

    key: str
    to: str
    body: str
    status_callback: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class OutgoingEmail:
    """One email to one person; `message_id` is stable for the same `key`."""

    key: str
    to: str
    subject: str
    text: str
    html: str
    message_id: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Accepted:
    """The provider took the message: `provider_id` is its id there (Twilio SID, Message-ID...)."""

    provider: str
    provider_id: str
    status: str = "accepted"


class DeliveryFailed(Exception):
    """A send failed; `transient` says whether trying again later may work."""

    def __init__(self, *, provider: str, transient: bool, code: str, message: str,
                 retry_after: float | None = None) -> None:
        self.provider = provider
        self.transient = transient
        self.code = code
        self.message = message
        self.retry_after = retry_after
        super().__init__(f"{provider} {'transient' if transient else 'permanent'} failure {code}: {message}")


class SmsSender(Protocol):
    name: str

    async def send(self, sms: OutgoingSms) -> Accepted:
        """Send one message or raise DeliveryFailed."""
        ...

    async def close(self) -> None: ...


class EmailSender(Protocol):
    name: str

    async def send(self, email: OutgoingEmail) -> Accepted:
        """Send one email or raise DeliveryFailed."""
        ...

    async def close(self) -> None: ...
