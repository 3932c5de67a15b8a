"""Timers: task escalation, follow-ups of unacknowledged notices, fund deadlines; each fires once."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any

from sims.messages import EscalateTask
from sims.model import Incident
from sims.notifications.core import NotificationCore, _cause
from sims.notify import Delivery, Kind
from sims.views import TaskExtra


class Timers(NotificationCore):
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
        now = self.clock.now()
        for key, payload, revision in await self.timers.due(now):
            lease = await self.timers.claim(key, revision, payload, now)
            if lease is None:
                continue  # another worker has it
            await self._fire(key, payload)  # a crash here: the lease runs out and the timer fires again
            await self.timers.done(key, lease)
            fired += 1
        return fired

    async def _fire(self, key: str, payload: dict[str, Any]) -> None:
        if payload.get("type") == "follow_up":
            await self.follow_up(payload)
        elif payload.get("type") == "fund_deadline":
            await self.fund_deadline_due(payload)
        else:
            result = await self.incidents.handle(EscalateTask(
                command_id=f"esc-{payload['incident']}-{payload['task']}-{payload['level']}", actor="sims",
                incident=payload["incident"], task=payload["task"], level=int(payload["level"])))
            await self.audit.append(chain=payload["incident"], actor="sims", incident_id=payload["incident"],
                                    action="timer.fired", outcome="escalated" if result.ok and result.version else "no change",
                                    detail={"timer": key})

    async def follow_up(self, timer: dict[str, Any]) -> list[Delivery]:
        """Send unacknowledged notices again on each person's next channel; nothing to who acknowledged."""
        people: dict[str, str] = timer.get("people") or {timer["person"]: timer["channel"]}  # or one person's
        incident, _seq, events = await self.incidents.load(timer["incident"])
        kind = Kind(timer["kind"])
        if incident.state.value in ("closed", "stood_down"):
            return []
        cause = _cause(events, kind, int(timer["revision"]))
        extra = self._extra(kind, cause, incident) if cause else None
        deliveries = []
        for person_id, channel in people.items():
            person = self.directory.get(person_id)
            if person is None or f"{kind.value}:{person.id}" in incident.acknowledged:
                continue
            others = [c for c in person.channels if c.value != channel]
            if others:
                deliveries.append(await self._prepare(incident, kind, person, others[0], extra, (),
                                                      f"{timer['revision']}f"))
        await asyncio.gather(*(self.queue.enqueue(d) for d in deliveries))
        for delivery in deliveries:
            await self.audit.append(chain=incident.id, actor="sims", incident_id=incident.id,
                                    action="message.follow_up",
                                    outcome=f"{delivery.contact_id} by {delivery.channel.value}",
                                    detail={"key": delivery.key})
        return deliveries
