"""Ports: what the services need from the outside world, as Protocols. Adapters implement them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


class StaleSequence(Exception):
    """An append lost a race: the incident moved on since it was read (EventStore contract)."""


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


Recorder = Callable[[Accepted], Awaitable[None]]
"""Writes a message's acceptance; a sender with `records_on_commit` calls it at the moment of commit."""


class EmailSender(Protocol):
    name: str

    async def send(self, email: OutgoingEmail) -> Accepted:
        """Send one email or raise DeliveryFailed."""
        ...

    async def close(self) -> None: ...


class EventStore(Protocol):
    async def load(self, incident_id: str, after: int = 0) -> tuple[list[Any], int]:
        """Events of an incident stored after sequence `after`, and the last sequence (0: none)."""
        ...

    async def append(self, incident_id: str, events: list[Any], expected_seq: int, msg_id: str) -> int:
        """Append if the incident is still at `expected_seq`, else raise StaleSequence."""
        ...


class AuditLog(Protocol):
    async def append(self, *, chain: str, actor: str, incident_id: str | None, action: str, outcome: str,
                     detail: dict[str, Any] | None = None, at: datetime | None = None) -> Any: ...


class KeyValue(Protocol):
    async def get(self, bucket: str, key: str) -> Any | None: ...

    async def put(self, bucket: str, key: str, value: Any) -> None: ...

    async def increment(self, bucket: str, key: str) -> int: ...

    async def update(self, bucket: str, key: str, change: Any,
                     known: tuple[Any | None, int | None] | None = None) -> Any:
        """Compare-and-set read-modify-write: `change(old or None) -> new`; `known` skips the first read.
        A `change` that returns the very value it was given writes nothing."""
        ...

    async def get_entry(self, bucket: str, key: str) -> tuple[Any | None, int | None]:
        """The value and its revision; (None, None) when absent."""
        ...

    async def create(self, bucket: str, key: str, value: Any) -> bool:
        """Store only if absent; False if the key had a value."""
        ...

    async def entries(self, bucket: str, pattern: str = ">") -> dict[str, Any]: ...

    async def count(self, bucket: str, pattern: str = ">") -> int:
        """How many keys match `pattern` (deleted ones may be counted), without reading their values."""
        ...

    async def revision(self, bucket: str) -> int:
        """The bucket's last revision: unchanged means no key in it was written, deleted or purged."""
        ...
