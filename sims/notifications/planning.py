"""Planning: which messages an event causes, to whom, on which channel; queued once per key."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta
from typing import Any

from sims import protocol
from sims import tasks as tasks_mod
from sims.directory import Channel, Contact
from sims.messages import DraftBriefing, Event, EventType, Transition, Trigger
from sims.model import Incident, Task
from sims.notifications.core import BUCKET, NotificationCore, log
from sims.notify import Delivery, Kind, kinds_for
from sims.routing import recipients_for
from sims.views import BriefingExtra, RecipientView, SharedView, TaskExtra

# Messages prepared and queued at once. Each waits for its link record, then for its work item, and the
# store's group commit (sims.adapters.group_commit, up to 256 writes a batch) writes what waits together:
# the window is as many as one batch takes. With 32, 200 people took about 0.4 s to queue, in small
# batches; with 256, about 50 ms (the first still goes alone, at once); 512 was no faster at 2,000.
PLANNING_WINDOW = 256


class Planning(NotificationCore):
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

        window = asyncio.Semaphore(PLANNING_WINDOW)

        async def queued(contact: Contact, channel: Channel) -> Delivery:
            async with window:  # a few at a time, so the first work items are queued (and sent) at once
                delivery = await self._prepare(incident, kind, contact, channel, extra, (), revision)
                await self.queue.enqueue(delivery)
                return delivery

        deliveries = list(await asyncio.gather(*(queued(contact, channel) for contact, channel in people)))
        if kind in (Kind.HOLDING, Kind.BRIEFING) and self.timers is not None and deliveries:
            # One follow-up timer for everyone this event told (not one per person): a write per event.
            cause = hashlib.sha256(f"{event.command_id}|{event.type}".encode()).hexdigest()[:16]
            await self.timers.set(f"f.{incident.id}.{kind.value}.{revision}.{cause}",
                                  self.clock.now() + self.protocol.follow_up, {
                "type": "follow_up", "incident": incident.id, "kind": kind.value, "revision": revision,
                "people": {d.contact_id: d.channel.value for d in deliveries}})
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

