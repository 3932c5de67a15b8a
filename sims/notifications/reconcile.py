"""Status reconciliation: ask Twilio about messages whose status callbacks never arrived.

A delivery record learns `delivered` / `undelivered` only from Twilio's status callbacks. Callbacks
get lost (the web was down, a NATS cluster was electing a leader; Twilio does not retry them for
ever), and such a record would stay `accepted`/`queued`/`sent` for good. The worker's sweeper
therefore looks those messages up by their SID and applies what Twilio says through
`Sending.on_status`, exactly as a callback would: compare-and-set, never backwards, audit
`message.status`, fallback to the next channel on undelivered/failed.

`due` is the policy (pure); `StatusReconciler` does the reading, fetching and applying. With several
workers, one pass runs at a time: a worker takes the pass by compare-and-set on a lease record
(`lease.status_reconcile` in `sims_deliveries`, good for `every`), and the others skip it.

Which records, when:
- SMS/WhatsApp records sent through Twilio (`provider` twilio, with a `provider_id`) whose status is
  one the provider took but not terminal (accepted, queued, sending, sent);
- accepted at least `after` ago (SIMS_STATUS_RECONCILE_AFTER, default 10 minutes: a callback that
  is merely late is not raced);
- not looked up in the last `every` (SIMS_STATUS_RECONCILE_EVERY, default 5 minutes; remembered in
  memory per message key, so a restarted worker may look one up again early, which is harmless);
- accepted less than `GIVE_UP_AFTER` (72 hours) ago (an incident not updated for a day longer than
  that is not read at all: a pass costs reads of the recent incidents only). Twilio lets a message wait in its queue for
  at most its validity period (10 hours at most) and carriers' receipts come within hours; a
  message still `sent` after three days will stay so (Twilio keeps `sent` when no receipt comes),
  and asking again every few minutes for ever would cost requests for nothing.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import structlog

from sims.model import Incident
from sims.notify import PROVIDER_TOOK, TERMINAL, Status, advance
from sims.ports import Clock, DeliveryFailed, KeyValue

if TYPE_CHECKING:
    from sims.config import Settings
    from sims.notifications import NotificationService

log = structlog.get_logger("sims.notify")

PROVIDER = "twilio"
CHANNELS = frozenset({"sms", "whatsapp"})
WAITING = PROVIDER_TOOK - TERMINAL  # accepted, queued, sending, sent
DEFAULT_AFTER = timedelta(minutes=10)
DEFAULT_EVERY = timedelta(minutes=5)
GIVE_UP_AFTER = timedelta(hours=72)
CONCURRENCY = 4
LEASE_BUCKET, LEASE_KEY = "sims_deliveries", "lease.status_reconcile"
# A message follows the event that caused it within its retries and fallbacks (well under a day), so
# an incident untouched for GIVE_UP_AFTER + QUIET has no message left to look up, and is not read.
QUIET = timedelta(days=1)


def _when(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def waiting(record: Mapping[str, Any]) -> bool:
    """A Twilio SMS/WhatsApp message Twilio took whose status is not final yet."""
    try:
        status = Status(record.get("status", ""))
    except ValueError:
        return False
    return (status in WAITING and record.get("provider") == PROVIDER and bool(record.get("provider_id"))
            and record.get("channel") in CHANNELS and isinstance(record.get("key"), str))


def due(records: Iterable[Mapping[str, Any]], now: datetime, checked: Mapping[str, datetime], *,
        after: timedelta = DEFAULT_AFTER, every: timedelta = DEFAULT_EVERY,
        give_up: timedelta = GIVE_UP_AFTER) -> list[Mapping[str, Any]]:
    """The records to look up at Twilio now (see the module's docstring); `checked`: key -> last lookup."""
    chosen = []
    for record in records:
        if not waiting(record):
            continue
        accepted = _when(record.get("accepted_at"))
        if accepted is None or not (after <= now - accepted < give_up):
            continue
        last = checked.get(record["key"])
        if last is not None and now - last < every:
            continue
        chosen.append(record)
    return chosen


@runtime_checkable
class StatusSource(Protocol):
    """A sender that can be asked a message's status by its id (TwilioSmsSender.fetch_status)."""

    async def fetch_status(self, provider_id: str) -> tuple[str, str | None] | None: ...


class Notifications(Protocol):
    async def deliveries(self, incident_id: str) -> list[dict[str, Any]]: ...

    async def on_status(self, provider_id: str, reported: str, error_code: str | None,
                        key: str | None = None) -> Status | None: ...


def status_source(senders: Iterable[object]) -> StatusSource | None:
    """The first sender, or supplier behind a failover sender, that can look a message's status up."""
    for sender in senders:
        for candidate in (sender, *getattr(sender, "suppliers", ())):
            if isinstance(candidate, StatusSource):
                return candidate
    return None


class _Leased(Exception):
    """Another worker holds the pass."""


def lease_for(kv: KeyValue, bucket: str, key: str, every: timedelta) -> Callable[[datetime], Awaitable[bool]]:
    """`take(now)`: True when this worker may run a pass now (compare-and-set: one winner among workers).

    The lease lasts a little under `every`, so the holder's own next pass is never refused by it; a
    worker that died holding it loses it when it runs out.
    """
    me = secrets.token_hex(6)

    async def take(now: datetime) -> bool:
        def claim(old: dict[str, Any] | None) -> dict[str, Any]:
            until = _when((old or {}).get("until"))
            if old and old.get("by") != me and until is not None and until > now:
                raise _Leased()
            return {"by": me, "until": (now + every * 0.9).isoformat()}

        try:
            await kv.update(bucket, key, claim)
        except _Leased:
            return False
        return True

    return take


class StatusReconciler:
    """Looks up at Twilio the messages `due` picks and applies the answers as status reports."""

    def __init__(self, notifications: Notifications, source: StatusSource, clock: Clock, *,
                 after: timedelta = DEFAULT_AFTER, every: timedelta = DEFAULT_EVERY,
                 give_up: timedelta = GIVE_UP_AFTER, concurrency: int = CONCURRENCY,
                 lease: Callable[[datetime], Awaitable[bool]] | None = None) -> None:
        self.notifications, self.source, self.clock = notifications, source, clock
        self.lease = lease  # shared by the workers (`lease_for`): one pass at a time across them
        self.after, self.every, self.give_up = after, every, give_up
        self.concurrency = concurrency
        self.checked: dict[str, datetime] = {}  # message key -> when it was last looked up
        self._last_run: datetime | None = None

    async def run(self, incidents: Iterable[Incident]) -> int:
        """One pass (at most one per `every`); the number of records whose status the answers moved.

        Never raises: a record that cannot be read, looked up or applied is logged and left as it is.
        """
        now = self.clock.now()
        if self._last_run is not None and now - self._last_run < self.every:
            return 0
        self._last_run = now
        try:
            if self.lease is not None and not await self.lease(now):
                return 0  # another worker runs this pass
        except Exception as exc:  # noqa: BLE001 - NATS trouble: the next pass tries again
            log.warning("message.status_reconcile_lease_failed", error=str(exc))
            return 0
        records: list[dict[str, Any]] = []
        for incident in incidents:
            if incident.erased_at is not None:  # retention: its records have nothing left to settle
                continue
            if now - incident.updated_at > self.give_up + QUIET:  # every message it caused is past giving up
                continue
            try:
                records += await self.notifications.deliveries(incident.id)
            except Exception as exc:  # noqa: BLE001 - a NATS hiccup: this incident's turn comes next pass
                log.warning("message.status_reconcile_read_failed", incident_id=incident.id, error=str(exc))
        still = {r["key"] for r in records if waiting(r)}
        self.checked = {key: at for key, at in self.checked.items() if key in still}  # forget settled ones
        chosen = due(records, now, self.checked, after=self.after, every=self.every, give_up=self.give_up)
        for record in chosen:
            self.checked[record["key"]] = now
        limit = asyncio.Semaphore(self.concurrency)
        moved = await asyncio.gather(*(self._bounded(record, limit) for record in chosen))
        return sum(moved)

    async def _bounded(self, record: Mapping[str, Any], limit: asyncio.Semaphore) -> int:
        async with limit:
            return await self._reconcile(record)

    async def _reconcile(self, record: Mapping[str, Any]) -> int:
        key, provider_id = str(record["key"]), str(record["provider_id"])
        try:
            found = await self.source.fetch_status(provider_id)
            if found is None:
                log.warning("message.status_lookup_unknown", key=key, provider_id=provider_id)
                return 0
            reported, error_code = found
            current = Status(record["status"])
            try:
                if advance(current, Status(reported)) is current:
                    return 0  # nothing new (or a status Twilio keeps behind ours): no report, no audit
            except ValueError:  # a status SIMS does not track (canceled, scheduled...): as a callback would be
                log.info("message.status_lookup_untracked", key=key, provider_id=provider_id, reported=reported)
                return 0
            new = await self.notifications.on_status(provider_id, reported, error_code, key=key)
        except DeliveryFailed as failure:
            log.warning("message.status_lookup_failed", key=key, provider_id=provider_id, code=failure.code,
                        transient=failure.transient, error=failure.message[:200])
            return 0
        except Exception as exc:  # noqa: BLE001 - one bad record never stops the others
            log.warning("message.status_reconcile_failed", key=key, provider_id=provider_id,
                        error=f"{type(exc).__name__}: {exc}")
            return 0
        log.info("message.status_reconciled", key=key, provider_id=provider_id, reported=reported,
                 error_code=error_code, was=current.value, now=new.value if new else None)
        return 1 if new is not None and new is not current else 0


def reconciler_for(notifications: NotificationService, settings: Settings) -> StatusReconciler | None:
    """The worker's reconciler over its Twilio sender (also behind a failover sender); None without Twilio."""
    source = status_source({id(s): s for s in notifications.senders.values()}.values())
    if source is None:
        return None
    every = timedelta(seconds=settings.status_reconcile_every)
    return StatusReconciler(notifications, source, notifications.clock,
                            after=timedelta(seconds=settings.status_reconcile_after), every=every,
                            lease=lease_for(notifications.kv, LEASE_BUCKET, LEASE_KEY, every))
