"""What planning, sending and timers share: the service's ports, message preparation and personal links.

Delivery records live in KV `sims_deliveries` (`d.<message key>`), the people told per incident in
`told.<incident>`, Twilio SIDs in `sid.<sid>`; link records in `sims_links`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog

from sims.directory import Channel, Contact, Directory
from sims.links import Binding, check, link_id_for, mint, parse
from sims.messages import Event
from sims.model import Incident
from sims.notifications.retry import RateLimiter
from sims.notify import Delivery, Kind, kinds_for, message_key
from sims.ports import AuditLog, Clock, EmailSender, KeyValue, SmsSender
from sims.protocol_config import ProtocolConfig
from sims.rendering import Renderer
from sims.services import IncidentService
from sims.views import BriefingExtra, ClosureExtra, RecipientView, SharedView, StandDownExtra, UpdateExtra

log = structlog.get_logger("sims.notify")
BUCKET = "sims_deliveries"


class WorkQueue(Protocol):
    async def enqueue(self, delivery: Delivery) -> None:
        """Put a work item on its channel's queue; the same key twice is stored once."""
        ...


class UnknownMessage(Exception):
    """A delivery report for a message whose send is not recorded yet (or never was)."""


@dataclass
class NotificationCore:
    """The ports and settings of notification, and the helpers planning, sending and timers share."""

    incidents: IncidentService
    directory: Directory
    protocol: ProtocolConfig
    renderer: Renderer
    queue: WorkQueue
    kv: KeyValue
    audit: AuditLog
    clock: Clock
    senders: dict[Channel, SmsSender | EmailSender]
    link_secret: tuple[str, bytes]
    base_url: str
    keyring: dict[str, bytes] = field(default_factory=dict)  # every kid that still verifies
    timers: Any = None  # sims.adapters.jetstream.NatsTimers
    link_ttl: timedelta = timedelta(hours=72)
    retry_base: float = 1.0
    limiters: dict[str, RateLimiter] = field(default_factory=dict)


    async def _mark_told(self, incident_id: str, entries: list[tuple[str, str]]) -> None:
        """Add to the people told (compare-and-set: planning, fallbacks and timers may add at once)."""

        def add(old: dict[str, list[str]] | None) -> dict[str, list[str]]:
            told = {contact: list(keys) for contact, keys in (old or {}).items()}
            for contact_id, key in entries:
                if key not in told.setdefault(contact_id, []):
                    told[contact_id].append(key)
            return told

        await self.kv.update(BUCKET, f"told.{incident_id}", add)


    @staticmethod
    def _extra(kind: Kind, event: Event, incident: Incident) -> Any:
        """The kind's shareable extra text, from the event that caused the message."""
        if kind is Kind.STAND_DOWN:
            return StandDownExtra(reason=event.data.get("reason") or "The response has been stood down.")
        if kind is Kind.CLOSURE:
            return ClosureExtra(reason=event.data.get("reason") or "The incident has been closed.")
        if kind is Kind.BRIEFING:
            return BriefingExtra(talking_points=incident.briefings[int(event.data["version"]) - 1])
        if kind is Kind.UPDATE:
            return UpdateExtra(text=event.data["text"])
        return None

    async def _prepare(self, incident: Incident, kind: Kind, contact: Contact, channel: Channel,
                       extra: Any, tried: tuple[str, ...], revision: int | str = 1, task: str = "") -> Delivery:
        key = message_key(incident.id, kind, contact.id, channel, revision)
        link = await self._link(incident, kind, contact, key, task or None)
        view, person = SharedView.of(incident), RecipientView(name=contact.name, salutation=contact.name,
                                                              roles=contact.roles)
        common = dict(key=key, incident_id=incident.id, reference=incident.reference, kind=kind,
                      contact_id=contact.id, channel=channel, to=contact.address(channel), link=link,
                      exercise=incident.exercise, tried=tried, created_at=self.clock.now(), task=task)
        if channel is Channel.EMAIL:
            email = self.renderer.email_for(kind.value, view, person, link, extra)
            return Delivery(**common, subject=email.subject, body=email.text, html=email.html)
        sms = self.renderer.sms_for(kind.value, view, person, link, extra)
        return Delivery(**common, body=sms.body)

    async def _link(self, incident: Incident, kind: Kind, contact: Contact, key: str, task: str | None = None) -> str:
        kid, secret = self.link_secret
        link_id = link_id_for(key)
        binding = Binding(incident_id=incident.id, task=task or f"msg.{kind.value}", person=contact.id,
                          expires_at=self.clock.now() + self.link_ttl, kid=kid)
        fresh = {"incident_id": binding.incident_id, "task": binding.task, "person": binding.person, "kid": kid,
                 "expires_at": binding.expires_at.isoformat()}
        if not await self.kv.create("sims_links", link_id, fresh):  # one write; read only when planned before
            stored = await self.kv.get("sims_links", link_id)
            if stored:
                binding = Binding(**{**stored, "expires_at": datetime.fromisoformat(stored["expires_at"])})
        secret = self.keyring.get(binding.kid, secret)
        return f"{self.base_url}/l/{mint(secret, binding, link_id)}"

    async def open_link(self, token: str) -> Binding:
        """The binding of a genuine, live link; LinkRefused (forged, expired, revoked) otherwise."""
        _kid, link_id, _mac = parse(token)
        stored = await self.kv.get("sims_links", link_id)
        binding = None
        if stored:
            binding = Binding(incident_id=stored["incident_id"], task=stored["task"], person=stored["person"],
                              kid=stored["kid"], expires_at=datetime.fromisoformat(stored["expires_at"]))
        ring = self.keyring or {self.link_secret[0]: self.link_secret[1]}
        return check(ring, token, binding, self.clock.now(), revoked=bool(stored and stored.get("revoked")))

    async def revoke_links(self, incident_id: str, task: str, person: str) -> int:
        """Withdraw a person's links for a task (e.g. after it was handed to their deputy)."""
        found = await self.kv.entries("sims_links")
        count = 0
        for link_id, stored in found.items():
            if (stored["incident_id"], stored["task"], stored["person"]) == (incident_id, task, person) and not stored.get("revoked"):
                await self.kv.put("sims_links", link_id, {**stored, "revoked": True})
                count += 1
        return count



def _cause(events: list[Event], kind: Kind, revision: int) -> Event | None:
    """The event that made a message of `kind` (and revision), for re-rendering it on another channel."""
    for event in reversed(events):
        if kinds_for(event, was_gold=False) is kind:
            if kind is Kind.BRIEFING and int(event.data["version"]) != revision:
                continue
            if kind is Kind.UPDATE and int(event.data.get("number", 1)) != revision:
                continue
            return event
    return None

