"""A drill's readiness report from plain data (events, delivery records, people): pure, no I/O.

Measures, per person and per role: time from a message being queued to its delivery, and from the
first message about something (holding notice, briefing, task) to the person's acknowledgement, per
channel; tasks done on time, late, never; failed channels; contact details found stale (permanent
failures such as an invalid or unreachable number, a refused address). `trend` compares drills.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from statistics import median
from typing import Any

from sims.messages import Event, EventType
from sims.model import TERMINAL_STATES, Incident, TaskStatus

# Kinds of message that ask the person to acknowledge (the link page's "I have read this").
ASKING_KINDS = ("holding", "briefing", "task")
# Codes of permanent failures that mean the contact details themselves are wrong or dead.
STALE_CODES: dict[str, str] = {
    "21211": "not a valid phone number",
    "21614": "not a mobile number",
    "21408": "number in a region SMS cannot reach",
    "21610": "the number replied STOP (unsubscribed)",
    "30003": "handset unreachable",
    "30005": "unknown number (no longer in service)",
    "30006": "landline or unreachable carrier",
    "63003": "not a WhatsApp number",
    "550": "mailbox refused (unknown or closed)",
    "551": "address not local / moved",
    "553": "address refused as invalid",
    "address": "not a valid email address",
}
_ADDRESS = re.compile(r"\+?\d[\d ()-]{6,}\d|[^\s<>@'\":;,]+@[^\s<>@'\":;,]+")  # a number or email in provider text
DELIVERED = ("delivered", "read")
FAILED = ("failed", "undelivered")
PERSONAL_VIA = ("link", "sms")  # acknowledgements by the person; console/api ones are on their behalf


class Outcome:
    ON_TIME, LATE, NEVER, OPEN, WAIVED = "on_time", "late", "never", "open", "waived"
    ALL = ("on_time", "late", "never", "open", "waived")


@dataclass(frozen=True, slots=True, kw_only=True)
class Person:
    """Who someone is in the directory, as the report needs it."""

    id: str
    name: str
    roles: tuple[str, ...] = ()
    verified_on: date | None = None  # when their details were last checked, where the directory says


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelFigures:
    """One channel's messages to a person (or role): how many, how fast delivered and acknowledged."""

    channel: str
    messages: int = 0
    delivered: int = 0
    failed: int = 0
    delivery_seconds: tuple[float, ...] = ()
    ack_seconds: tuple[float, ...] = ()

    @property
    def median_delivery(self) -> float | None:
        return median(self.delivery_seconds) if self.delivery_seconds else None

    @property
    def median_ack(self) -> float | None:
        return median(self.ack_seconds) if self.ack_seconds else None


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskCounts:
    on_time: int = 0
    late: int = 0
    never: int = 0
    open: int = 0
    waived: int = 0

    def add(self, outcome: str) -> TaskCounts:
        values = {name: getattr(self, name) for name in Outcome.ALL}
        values[outcome] += 1
        return TaskCounts(**values)

    @property
    def total(self) -> int:
        return self.on_time + self.late + self.never + self.open + self.waived


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskResult:
    id: str
    title: str
    owner_role: str
    owner: str | None
    due_at: datetime
    done_at: datetime | None
    outcome: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StaleContact:
    person: str
    name: str
    channel: str
    code: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Readiness:
    """The figures of one person or one role."""

    key: str  # person id or role name
    name: str
    roles: tuple[str, ...]
    channels: tuple[ChannelFigures, ...]
    asked: int  # things they were asked to acknowledge
    acknowledged: int
    tasks: TaskCounts
    failed_channels: tuple[str, ...]

    @property
    def ack_seconds(self) -> tuple[float, ...]:
        return tuple(s for c in self.channels for s in c.ack_seconds)

    @property
    def median_ack(self) -> float | None:
        return median(self.ack_seconds) if self.ack_seconds else None

    @property
    def median_delivery(self) -> float | None:
        values = [s for c in self.channels for s in c.delivery_seconds]
        return median(values) if values else None


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadinessReport:
    incident_id: str
    reference: str
    raised_at: datetime
    state: str
    ended: bool
    generated_at: datetime
    people: tuple[Readiness, ...]
    roles: tuple[Readiness, ...]
    channels: tuple[ChannelFigures, ...]
    tasks: tuple[TaskResult, ...]
    task_counts: TaskCounts
    stale: tuple[StaleContact, ...]
    failures: tuple[dict[str, str], ...]  # every failed message: person, channel, code, error
    asked: int
    acknowledged: int

    @property
    def ack_rate(self) -> float | None:
        return self.acknowledged / self.asked if self.asked else None

    @property
    def median_delivery(self) -> float | None:
        values = [s for c in self.channels for s in c.delivery_seconds]
        return median(values) if values else None

    @property
    def median_ack(self) -> float | None:
        values = [s for c in self.channels for s in c.ack_seconds]
        return median(values) if values else None

    @property
    def messages(self) -> int:
        return sum(c.messages for c in self.channels)

    @property
    def failed(self) -> int:
        return sum(c.failed for c in self.channels)


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else value or None


def delivered_at(record: Mapping[str, Any]) -> datetime | None:
    """When a message reached the person: the first delivered/read report; for email, SMTP acceptance."""
    for entry in record.get("history") or ():
        if entry.get("status") in DELIVERED:
            return _time(entry.get("at"))
    if record.get("channel") == "email" and record.get("status") not in FAILED:
        return _time(record.get("accepted_at"))
    return None


def failure_code(record: Mapping[str, Any]) -> str | None:
    """The provider's code of a failed message ('21211', '30003', '550'...), or None if it did not fail."""
    if record.get("status") not in FAILED:
        return None
    for entry in reversed(record.get("history") or ()):
        if entry.get("status") in FAILED and entry.get("error_code"):
            return str(entry["error_code"])
    error = str(record.get("error") or "")
    return error.split(":", 1)[0].strip() or "unknown"


def _item(record: Mapping[str, Any]) -> str:
    return f"task:{record['task']}" if record.get("kind") == "task" and record.get("task") else f"msg:{record['kind']}"


@dataclass(slots=True)
class _Acc:
    messages: int = 0
    delivered: int = 0
    failed: int = 0
    delivery: list[float] = field(default_factory=list)
    ack: list[float] = field(default_factory=list)

    def freeze(self, channel: str) -> ChannelFigures:
        return ChannelFigures(channel=channel, messages=self.messages, delivered=self.delivered, failed=self.failed,
                              delivery_seconds=tuple(self.delivery), ack_seconds=tuple(self.ack))


def _acknowledgements(events: Iterable[Event]) -> dict[tuple[str, str], tuple[datetime, str]]:
    """(person, item) -> (first time they acknowledged it, via), from the incident's events."""
    found: dict[tuple[str, str], tuple[datetime, str]] = {}
    for event in events:
        if event.type is EventType.MESSAGE_ACKNOWLEDGED and event.data.get("via") in PERSONAL_VIA:
            key = (str(event.data["person"]), f"msg:{event.data['kind']}")
        elif (event.type is EventType.TASK_CHANGED and event.data.get("action") in ("acknowledge", "done", "decline")
              and event.data.get("via") in PERSONAL_VIA and event.data.get("previous_owner")):
            key = (str(event.data["previous_owner"]), f"task:{event.data['task']['id']}")
        else:
            continue
        found.setdefault(key, (event.at, str(event.data.get("via"))))
    return found


def task_results(incident: Incident, events: Iterable[Event], now: datetime) -> list[TaskResult]:
    """Each task's outcome: done by its due time, done late, waived, still open, or never done."""
    done_at: dict[str, datetime] = {}
    for event in events:
        if event.type is EventType.TASK_CHANGED and event.data.get("action") == "done":
            done_at.setdefault(str(event.data["task"]["id"]), event.at)
    ended = incident.state in TERMINAL_STATES
    results = []
    for task in incident.tasks:
        finished = done_at.get(task.id)
        if task.status is TaskStatus.DONE and finished is not None:
            outcome = Outcome.ON_TIME if finished <= task.due_at else Outcome.LATE
        elif task.status is TaskStatus.WAIVED:
            outcome = Outcome.WAIVED
        elif ended or now > task.due_at:
            outcome = Outcome.NEVER
        else:
            outcome = Outcome.OPEN
        results.append(TaskResult(id=task.id, title=task.title, owner_role=task.owner_role, owner=task.owner,
                                  due_at=task.due_at, done_at=finished, outcome=outcome))
    return results


def build(incident: Incident, events: Sequence[Event], deliveries: Sequence[Mapping[str, Any]],
          people: Mapping[str, Person], now: datetime, *, verified_within: timedelta = timedelta(days=180)
          ) -> ReadinessReport:
    """The readiness report of one drill from its events, its delivery records and the directory."""
    acks = _acknowledgements(events)
    first_sent: dict[tuple[str, str], Mapping[str, Any]] = {}
    per_person: dict[str, dict[str, _Acc]] = {}
    stale: dict[tuple[str, str], StaleContact] = {}
    failures = []
    for record in sorted(deliveries, key=lambda r: (str(r.get("queued_at", "")), str(r.get("key", "")))):
        person, channel = str(record["contact_id"]), str(record["channel"])
        acc = per_person.setdefault(person, {}).setdefault(channel, _Acc())
        acc.messages += 1
        queued, reached = _time(record.get("queued_at")), delivered_at(record)
        if reached is not None and queued is not None:
            acc.delivered += 1
            acc.delivery.append(max((reached - queued).total_seconds(), 0.0))
        code = failure_code(record)
        if code is not None:
            acc.failed += 1
            failures.append({"person": person, "channel": channel, "kind": str(record.get("kind")), "code": code,
                             "error": _ADDRESS.sub("[address]", str(record.get("error") or f"{record.get('status')} ({code})"))})
            if code in STALE_CODES:
                who = people.get(person)
                stale.setdefault((person, channel), StaleContact(
                    person=person, name=who.name if who else person, channel=channel, code=code,
                    reason=STALE_CODES[code]))
        if record.get("kind") in ASKING_KINDS:
            first_sent.setdefault((person, _item(record)), record)
    for who in people.values():
        if who.verified_on is not None and now.date() - who.verified_on > verified_within and who.id in per_person:
            stale.setdefault((who.id, "all"), StaleContact(
                person=who.id, name=who.name, channel="all", code="verified",
                reason=f"details last checked on {who.verified_on.isoformat()}"))

    acknowledged: dict[str, int] = {}
    for (person, item), record in first_sent.items():
        if (person, item) not in acks:
            continue
        at, via = acks[(person, item)]
        channel = "sms" if via == "sms" else _reached_channel(deliveries, person, item, at) or str(record["channel"])
        start = _time(record.get("queued_at"))
        if start is None:
            continue
        per_person[person].setdefault(channel, _Acc()).ack.append(max((at - start).total_seconds(), 0.0))
        acknowledged[person] = acknowledged.get(person, 0) + 1
    asked: dict[str, int] = {}
    for person, _item_key in first_sent:
        asked[person] = asked.get(person, 0) + 1

    tasks = task_results(incident, events, now)
    task_counts: dict[str, TaskCounts] = {}
    for task in tasks:
        if task.owner:
            task_counts[task.owner] = task_counts.get(task.owner, TaskCounts()).add(task.outcome)

    involved = sorted(set(per_person) | set(task_counts))
    rows = []
    for pid in involved:
        who = people.get(pid) or Person(id=pid, name=pid)
        channels = per_person.get(pid, {})
        rows.append(Readiness(
            key=pid, name=who.name, roles=who.roles,
            channels=tuple(acc.freeze(ch) for ch, acc in sorted(channels.items())),
            asked=asked.get(pid, 0), acknowledged=acknowledged.get(pid, 0),
            tasks=task_counts.get(pid, TaskCounts()),
            failed_channels=tuple(sorted(ch for ch, acc in channels.items() if acc.failed))))
    role_tasks: dict[str, TaskCounts] = {}
    for task in tasks:
        role_tasks[task.owner_role] = role_tasks.get(task.owner_role, TaskCounts()).add(task.outcome)
    roles = _by_role(rows, role_tasks)
    return ReadinessReport(
        incident_id=incident.id, reference=incident.reference, raised_at=incident.raised_at,
        state=incident.state.value, ended=incident.state in TERMINAL_STATES, generated_at=now,
        people=tuple(rows), roles=roles, channels=_merge_channels(rows), tasks=tuple(tasks),
        task_counts=_count(tasks),
        stale=tuple(stale.values()), failures=tuple(failures),
        asked=sum(asked.values()), acknowledged=sum(acknowledged.values()))


def _reached_channel(deliveries: Sequence[Mapping[str, Any]], person: str, item: str, by: datetime) -> str | None:
    """The channel of the first message about `item` that reached `person` before they acknowledged it."""
    reached = [(at, str(r["channel"])) for r in deliveries
               if r.get("contact_id") == person and r.get("kind") in ASKING_KINDS and _item(r) == item
               and (at := delivered_at(r)) is not None and at <= by]
    return min(reached)[1] if reached else None


def _merge(channel: str, figures: Iterable[ChannelFigures]) -> ChannelFigures:
    acc = _Acc()
    for f in figures:
        acc.messages += f.messages
        acc.delivered += f.delivered
        acc.failed += f.failed
        acc.delivery += f.delivery_seconds
        acc.ack += f.ack_seconds
    return acc.freeze(channel)


def _merge_channels(rows: Iterable[Readiness]) -> tuple[ChannelFigures, ...]:
    by_channel: dict[str, list[ChannelFigures]] = {}
    for row in rows:
        for figures in row.channels:
            by_channel.setdefault(figures.channel, []).append(figures)
    return tuple(_merge(ch, found) for ch, found in sorted(by_channel.items()))


def _count(tasks: Iterable[TaskResult]) -> TaskCounts:
    counts = TaskCounts()
    for task in tasks:
        counts = counts.add(task.outcome)
    return counts


def _by_role(rows: list[Readiness], role_tasks: Mapping[str, TaskCounts]) -> tuple[Readiness, ...]:
    """Each role's figures: its holders' messages and acknowledgements, and the tasks the role owns."""
    holders: dict[str, list[Readiness]] = {}
    for row in rows:
        for role in row.roles or ("(no role)",):
            holders.setdefault(role, []).append(row)
    for role in role_tasks:
        holders.setdefault(role, [])
    result = []
    for role, members in sorted(holders.items()):
        by_channel: dict[str, list[ChannelFigures]] = {}
        for member in members:
            for figures in member.channels:
                by_channel.setdefault(figures.channel, []).append(figures)
        result.append(Readiness(
            key=role, name=role.replace("_", " "), roles=(role,),
            channels=tuple(_merge(ch, found) for ch, found in sorted(by_channel.items())),
            asked=sum(m.asked for m in members), acknowledged=sum(m.acknowledged for m in members),
            tasks=role_tasks.get(role, TaskCounts()),
            failed_channels=tuple(sorted({f"{m.key}:{ch}" for m in members for ch in m.failed_channels}))))
    return tuple(result)


@dataclass(frozen=True, slots=True, kw_only=True)
class TrendPoint:
    """One drill's headline figures, for comparing drills over time."""

    reference: str
    raised_at: datetime
    median_delivery: float | None
    median_ack: float | None
    ack_rate: float | None
    on_time: int
    late: int
    never: int
    failed: int
    stale: int


def trend(reports: Iterable[ReadinessReport]) -> list[TrendPoint]:
    """The drills' headline figures, oldest first."""
    return [TrendPoint(reference=r.reference, raised_at=r.raised_at, median_delivery=r.median_delivery,
                       median_ack=r.median_ack, ack_rate=r.ack_rate, on_time=r.task_counts.on_time,
                       late=r.task_counts.late, never=r.task_counts.never, failed=r.failed, stale=len(r.stale))
            for r in sorted(reports, key=lambda r: r.raised_at)]


def change(points: list[TrendPoint], reference: str) -> dict[str, float | None]:
    """How `reference` differs from the drill before it: seconds (lower is better), rate points, counts."""
    index = next((i for i, p in enumerate(points) if p.reference == reference), None)
    if not index:
        return {}
    now, before = points[index], points[index - 1]

    def diff(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else a - b

    return {"median_delivery": diff(now.median_delivery, before.median_delivery),
            "median_ack": diff(now.median_ack, before.median_ack),
            "ack_rate": diff(now.ack_rate, before.ack_rate),
            "never": float(now.never - before.never), "failed": float(now.failed - before.failed),
            "stale": float(now.stale - before.stale)}
