"""Sending: one work item once, its record and audit; retries, fallback and provider reports."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from sims.directory import Channel
from sims.messages import Transition, Trigger
from sims.model import Incident
from sims.notifications.core import BUCKET, NotificationCore, UnknownMessage, _cause, log
from sims.notifications.retry import MAX_ATTEMPTS, RateLimiter, Retry, backoff
from sims.notify import PROVIDER_TOOK, Delivery, Kind, Status, advance, fallback
from sims.ports import Accepted, DeliveryFailed, OutgoingEmail, OutgoingSms
from sims.retention import without_addresses
from sims.views import TaskExtra


LOOKUP_MARGIN = timedelta(minutes=5)  # clock skew between us and the provider, when looking a message up


class OtherSend(Exception):
    """A provider's report for a copy of a message other than the one its record names."""


class Sending(NotificationCore):
    async def send(self, delivery: Delivery, attempt: int) -> Status:
        """Send one work item once; Retry for a transient failure, fallback after a permanent one.

        A redelivered item (`attempt` > 1) whose record does not say the provider took it is first
        looked up at the provider, when it can be asked (Twilio): a worker may have died between the
        provider accepting it and the record being written. Email cannot be asked; its exposure is
        bounded instead: the SMTP sender lets one email at a time be taken by the server and not yet
        recorded (`records_on_commit`), so a killed worker sends at most one email twice.
        """
        known = await self.kv.get_entry(BUCKET, f"d.{delivery.key}")
        current = Status((known[0] or {}).get("status", Status.PENDING))
        if current in PROVIDER_TOOK or current in (Status.FAILED, Status.UNDELIVERED):
            return current  # a redelivered work item: it was handled already
        sender = self.senders[delivery.channel]
        if delivery.channel is Channel.EMAIL:
            message: OutgoingEmail | OutgoingSms = OutgoingEmail(
                key=delivery.key, to=delivery.to, subject=delivery.subject, text=delivery.body,
                html=delivery.html, message_id=f"<{delivery.key}@sims>")
        else:
            to = f"whatsapp:{delivery.to}" if delivery.channel is Channel.WHATSAPP else delivery.to
            message = OutgoingSms(key=delivery.key, to=to, body=delivery.body,  # the key comes back signed
                                  status_callback=f"{self.base_url}/hooks/twilio/status?k={quote(delivery.key, safe='')}")
        lookup = getattr(sender, "find_accepted", None)
        recorded = False

        async def record(accepted: Accepted) -> None:
            nonlocal recorded
            if not recorded:
                recorded = True
                await self._accepted(delivery, accepted, attempt, known)

        try:
            if lookup and attempt > 1:
                found = await lookup(message, delivery.created_at - LOOKUP_MARGIN)
                if found is not None:
                    await self._accepted(delivery, found, attempt, known, found_at_provider=True)
                    return Status.ACCEPTED
            limiter = self.limiters.setdefault(sender.name, RateLimiter(0))
            await limiter.wait()
            if getattr(sender, "records_on_commit", False):  # SMTP: recorded before it takes another
                accepted = await sender.send(message, recorded=record)  # type: ignore[call-arg, arg-type]
            else:
                accepted = await sender.send(message)  # type: ignore[arg-type]
        except DeliveryFailed as failure:
            return await self._failed(delivery, failure, attempt, known[0] or {})
        await record(accepted)
        return Status.ACCEPTED

    async def _accepted(self, delivery: Delivery, accepted: Accepted, attempt: int,
                        known: tuple[Any, int | None], found_at_provider: bool = False) -> None:
        """Record and audit the acceptance, written together.

        No index from the provider's id to the key is written: a provider's report carries the key
        (Twilio: in the signed status-callback URL; Notify: as the message's `reference`).
        """
        now = self.clock.now()

        def merge(old: dict[str, Any] | None) -> dict[str, Any]:
            old = old or {}
            status = advance(Status(old.get("status", Status.PENDING)), Status.ACCEPTED)
            return {**self._record(delivery, old), "status": status.value, "provider": accepted.provider,
                    "provider_id": accepted.provider_id, "attempts": attempt, "accepted_at": now.isoformat(),
                    "updated_at": now.isoformat(), "error": None}

        detail = {"key": delivery.key, "provider_id": accepted.provider_id, "attempt": attempt}
        if found_at_provider:
            detail["found_at_provider"] = True  # taken before a worker died; not sent again
        await asyncio.gather(
            self.kv.update(BUCKET, f"d.{delivery.key}", merge, known),
            self.audit.append(chain=f"{delivery.incident_id}.{delivery.contact_id}", actor="sims",
                              incident_id=delivery.incident_id, action="message.accepted",
                              outcome=accepted.provider, detail=detail))
        log.debug("message.accepted", key=delivery.key, provider=accepted.provider, found=found_at_provider)

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
                                        "error": without_addresses(failure.message)[:300]})  # the trail is forever
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
    async def on_status(self, provider_id: str, reported: str, error_code: str | None,
                        key: str | None = None) -> Status | None:
        """Record a delivery report; statuses never go backwards; undelivered/failed fall back once.

        `key`: the message key the report carries; without one (a message sent before reports carried
        it) the key is looked up by the provider's id in `sid.<id>`.
        """
        key = key or await self.kv.get(BUCKET, f"sid.{provider_id}")
        if not key:
            raise UnknownMessage(provider_id)
        try:
            status = Status(reported)
        except ValueError:
            return None
        seen: dict[str, Status] = {}

        def merge(old: dict[str, Any] | None) -> dict[str, Any]:
            if not old or "key" not in old or not old.get("provider_id"):  # the send is not recorded yet:
                raise UnknownMessage(provider_id)                              # never make a bare record
            if old["provider_id"] != provider_id:
                raise OtherSend(provider_id)
            seen["current"] = current = Status(old.get("status", Status.ACCEPTED))
            history = [*old.get("history", []), {"status": reported, "at": self.clock.now().isoformat(),
                                                 "error_code": error_code}]
            return {**old, "status": advance(current, status).value, "history": history,
                    "updated_at": self.clock.now().isoformat()}

        try:
            record = await self.kv.update(BUCKET, f"d.{key}", merge)
        except OtherSend:  # a copy the record does not name (sent twice around a crash): not this record's
            log.warning("message.status_other_send", key=key, provider_id=provider_id, status=reported)
            return None
        current, new = seen["current"], Status(record["status"])
        await self.audit.append(chain=f"{record['incident_id']}.{record['contact_id']}", actor=str(record.get("provider") or "provider"), incident_id=record["incident_id"],
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
            # A record is written when a provider answers: every planned message must have one first.
            told = await self.kv.get(BUCKET, f"told.{incident.id}") or {}
            planned = {key for keys in told.values() for key in keys}
            if not planned or await self.kv.count(BUCKET, f"d.{incident.id}.>") < len(planned):
                continue  # still sending: not worth reading every record yet
            records = await self.deliveries(incident.id)
            waiting = [r for r in records if Status(r["status"]) in (Status.PENDING, Status.RETRYING)]
            if not waiting and planned <= {r["key"] for r in records}:
                result = await self.incidents.handle(Transition(
                    command_id=f"notified-{incident.id}", actor="sims", incident=incident.id,
                    trigger=Trigger.CONFIRM_NOTIFIED, reason=f"{len(records)} message(s) handed to providers"))
                if result.ok:
                    confirmed.append(incident.id)
        return confirmed


    async def deliveries(self, incident_id: str) -> list[dict[str, Any]]:
        """Every message of an incident with its status, for `sims status` and the API."""
        found = await self.kv.entries(BUCKET, f"d.{incident_id}.>")
        return sorted(found.values(), key=lambda r: (r.get("queued_at", ""), r["key"]))

