"""The console's incident board: one row per open incident, and one shared poller feeding every SSE stream."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import structlog

from sims import queries
from sims.bootstrap import Runtime
from sims.model import TERMINAL_STATES, Incident, TaskStatus
from sims.views import LEVEL_LABELS, TYPE_LABELS

log = structlog.get_logger("sims.console")
DELIVERED = {"delivered", "read"}
SENT = {"accepted", "queued", "sending", "sent"}
FAILED = {"failed", "undelivered"}


def age(delta: timedelta) -> str:
    """'4 min', '2 h 5 min', '3 d 1 h': how long ago an incident was raised, for the board."""
    minutes = max(int(delta.total_seconds() // 60), 0)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def row(incident: Incident, deliveries: list[dict[str, Any]], now: datetime) -> dict[str, Any]:
    """What the board shows of one incident: state, level, ward, age and the counts that matter."""
    statuses = Counter(str(d.get("status")) for d in deliveries)
    tasks = incident.tasks
    overdue = [t for t in tasks if t.status in (TaskStatus.OVERDUE, TaskStatus.ESCALATED)
               or (t.status is TaskStatus.PENDING and t.due_at < now)]
    return {
        "reference": incident.reference, "exercise": incident.exercise, "gold": incident.gold,
        "type": TYPE_LABELS.get(incident.type, str(incident.type)), "level": incident.level.value,
        "level_label": LEVEL_LABELS.get(incident.level, incident.level.value), "ward": incident.ward,
        "state": incident.state.value, "age": age(now - incident.raised_at),
        "messages": len(deliveries), "delivered": sum(statuses[s] for s in DELIVERED),
        "sent": sum(statuses[s] for s in SENT), "failed": sum(statuses[s] for s in FAILED),
        "acknowledged": len(incident.acknowledged),
        "tasks": len(tasks), "tasks_acknowledged": sum(t.status in (TaskStatus.ACKNOWLEDGED, TaskStatus.DONE)
                                                      for t in tasks),
        "tasks_overdue": len(overdue),
    }


async def board_rows(rt: Runtime) -> list[dict[str, Any]]:
    """Rows for every open incident, newest first (reads KV only)."""
    now = datetime.now(timezone.utc)
    incidents = [i for i in await queries.list_incidents(rt) if i.state not in TERMINAL_STATES]
    found = await asyncio.gather(*(rt.notifications.deliveries(i.id) for i in incidents))
    return [row(incident, deliveries, now) for incident, deliveries in zip(incidents, found)]


async def supplier_rows(rt: Runtime) -> list[dict[str, Any]]:
    """Each channel's suppliers in order with their state, as the workers last reported it (KV);
    configured suppliers no worker has reported yet are shown as this process sees them."""
    found = {(r.get("channel"), r.get("supplier")): r
             for r in (await rt.kv.entries("sims_deliveries", "supplier.>")).values()}
    for sender in {id(s): s for s in rt.notifications.senders.values()}.values():
        for order, breaker in enumerate(getattr(sender, "breakers", [])):
            found.setdefault((sender.channel, breaker.supplier), {  # type: ignore[attr-defined]
                "channel": sender.channel, "supplier": breaker.supplier, "order": order,  # type: ignore[attr-defined]
                "state": breaker.state.value, "active": order == 0, "reason": breaker.reason, "until": None,
                "since": None})
    return sorted(found.values(), key=lambda s: (str(s.get("channel")), int(s.get("order", 0))))


class BoardFeed:
    """Polls the board about once a second while anyone listens; every listener gets each change."""

    def __init__(self, compute: Callable[[], Awaitable[str]], every: float = 1.0,
                 keep_alive: float = 15.0) -> None:
        self.compute, self.every, self.keep_alive = compute, every, keep_alive
        self.html, self.version = "", 0
        self._changed = asyncio.Event()
        self._listeners = 0
        self._task: asyncio.Task[None] | None = None

    async def _poll(self) -> None:
        while True:
            try:
                html = await self.compute()
            except Exception as exc:  # noqa: BLE001 - NATS hiccup: keep the last board, try again
                log.warning("board.poll_failed", error=str(exc))
            else:
                if html != self.html or self.version == 0:
                    self.html, self.version = html, self.version + 1
                    changed, self._changed = self._changed, asyncio.Event()
                    changed.set()
            await asyncio.sleep(self.every)

    async def listen(self) -> AsyncIterator[str | None]:
        """The board's HTML now and after each change; None when nothing changed for `keep_alive` seconds."""
        self._listeners += 1
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._poll())
        seen = 0
        try:
            while True:
                if self.version != seen and self.version:
                    seen = self.version
                    yield self.html
                    continue
                try:
                    await asyncio.wait_for(self._changed.wait(), self.keep_alive)
                except asyncio.TimeoutError:
                    yield None
        finally:
            self._listeners -= 1
            if self._listeners == 0 and self._task is not None:
                self._task.cancel()
                self._task = None
