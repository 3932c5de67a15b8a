"""Erasing a closed incident's personal data when its retention period ends (the use case; awaits ports).

Erased: the restricted details (their key is destroyed, so the sealed copies in the events stream
cannot be read; the projection is rewritten without them), recipients' phone numbers and email
addresses in delivery records (and provider error texts, which can quote them), the incident's
personal links, and its messages in the local outbox.
Kept, because they are the record and hold no personal details beyond staff directory ids: every
event (timeline, states, times, tasks), the audit trail (which has only keyed hashes of restricted
details), who was told and when, message statuses, provider message ids.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

import structlog

from sims.errors import SimsError
from sims.messages import ErasePersonalData
from sims.model import Incident
from sims.ports import AuditLog, Clock, KeyValue
from sims.retention import Due, closed_at, due_for_erasure, reason_for

log = structlog.get_logger("sims.erasure")
ERASED = "[erased]"
DELIVERIES, LINKS = "sims_deliveries", "sims_links"


class ErasureDeferred(SimsError):
    """Messages about the incident are still being planned or sent: erasing now would let them write
    addresses and links again afterwards. The next sweep tries again."""

    code = "erasure_deferred"

    def __init__(self, incident: str, waiting: str) -> None:
        self.incident = incident
        self.waiting = waiting
        super().__init__(f"Not erased yet: {waiting}; it will be erased once they are handed over")


class ErasureRefused(SimsError):
    """The incident's personal data was not erased (it is still open, or the command was refused)."""

    code = "erasure_refused"

    def __init__(self, incident: str, message: str) -> None:
        self.incident = incident
        super().__init__(message)


@dataclass(frozen=True, slots=True, kw_only=True)
class Erased:
    """What one erasure did; `newly` is False when it had been erased before (a repeat changes nothing)."""

    incident_id: str
    reference: str
    newly: bool
    key_destroyed: bool
    deliveries: int
    links: int
    outbox: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def scrub_delivery(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """A delivery record without the recipient's address and the provider's free-text error."""
    if record is None:
        return None
    error = record.get("error")
    return {**record, "to": ERASED,
            "error": (str(error).split(":", 1)[0] + ": " + ERASED) if error else error}


@dataclass
class ErasureService:
    """Erases personal data of closed incidents; every step is safe to repeat."""

    incidents: Any  # sims.services.IncidentService
    keys: Any  # sims.adapters.keystore.NatsKeyStore: destroy(incident_id) -> bool
    kv: KeyValue
    audit: AuditLog
    clock: Clock
    purge: Callable[[str, str], Awaitable[None]]  # (bucket, key): remove a KV entry and its history
    retention: timedelta
    outbox: Callable[[str], int] | None = None  # incident id -> messages removed from the local outbox
    notifier_behind: Callable[[str], Awaitable[bool]] | None = None  # incident id -> events not yet notified
    defer_limit: timedelta = timedelta(days=1)  # past due by this much, erase even if messages are stuck

    def due(self, incidents: Iterable[Incident]) -> list[Due]:
        return due_for_erasure(incidents, self.clock.now(), self.retention)

    async def sending(self, incident_id: str) -> str | None:
        """What is still in flight for the incident (notifier behind, messages not handed over), or None."""
        if self.notifier_behind is not None and await self.notifier_behind(incident_id):
            return "its last events are still being turned into messages"
        told = await self.kv.get(DELIVERIES, f"told.{incident_id}") or {}
        planned = {key for keys in told.values() for key in keys}
        records = await self.kv.entries(DELIVERIES, f"d.{incident_id}.>")
        done = {r.get("key") for r in records.values() if r.get("status") not in (None, "pending", "retrying")}
        waiting = planned - done
        return f"{len(waiting)} message(s) are still being sent" if waiting else None

    async def erase(self, key: str, *, actor: str, reason: str, wait: bool = True) -> Erased:
        """Erase one incident's personal data; ErasureRefused while it is open; ErasureDeferred (with
        `wait`) while its messages are still going out.

        The key and copies go first and the `personal_data.erased` event last, so a crash in between
        leaves the incident still due, and the next run finishes the job.
        """
        incident = await self.incidents.current(key)  # cached with its details while the key still exists
        command = ErasePersonalData(command_id=f"erase-{incident.id}-{incident.version}", actor=actor,
                                    incident=incident.id, reason=reason)
        if closed_at(incident) is None:  # refused by the decision, and audited as any refusal
            result = await self.incidents.handle(command)
            raise ErasureRefused(key, (result.error or {}).get("message", "the incident is still open"))
        if wait and incident.erased_at is None and (waiting := await self.sending(incident.id)):
            raise ErasureDeferred(key, waiting)
        destroyed = await self.keys.destroy(incident.id)
        deliveries = await self._scrub_deliveries(incident.id)
        links = await self._purge_links(incident.id)
        outbox = self.outbox(incident.id) if self.outbox else 0
        result = await self.incidents.handle(command)
        if not result.ok:
            raise ErasureRefused(key, (result.error or {}).get("message", "refused"))
        newly = result.version != incident.version
        done = Erased(incident_id=incident.id, reference=incident.reference, newly=newly, key_destroyed=destroyed,
                      deliveries=deliveries, links=links, outbox=outbox)
        if newly or destroyed or deliveries or links or outbox:
            await self.audit.append(chain=incident.id, actor=actor, incident_id=incident.id,
                                    action="personal_data.erased", outcome="key destroyed" if destroyed else "no key held",
                                    detail={"reason": reason, "delivery_records": deliveries, "links": links,
                                            "outbox_messages": outbox})
            log.info("personal_data.erased", incident_id=incident.id, deliveries=deliveries, links=links,
                     outbox=outbox, key_destroyed=destroyed)
        return done

    async def _scrub_deliveries(self, incident_id: str) -> int:
        found = await self.kv.entries(DELIVERIES, f"d.{incident_id}.>")
        count = 0
        for name, record in found.items():
            if record.get("to") != ERASED:
                await self.kv.update(DELIVERIES, name, scrub_delivery)
                count += 1
        return count

    async def _purge_links(self, incident_id: str) -> int:
        found = await self.kv.entries(LINKS)
        mine = [name for name, record in found.items()
                if isinstance(record, dict) and record.get("incident_id") == incident_id]
        for name in mine:
            await self.purge(LINKS, name)
        return len(mine)

    async def run(self, incidents: Iterable[Incident], *, actor: str) -> list[tuple[Due, Erased | SimsError]]:
        """Erase every incident whose retention has ended; each one's outcome (one refusal stops nothing)."""
        outcomes: list[tuple[Due, Erased | SimsError]] = []
        now = self.clock.now()
        for due in self.due(incidents):
            try:
                outcome: Erased | SimsError = await self.erase(
                    due.incident_id, actor=actor, reason=reason_for(self.retention),
                    wait=now < due.due_at + self.defer_limit)
            except SimsError as exc:
                outcome = exc
            outcomes.append((due, outcome))
        return outcomes

    async def sweep(self, incidents: Iterable[Incident], *, actor: str = "sims") -> list[Erased]:
        """The worker's round: erase what is due; what must wait is tried again next round."""
        done = []
        for due, outcome in await self.run(incidents, actor=actor):
            if isinstance(outcome, Erased):
                done.append(outcome)
            elif isinstance(outcome, ErasureDeferred):
                log.debug("personal_data.erasure_deferred", incident_id=due.incident_id, waiting=outcome.waiting)
            else:
                log.warning("personal_data.not_erased", incident_id=due.incident_id, error=str(outcome))
        return done
