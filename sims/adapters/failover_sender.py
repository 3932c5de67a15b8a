"""One channel's ordered suppliers behind the SmsSender/EmailSender port, switching when one fails.

The policy is `sims.failover` (pure); this applies it per send, audits every change of a supplier's
state on `sims.audit.system`, and keeps each supplier's state in KV `sims_deliveries`
(`supplier.<channel>.<name>`) for the console board and /metrics, whichever process reads them.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import structlog

from sims import failover
from sims.failover import Breaker, FailureKind, Held, IdenticalTextGuard, Policy, SupplierState
from sims.ports import Accepted, AuditLog, Clock, DeliveryFailed, KeyValue, OutgoingEmail, OutgoingSms, Recorder

log = structlog.get_logger("sims.failover")
BUCKET = "sims_deliveries"
RATE_CODES = frozenset({"429", "20429"})
REFUSED_CODES = frozenset({"401", "403", "20003"})


def supplier_key(channel: str, supplier: str) -> str:
    return f"supplier.{channel}.{supplier}"


def kind_of(failure: DeliveryFailed) -> FailureKind:
    if failure.code in RATE_CODES:
        return FailureKind.RATE_LIMITED
    if failure.code in REFUSED_CODES:
        return FailureKind.REFUSED
    return FailureKind.TRANSIENT


class FailoverSender:
    """Sends through the first usable supplier; on a supplier-side failure, the next one takes over.

    A failure the message itself causes (invalid number, refused address) is raised as it is: another
    supplier would refuse it too. A timeout is raised as transient without trying the next supplier,
    because the first may have taken the message; the work item comes back after a backoff.
    """

    def __init__(self, channel: str, suppliers: list[Any], *, audit: AuditLog, kv: KeyValue, clock: Clock,
                 policy: Policy | None = None, guard: IdenticalTextGuard | None = None) -> None:
        if not suppliers:
            raise ValueError("FailoverSender needs at least one supplier")
        self.channel = channel
        self.suppliers = suppliers
        self.name = "+".join(s.name for s in suppliers)
        self.policy = policy or Policy()
        self.guard = guard
        self._audit, self._kv, self._clock = audit, kv, clock
        self.breakers = [Breaker(supplier=s.name) for s in suppliers]
        self._published: dict[str, SupplierState | None] = {s.name: None for s in suppliers}
        self._lock = asyncio.Lock()
        self._announced = False
        self._lookups = [s for s in suppliers if hasattr(s, "find_accepted")]
        if self._lookups:  # the send path asks a redelivered message's supplier(s) before sending again
            self.find_accepted = self._find_accepted
        if any(getattr(s, "records_on_commit", False) for s in suppliers):  # SMTP: see SmtpEmailSender
            self.records_on_commit = True

    async def _find_accepted(self, message: OutgoingSms, since: datetime) -> Accepted | None:
        """A redelivered message some supplier already took (see TwilioSms.find_accepted), if any."""
        for supplier in self._lookups:
            found: Accepted | None = await supplier.find_accepted(message, since)
            if found is not None:
                return found
        return None

    async def send(self, message: OutgoingSms | OutgoingEmail, recorded: Recorder | None = None) -> Accepted:
        """Send through the first usable supplier; `recorded` goes to a supplier that records on commit."""
        if not self._announced:  # a sending process (a worker) reports its suppliers once it starts sending
            self._announced = True
            await self.publish()
        now = self._clock.now()
        slot = None
        if self.guard is not None and isinstance(message, OutgoingSms):
            try:
                slot = self.guard.admit(message.to, message.body, now)
            except Held as held:
                await self._held(message, held)
                raise DeliveryFailed(provider=self.channel, transient=True, code="identical-limit",
                                     message=str(held), retry_after=held.wait) from held
        try:
            return await self._send(message, recorded)
        except DeliveryFailed as failure:
            if slot is not None and self.guard is not None and failure.code != "timeout":
                self.guard.release(slot, now)  # it never reached a network (a timeout may have: keep counting it)
            raise

    async def _send(self, message: OutgoingSms | OutgoingEmail, recorded: Recorder | None = None) -> Accepted:
        tried: set[str] = set()
        last: DeliveryFailed | None = None
        while True:
            async with self._lock:
                now = self._clock.now()
                index, self.breakers = failover.choose(self.breakers, now, self.policy, frozenset(tried))
                if index is None:
                    wait = failover.soonest(self.breakers, now)
            if index is None:
                break
            supplier = self.suppliers[index]
            tried.add(supplier.name)
            try:
                accepted: Accepted = await (supplier.send(message, recorded=recorded)
                                            if recorded and getattr(supplier, "records_on_commit", False)
                                            else supplier.send(message))
            except DeliveryFailed as failure:
                if not failure.transient:
                    await self._update(index, lambda b, now: failover.succeeded(b, now)
                                       if b.state is SupplierState.PROBING else b)  # it answered: it is up
                    raise
                await self._update(index, lambda b, now, f=failure: failover.failed(
                    b, kind_of(f), now, self.policy, f"{f.code}: {f.message}"[:200], f.retry_after))
                if failure.code == "timeout":
                    raise  # the supplier may have taken it: no second supplier for this message now
                last = failure
                continue
            await self._update(index, failover.succeeded)
            return accepted
        names = ", ".join(sorted(tried)) or "none usable"
        raise DeliveryFailed(provider=last.provider if last else self.channel, transient=True,
                             code=last.code if last else "no-supplier",
                             message=f"every {self.channel} supplier failed or is cooling down ({names})"
                                     + (f"; last: {last.message}" if last else ""),
                             retry_after=max(wait, last.retry_after or 0.0) if last else wait or None)

    async def _update(self, index: int, change: Any) -> None:
        async with self._lock:
            now = self._clock.now()
            before = self.breakers[index]
            after = change(before, now)
            self.breakers = [*self.breakers[:index], after, *self.breakers[index + 1:]]
            active = failover.active(self.breakers, now)
        if before.state is not after.state or self._published[after.supplier] is None:
            await self._changed(before, after, active)

    async def _changed(self, before: Breaker, after: Breaker, active: str | None) -> None:
        """Audit a supplier's change of state and publish it for the board and metrics."""
        self._published[after.supplier] = after.state
        action = None
        if after.state is SupplierState.FAILING and before.state is not SupplierState.FAILING:
            action = "supplier.failing"
        elif after.state is SupplierState.HEALTHY and before.state is not SupplierState.HEALTHY:
            action = "supplier.recovered"
        if action:
            outcome = (f"{self.channel} supplier {after.supplier} is {after.state.value}; "
                       f"{self.channel} now goes through {active or 'no supplier'}")
            await self._audit.append(chain="system", actor="sims", incident_id=None, action=action, outcome=outcome,
                                     detail={"channel": self.channel, "supplier": after.supplier,
                                             "from": before.state.value, "to": after.state.value,
                                             "active": active, "reason": after.reason,
                                             "until": after.until.isoformat() if after.until else None})
            log.warning(action, channel=self.channel, supplier=after.supplier, active=active, reason=after.reason)
        await self.publish(active)

    async def publish(self, active: str | None = None, only_missing: bool = False) -> None:
        """Write every supplier's state to KV (what the board and /metrics show).

        `only_missing` (at start-up): leave alone what a running worker already reported.
        """
        now = self._clock.now()
        active = active or failover.active(self.breakers, now)
        for order, breaker in enumerate(self.breakers):
            key = supplier_key(self.channel, breaker.supplier)
            if only_missing and await self._kv.get(BUCKET, key) is not None:
                continue
            await self._kv.put(BUCKET, key, {
                "channel": self.channel, "supplier": breaker.supplier, "order": order,
                "state": breaker.state.value, "active": breaker.supplier == active, "reason": breaker.reason,
                "until": breaker.until.isoformat() if breaker.until else None,
                "since": breaker.since.isoformat() if breaker.since else None, "updated_at": now.isoformat()})
            self._published[breaker.supplier] = breaker.state

    async def _held(self, message: OutgoingSms | OutgoingEmail, held: Held) -> None:
        await self._audit.append(chain="system", actor="sims", incident_id=None, action="message.held",
                                 outcome=f"identical text limit: {held.sent} sent to this number within the hour",
                                 detail={"key": message.key, "channel": self.channel, "wait_seconds": round(held.wait)})
        log.warning("message.held", key=message.key, sent=held.sent, wait=round(held.wait))

    async def close(self) -> None:
        for supplier in {id(s): s for s in self.suppliers}.values():
            await supplier.close()
