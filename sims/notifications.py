"""Use cases of notification: plan messages for an event, send one, record a provider's report.

Work items travel on the `SIMS_OUTBOX` work queue; delivery records live in KV `sims_deliveries`
(`d.<message key>`), the people told per incident in `told.<incident>`, Twilio SIDs in `sid.<sid>`.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

import structlog

from sims import protocol
from sims.directory import Channel, Contact, Directory
from sims.links import Binding, check, link_id_for, mint, parse
from sims import tasks as tasks_mod
from sims.messages import DraftBriefing, EscalateTask, Event, EventType, Transition, Trigger
from sims.model import Incident, Task
from sims.notify import PROVIDER_TOOK, Delivery, Kind, Status, advance, fallback, kinds_for, message_key
from sims.ports import Accepted, AuditLog, Clock, DeliveryFailed, EmailSender, KeyValue, OutgoingEmail, OutgoingSms, SmsSender
from sims.protocol_config import ProtocolConfig
from sims.rendering import Renderer
from sims.routing import recipients_for
from sims.services import IncidentService
from sims.views import BriefingExtra, ClosureExtra, RecipientView, SharedView, StandDownExtra, TaskExtra, UpdateExtra

log = structlog.get_logger("sims.notify")
BUCKET = "sims_deliveries"
MAX_ATTEMPTS = 8


class WorkQueue(Protocol):
    async def enqueue(self, delivery: Delivery) -> None:
        """Put a work item on its channel's queue; the same key twice is stored once."""
        ...


class UnknownMessage(Exception):
    """A delivery report for a message whose send is not recorded yet (or never was)."""


class Retry(Exception):
    """A transient failure: send again after `delay` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        super().__init__(f"retry in {delay:.1f}s")


def backoff(attempt: int, retry_after: float | None = None, base: float = 1.0, cap: float = 300.0) -> float:
    """Exponential backoff with full jitter, never sooner than the provider asked."""
    delay = random.uniform(base, min(cap, base * 2 ** attempt))
    return max(delay, retry_after or 0.0)


class RateLimiter:
    """A token bucket per provider: `rate` messages a second (0: unlimited), waiting without blocking others."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        if self.rate <= 0:
            return
        async with self._lock:
            now = asyncio.get_running_loop().time()
            slot = max(now, self._next)
            self._next = slot + 1.0 / self.rate
        if slot > now:
            await asyncio.sleep(slot - now)


@dataclass
class NotificationService:
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

    # ---- planning -------------------------------------------------------------------------
    async def on_event(self, event: Event) -> list[Delivery]:
        """Enqueue the messages `event` causes (idempotent: keys de-duplicate)."""
        incident, _seq, events = await self.incidents.load(event.incident_id)
        position = next((i for i, e in enumerate(events) if e.command_id == event.command_id and e.type == event.type), None)
        before = protocol.replay(events[:position]) if position else None
        kind = kinds_for(event, was_gold=bool(before and before.gold))
        if kind is None:
            return []
        if kind is Kind.TASK:
            return await self._task_messages(incident, event)
        told = await self.kv.get(BUCKET, f"told.{incident.id}") or {}
        revision, extra = 1, self._extra(kind, event, incident)
        if kind is Kind.HOLDING:
            people = [(r.contact, r.channels[0]) for r in recipients_for(incident, self.directory, self.protocol)
                      if r.contact.id not in told]
        elif kind is Kind.BRIEFING:  # elected members, on every channel they have: SMS and email
            revision = int(event.data["version"])
            members = set(self.protocol.member_roles)
            people = [(r.contact, channel) for r in recipients_for(incident, self.directory, self.protocol)
                      if members & set(r.roles) for channel in r.channels if channel is not Channel.WHATSAPP]
        else:
            revision = int(event.data.get("number", 1))
            people = [(c, c.channels[0]) for c in (self.directory.get(i) for i in told) if c is not None]
        deliveries = list(await asyncio.gather(*(self._prepare(incident, kind, contact, channel, extra, (), revision)
                                                 for contact, channel in people)))
        if kind in (Kind.HOLDING, Kind.BRIEFING) and self.timers is not None:
            due = self.clock.now() + self.protocol.follow_up
            await asyncio.gather(*(self.timers.set(f"f.{incident.id}.{kind.value}.{revision}.{d.contact_id}", due, {
                "type": "follow_up", "incident": incident.id, "kind": kind.value, "revision": revision,
                "person": d.contact_id, "channel": d.channel.value}) for d in deliveries))
        await asyncio.gather(*(self.queue.enqueue(d) for d in deliveries))  # in flight together: first sends start sooner
        await self._mark_told(incident.id, [(d.contact_id, d.key) for d in deliveries])
        await self.audit.append(chain=incident.id, actor="sims", incident_id=incident.id, action="notify.planned",
                                outcome=f"{len(deliveries)} {kind.value} message(s) queued",
                                detail={"keys": [d.key for d in deliveries]})
        if event.type is EventType.RAISED:
            await self.incidents.handle(Transition(command_id=f"notify-{incident.id}", actor="sims",
                                                   incident=incident.id, trigger=Trigger.START_NOTIFYING))
            draft = self.renderer.default_talking_points(SharedView.of(incident))
            await self.incidents.handle(DraftBriefing(command_id=f"briefing-{incident.id}", actor="sims",
                                                      incident=incident.id, talking_points=draft))
        log.info("notify.planned", incident_id=incident.id, kind=kind.value, messages=len(deliveries))
        return deliveries

    async def _mark_told(self, incident_id: str, entries: list[tuple[str, str]]) -> None:
        told = await self.kv.get(BUCKET, f"told.{incident_id}") or {}
        for contact_id, key in entries:
            told.setdefault(contact_id, [])
            if key not in told[contact_id]:
                told[contact_id].append(key)
        await self.kv.put(BUCKET, f"told.{incident_id}", told)

    async def _task_messages(self, incident: Incident, event: Event) -> list[Delivery]:
        """Tell each owner of their task (and set its timers); on decline or escalation, the next person."""
        plans: list[tuple[Task, Contact, str, str]] = []  # task, person, revision, title
        if event.type is EventType.TASKS_PLANNED:
            for data in event.data["tasks"]:
                task = next(t for t in incident.tasks if t.id == data["id"])
                for level, due in tasks_mod.timers(task):
                    await self.timers.set(f"t.{incident.id}.{task.id}.{level}", due,
                                          {"incident": incident.id, "task": task.id, "level": level})
                owner = self.directory.get(task.owner) if task.owner else None
                if owner:
                    plans.append((task, owner, str(task.number), task.title))
        else:
            task = Task.model_validate(event.data["task"])
            action = event.data["action"]
            if action == "decline" and task.status.value == "declined":  # no deputy: the duty officer decides
                for officer in self.directory.by_role("duty_officer"):
                    plans.append((task, officer, f"{task.number}x{incident.version}",
                                  f"Declined, needs someone: {task.title}"))
            elif action == "decline":
                if event.data.get("previous_owner"):
                    await self.revoke_links(incident.id, task.id, event.data["previous_owner"])
                owner = self.directory.get(task.owner) if task.owner else None
                if owner:
                    plans.append((task, owner, f"{task.number}h{incident.version}", task.title))
            else:
                level = int(action.split("_")[1])
                owner = self.directory.get(task.owner) if task.owner else None
                if level == 1 and owner:
                    plans.append((task, owner, f"{task.number}r1", f"Reminder, now due: {task.title}"))
                elif level == 2 and owner and (deputy := self.directory.deputy_of(owner.id)):
                    plans.append((task, deputy, f"{task.number}e2", f"Not yet acknowledged by {owner.name}: {task.title}"))
                elif level >= 2:
                    for officer in self.directory.by_role("duty_officer"):
                        plans.append((task, officer, f"{task.number}e{level}", f"Escalated, not acknowledged: {task.title}"))
        deliveries = []
        for task, person, revision, title in plans:
            delivery = await self._prepare(incident, Kind.TASK, person, person.channels[0],
                                           TaskExtra(title=title, due_at=task.due_at), (), revision, task=task.id)
            await self.queue.enqueue(delivery)
            deliveries.append(delivery)
        await self._mark_told(incident.id, [(d.contact_id, d.key) for d in deliveries])
        if deliveries:
            await self.audit.append(chain=incident.id, actor="sims", incident_id=incident.id, action="notify.planned",
                                    outcome=f"{len(deliveries)} task message(s) queued",
                                    detail={"keys": [d.key for d in deliveries]})
        return deliveries

    async def fund_submitted(self, incident: Incident, claim: Any) -> list[Delivery]:
        """Send the VRU contact(s) a link to review the submitted claim."""
        deliveries = []
        for person in self.directory.by_role("vru_lead"):
            delivery = await self._prepare(
                incident, Kind.TASK, person, person.channels[0],
                TaskExtra(title="Critical Incident Fund claim to approve or decline",
                          due_at=self.clock.now() + timedelta(days=5)),
                (), f"fund{claim.version}", task="fund.review")
            await self.queue.enqueue(delivery)
            deliveries.append(delivery)
        await self._mark_told(incident.id, [(d.contact_id, d.key) for d in deliveries])
        return deliveries

    async def fund_deadlines(self, incident: Incident, claim: Any) -> None:
        """A timer per open deadline of the claim (submit, evaluation); they escalate like tasks."""
        from sims import fund

        if self.timers is None:
            return
        for deadline in fund.deadlines(claim):
            due = datetime.combine(deadline.due, datetime.min.time(), tzinfo=timezone.utc) + timedelta(hours=9)
            await self.timers.set(f"fd.{incident.id}.{deadline.name}", due, {
                "type": "fund_deadline", "incident": incident.id, "deadline": deadline.name,
                "due": deadline.due.isoformat()})

    async def fund_deadline_due(self, timer: dict[str, Any]) -> list[Delivery]:
        """A fund deadline passed: if still owed, tell the duty officers (and the audit trail)."""
        from sims import fund

        claim = await self.incidents.fund.claim(timer["incident"])
        if claim is None or timer["deadline"] not in {d.name for d in fund.deadlines(claim)}:
            return []
        incident, _seq, _events = await self.incidents.load(timer["incident"])
        what = "submit the claim" if timer["deadline"] == "submit" else "send the evaluation"
        deliveries = []
        for officer in self.directory.by_role("duty_officer"):
            delivery = await self._prepare(
                incident, Kind.TASK, officer, officer.channels[0],
                TaskExtra(title=f"Critical Incident Fund: overdue - {what}",
                          due_at=datetime.fromisoformat(timer["due"] + "T09:00:00+00:00")),
                (), f"fund-{timer['deadline']}", task="fund.deadline")
            await self.queue.enqueue(delivery)
            deliveries.append(delivery)
        await self.audit.append(chain=incident.id, actor="sims", incident_id=incident.id, action="fund.deadline_missed",
                                outcome=timer["deadline"], detail={"due": timer["due"]})
        return deliveries

    async def fire_due_timers(self) -> int:
        """Escalate tasks whose timers are due; each timer fires once across all workers."""
        fired = 0
        for key, payload, revision in await self.timers.due(self.clock.now()):
            if not await self.timers.claim(key, revision):
                continue
            if payload.get("type") == "follow_up":
                await self.follow_up(payload)
                fired += 1
                continue
            if payload.get("type") == "fund_deadline":
                await self.fund_deadline_due(payload)
                fired += 1
                continue
            result = await self.incidents.handle(EscalateTask(
                command_id=f"esc-{payload['incident']}-{payload['task']}-{payload['level']}", actor="sims",
                incident=payload["incident"], task=payload["task"], level=int(payload["level"])))
            await self.audit.append(chain=payload["incident"], actor="sims", incident_id=payload["incident"],
                                    action="timer.fired", outcome="escalated" if result.ok and result.version else "no change",
                                    detail={"timer": key})
            fired += 1
        return fired

    async def follow_up(self, timer: dict[str, Any]) -> Delivery | None:
        """Send an unacknowledged notice again on the person's next channel; nothing if they acknowledged."""
        incident, _seq, events = await self.incidents.load(timer["incident"])
        person = self.directory.get(timer["person"])
        kind = Kind(timer["kind"])
        if (person is None or f"{kind.value}:{person.id}" in incident.acknowledged
                or incident.state.value in ("closed", "stood_down")):
            return None
        others = [c for c in person.channels if c.value != timer["channel"]]
        if not others:
            return None
        cause = _cause(events, kind, int(timer["revision"]))
        extra = self._extra(kind, cause, incident) if cause else None
        delivery = await self._prepare(incident, kind, person, others[0], extra, (), f"{timer['revision']}f")
        await self.queue.enqueue(delivery)
        await self.audit.append(chain=incident.id, actor="sims", incident_id=incident.id, action="message.follow_up",
                                outcome=f"{person.id} by {others[0].value}", detail={"key": delivery.key})
        return delivery

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
            email = self.renderer.render_email(kind.value, view, person, link, extra)
            return Delivery(**common, subject=email.subject, body=email.text, html=email.html)
        sms = self.renderer.render_sms(kind.value, view, person, link, extra)
        return Delivery(**common, body=sms.body)

    async def _link(self, incident: Incident, kind: Kind, contact: Contact, key: str, task: str | None = None) -> str:
        kid, secret = self.link_secret
        link_id = link_id_for(key)
        binding = Binding(incident_id=incident.id, task=task or f"msg.{kind.value}", person=contact.id,
                          expires_at=self.clock.now() + self.link_ttl, kid=kid)
        stored = await self.kv.get("sims_links", link_id)
        if stored:
            binding = Binding(**{**stored, "expires_at": datetime.fromisoformat(stored["expires_at"])})
        else:
            await self.kv.put("sims_links", link_id, {"incident_id": binding.incident_id, "task": binding.task,
                                                      "person": binding.person, "kid": kid,
                                                      "expires_at": binding.expires_at.isoformat()})
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
        found = await self.kv.entries("sims_links")  # type: ignore[attr-defined]
        count = 0
        for link_id, stored in found.items():
            if (stored["incident_id"], stored["task"], stored["person"]) == (incident_id, task, person) and not stored.get("revoked"):
                await self.kv.put("sims_links", link_id, {**stored, "revoked": True})
                count += 1
        return count

    # ---- sending --------------------------------------------------------------------------
    async def send(self, delivery: Delivery, attempt: int) -> Status:
        """Send one work item once; Retry for a transient failure, fallback after a permanent one."""
        record = await self.kv.get(BUCKET, f"d.{delivery.key}") or {}
        current = Status(record.get("status", Status.PENDING))
        if current in PROVIDER_TOOK or current in (Status.FAILED, Status.UNDELIVERED):
            return current  # a redelivered work item: it was handled already
        sender = self.senders[delivery.channel]
        limiter = self.limiters.setdefault(sender.name, RateLimiter(0))
        await limiter.wait()
        try:
            if delivery.channel is Channel.EMAIL:
                accepted = await sender.send(OutgoingEmail(  # type: ignore[arg-type]
                    key=delivery.key, to=delivery.to, subject=delivery.subject, text=delivery.body,
                    html=delivery.html, message_id=f"<{delivery.key}@sims>"))
            else:
                to = f"whatsapp:{delivery.to}" if delivery.channel is Channel.WHATSAPP else delivery.to
                accepted = await sender.send(OutgoingSms(  # type: ignore[arg-type]
                    key=delivery.key, to=to, body=delivery.body,
                    status_callback=f"{self.base_url}/hooks/twilio/status"))
        except DeliveryFailed as failure:
            return await self._failed(delivery, failure, attempt, record)
        await self._accepted(delivery, accepted, attempt, record)
        return Status.ACCEPTED

    async def _accepted(self, delivery: Delivery, accepted: Accepted, attempt: int, record: dict[str, Any]) -> None:
        now = self.clock.now()
        if accepted.provider_id.isalnum():
            await self.kv.put(BUCKET, f"sid.{accepted.provider_id}", delivery.key)

        def merge(old: dict[str, Any] | None) -> dict[str, Any]:
            old = old or {}
            status = advance(Status(old.get("status", Status.PENDING)), Status.ACCEPTED)
            return {**self._record(delivery, old), "status": status.value, "provider": accepted.provider,
                    "provider_id": accepted.provider_id, "attempts": attempt, "accepted_at": now.isoformat(),
                    "updated_at": now.isoformat(), "error": None}

        await self.kv.update(BUCKET, f"d.{delivery.key}", merge)
        await self.audit.append(chain=f"{delivery.incident_id}.{delivery.contact_id}", actor="sims", incident_id=delivery.incident_id,
                                action="message.accepted", outcome=accepted.provider,
                                detail={"key": delivery.key, "provider_id": accepted.provider_id, "attempt": attempt})
        log.debug("message.accepted", key=delivery.key, provider=accepted.provider)

    def _record(self, delivery: Delivery, record: dict[str, Any]) -> dict[str, Any]:
        return {**record, "key": delivery.key, "incident_id": delivery.incident_id, "kind": delivery.kind.value,
                "task": delivery.task,
                "contact_id": delivery.contact_id, "channel": delivery.channel.value, "to": delivery.to,
                "queued_at": record.get("queued_at") or delivery.created_at.isoformat()}

    async def _failed(self, delivery: Delivery, failure: DeliveryFailed, attempt: int,
                      record: dict[str, Any]) -> Status:
        now = self.clock.now().isoformat()
        final = not failure.transient or attempt >= MAX_ATTEMPTS
        status = Status.FAILED if final else Status.RETRYING
        await self.kv.put(BUCKET, f"d.{delivery.key}", {
            **self._record(delivery, record), "status": status.value, "provider": failure.provider,
            "attempts": attempt, "error": f"{failure.code}: {failure.message}", "updated_at": now})
        await self.audit.append(chain=f"{delivery.incident_id}.{delivery.contact_id}", actor="sims", incident_id=delivery.incident_id,
                                action="message.failed" if final else "message.retrying",
                                outcome=f"{failure.provider} {failure.code}",
                                detail={"key": delivery.key, "attempt": attempt, "transient": failure.transient,
                                        "error": failure.message[:300]})
        if not final:
            raise Retry(backoff(attempt, failure.retry_after, base=self.retry_base))
        log.warning("message.failed", key=delivery.key, code=failure.code, attempts=attempt)
        await self.fall_back(delivery)
        return Status.FAILED

    async def fall_back(self, delivery: Delivery) -> Delivery | None:
        """Queue the same message on the person's next channel, else to their deputy; audit either way."""
        nxt = fallback(delivery, self.directory)
        if nxt is None:
            await self.audit.append(chain=f"{delivery.incident_id}.{delivery.contact_id}", actor="sims", incident_id=delivery.incident_id,
                                    action="message.unreachable", outcome="no channel or deputy left",
                                    detail={"key": delivery.key, "tried": list(delivery.tried)})
            return None
        contact, channel = nxt
        incident, _seq, events = await self.incidents.load(delivery.incident_id)
        revision = delivery.key.rsplit(".", 1)[1]
        tried = (*delivery.tried, f"{delivery.contact_id}:{delivery.channel.value}")
        if delivery.kind is Kind.TASK:
            task = next(t for t in incident.tasks if t.id == delivery.task)
            extra: Any = TaskExtra(title=task.title, due_at=task.due_at)
        else:
            cause = _cause(events, delivery.kind, int(revision) if revision.isdigit() else 1)
            extra = self._extra(delivery.kind, cause, incident) if cause else None
        replacement = await self._prepare(incident, delivery.kind, contact, channel, extra, tried, revision,
                                          task=delivery.task)
        await self.queue.enqueue(replacement)
        await self._mark_told(incident.id, [(contact.id, replacement.key)])
        await self.audit.append(chain=f"{delivery.incident_id}.{delivery.contact_id}", actor="sims", incident_id=delivery.incident_id,
                                action="message.fallback", outcome=f"{contact.id} by {channel.value}",
                                detail={"from": delivery.key, "to": replacement.key})
        return replacement

    # ---- provider reports -----------------------------------------------------------------
    async def on_status(self, provider_id: str, reported: str, error_code: str | None) -> Status | None:
        """Record a delivery report; statuses never go backwards; undelivered/failed fall back once."""
        key = await self.kv.get(BUCKET, f"sid.{provider_id}")
        if not key:
            raise UnknownMessage(provider_id)
        try:
            status = Status(reported)
        except ValueError:
            return None
        seen: dict[str, Status] = {}

        def merge(old: dict[str, Any] | None) -> dict[str, Any]:
            old = old or {}
            seen["current"] = current = Status(old.get("status", Status.ACCEPTED))
            history = [*old.get("history", []), {"status": reported, "at": self.clock.now().isoformat(),
                                                 "error_code": error_code}]
            return {**old, "status": advance(current, status).value, "history": history,
                    "updated_at": self.clock.now().isoformat()}

        record = await self.kv.update(BUCKET, f"d.{key}", merge)
        current, new = seen["current"], Status(record["status"])
        await self.audit.append(chain=f"{record['incident_id']}.{record['contact_id']}", actor="twilio", incident_id=record["incident_id"],
                                action="message.status", outcome=f"{reported} -> {new.value}",
                                detail={"key": key, "provider_id": provider_id, "error_code": error_code})
        if new is not current and new in (Status.UNDELIVERED, Status.FAILED):
            await self.fall_back(Delivery(key=key, incident_id=record["incident_id"], reference="",
                                          kind=Kind(record["kind"]), contact_id=record["contact_id"],
                                          channel=Channel(record["channel"]), to=record["to"],
                                          created_at=self.clock.now(), task=record.get("task", "")))
        return new

    async def sweep(self, incidents: list[Incident]) -> list[str]:
        """Confirm 'notified' for incidents whose every message the providers took (or failed over)."""
        confirmed = []
        for incident in incidents:
            if incident.state.value != "notifying":
                continue
            records = await self.deliveries(incident.id)
            waiting = [r for r in records if Status(r["status"]) in (Status.PENDING, Status.RETRYING)]
            if records and not waiting:
                result = await self.incidents.handle(Transition(
                    command_id=f"notified-{incident.id}", actor="sims", incident=incident.id,
                    trigger=Trigger.CONFIRM_NOTIFIED, reason=f"{len(records)} message(s) handed to providers"))
                if result.ok:
                    confirmed.append(incident.id)
        return confirmed

    def briefing_preview(self, incident: Incident, version: int | None = None) -> dict[str, Any]:
        """The members' briefing as a member would get it (email and SMS), for the draft or a version."""
        number = version or len(incident.briefings)
        points = incident.briefings[number - 1] if 1 <= number <= len(incident.briefings) else ""
        view = SharedView.of(incident)
        person = RecipientView(name="Councillor", salutation="Councillor", roles=("ward_councillor",))
        link = f"{self.base_url}/l/preview"
        email = self.renderer.render_email("briefing", view, person, link, BriefingExtra(talking_points=points))
        sms = self.renderer.render_sms("briefing", view, person, link, BriefingExtra(talking_points=points))
        return {"version": number, "versions": len(incident.briefings), "approved": incident.briefing_approved,
                "talking_points": points, "subject": email.subject, "text": email.text, "html": email.html,
                "sms": sms.body, "sms_segments": sms.segments.segments}

    async def deliveries(self, incident_id: str) -> list[dict[str, Any]]:
        """Every message of an incident with its status, for `sims status` and the API."""
        found = await self.kv.entries(BUCKET, f"d.{incident_id}.>")  # type: ignore[attr-defined]
        return sorted(found.values(), key=lambda r: (r.get("queued_at", ""), r["key"]))


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


__all__ = ["NotificationService", "Retry", "RateLimiter", "backoff", "MAX_ATTEMPTS", "Event"]
