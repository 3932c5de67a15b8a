"""Supplier failover policy: a circuit breaker per supplier, and the identical-text guard. No I/O.

Per channel, suppliers are tried in a configured order (`SIMS_SMS_PROVIDERS=twilio,notify`). A supplier
is *failing* after `failures_to_trip` transient failures in a row, or at once when it rate-limits us or
refuses our credentials; it stays out for a cool-down (doubling on each trip in a row, capped), then
one send *probes* it; a probe that works makes it *healthy* again and traffic switches back to it.

Phone networks block more than 20 identical texts an hour to one number, whichever supplier sends
them, so `IdenticalTextGuard` counts per number and text across suppliers and *holds* the 21st
(switching supplier would not get it through the recipient's network).
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum


class SupplierState(StrEnum):
    HEALTHY = "healthy"
    FAILING = "failing"
    PROBING = "probing"


class FailureKind(StrEnum):
    """How a supplier failed a send: each trips the breaker differently."""

    TRANSIENT = "transient"  # 5xx, connection refused, timeout: trips after a few in a row
    RATE_LIMITED = "rate_limited"  # 429: trips at once, for at least as long as the supplier asked
    REFUSED = "refused"  # 401/403, our key or account refused: trips at once, for the longest cool-down


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    failures_to_trip: int = 3
    cool_down: timedelta = timedelta(seconds=30)
    max_cool_down: timedelta = timedelta(minutes=10)
    probe_timeout: timedelta = timedelta(seconds=30)  # a probe that never reports frees the slot after this


@dataclass(frozen=True, slots=True, kw_only=True)
class Breaker:
    """One supplier's health as this process sees it."""

    supplier: str
    state: SupplierState = SupplierState.HEALTHY
    failures: int = 0  # transient failures in a row
    trips: int = 0  # trips in a row without a success between (cool-down doubles each)
    until: datetime | None = None  # failing: cool-down end; probing: when the probe is given up
    reason: str = ""
    since: datetime | None = None  # when the state last changed


def usable(breaker: Breaker, now: datetime) -> bool:
    """Healthy, or its cool-down (or an abandoned probe) is over so one send may probe it."""
    if breaker.state is SupplierState.HEALTHY:
        return True
    return breaker.until is not None and now >= breaker.until


def choose(breakers: list[Breaker], now: datetime, policy: Policy,
           skip: frozenset[str] = frozenset()) -> tuple[int | None, list[Breaker]]:
    """The first usable supplier in order (not in `skip`); picking a failing one turns it into the probe."""
    for index, breaker in enumerate(breakers):
        if breaker.supplier in skip or not usable(breaker, now):
            continue
        if breaker.state is SupplierState.HEALTHY:
            return index, breakers
        probe = replace(breaker, state=SupplierState.PROBING, until=now + policy.probe_timeout, since=now)
        return index, [*breakers[:index], probe, *breakers[index + 1:]]
    return None, breakers


def succeeded(breaker: Breaker, now: datetime) -> Breaker:
    """A send went through: the supplier is healthy, its failure counts reset."""
    if breaker.state is SupplierState.HEALTHY and breaker.failures == 0 and breaker.trips == 0:
        return breaker
    since = breaker.since if breaker.state is SupplierState.HEALTHY else now
    return Breaker(supplier=breaker.supplier, since=since)


def failed(breaker: Breaker, kind: FailureKind, now: datetime, policy: Policy, reason: str = "",
           retry_after: float | None = None) -> Breaker:
    """A send failed at the supplier: count it, and trip the breaker when the policy says so."""
    failures = breaker.failures + 1
    if breaker.state is SupplierState.FAILING:  # a send begun before it tripped: already out
        later = now + timedelta(seconds=retry_after) if retry_after else breaker.until
        return replace(breaker, failures=failures, until=max(later, breaker.until) if later and breaker.until else later)
    trip = (kind is not FailureKind.TRANSIENT or failures >= policy.failures_to_trip
            or breaker.state is SupplierState.PROBING)
    if not trip:
        return replace(breaker, failures=failures, reason=reason)
    if kind is FailureKind.REFUSED:
        cool = policy.max_cool_down
    else:
        cool = min(policy.cool_down * (2 ** breaker.trips), policy.max_cool_down)
    if retry_after:
        cool = max(cool, timedelta(seconds=retry_after))
    return Breaker(supplier=breaker.supplier, state=SupplierState.FAILING, failures=failures,
                   trips=breaker.trips + 1, until=now + cool, reason=reason or kind.value, since=now)


def soonest(breakers: list[Breaker], now: datetime) -> float:
    """Seconds until some supplier may be tried again (0 if one may be tried now)."""
    waits = [(b.until - now).total_seconds() for b in breakers if b.until is not None and not usable(b, now)]
    return max(0.0, min(waits)) if waits and len(waits) == len(breakers) else 0.0


def active(breakers: list[Breaker], now: datetime) -> str | None:
    """The supplier the next send would use (the first healthy one, else the first due a probe)."""
    for breaker in breakers:
        if breaker.state is SupplierState.HEALTHY:
            return breaker.supplier
    return next((b.supplier for b in breakers if usable(b, now)), None)


class Held(Exception):
    """The identical-text guard holds this text: sending it now would exceed the network's limit."""

    def __init__(self, wait: float, sent: int) -> None:
        self.wait = wait
        self.sent = sent
        super().__init__(f"{sent} identical texts to this number in the last hour; held {wait:.0f} s")


class IdenticalTextGuard:
    """At most `limit` identical texts to one number within `window`, across suppliers.

    Pure bookkeeping (time is passed in); `admit` reserves a slot or raises Held with how long to wait,
    and `release` gives the slot back when the send did not happen after all.
    """

    def __init__(self, limit: int = 20, window: timedelta = timedelta(hours=1)) -> None:
        self.limit = limit
        self.window = window
        self._sent: dict[str, deque[datetime]] = {}

    @staticmethod
    def key(to: str, body: str) -> str:
        return hashlib.sha256(f"{to}\x00{body}".encode()).hexdigest()[:32]

    def _prune(self, key: str, now: datetime) -> deque[datetime]:
        times = self._sent.setdefault(key, deque())
        while times and now - times[0] >= self.window:
            times.popleft()
        return times

    def admit(self, to: str, body: str, now: datetime) -> str:
        """Reserve a send of `body` to `to` now, or raise Held; returns the slot's key."""
        key = self.key(to, body)
        times = self._prune(key, now)
        if len(times) >= self.limit:
            raise Held((times[0] + self.window - now).total_seconds(), len(times))
        times.append(now)
        if len(self._sent) > 10_000:  # forget numbers whose window is over
            for other in [k for k, t in self._sent.items() if not t or now - t[-1] >= self.window]:
                del self._sent[other]
        return key

    def release(self, key: str, at: datetime) -> None:
        """Undo a reservation made at `at` (the send failed, so it did not reach the network)."""
        times = self._sent.get(key)
        if times and at in times:
            times.remove(at)
