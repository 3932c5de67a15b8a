"""Notification policy: which messages an event causes, fallbacks, delivery statuses. No I/O."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from sims.directory import Channel, Contact, Directory
from sims.messages import Event, EventType
from sims.model import State


class Kind(StrEnum):
    HOLDING = "holding"
    BRIEFING = "briefing"
    TASK = "task"
    UPDATE = "update"
    STAND_DOWN = "stand_down"
    CLOSURE = "closure"


class Status(StrEnum):
    """Where one message is; ranks only go up, and a terminal status never changes."""

    PENDING = "pending"
    RETRYING = "retrying"
    ACCEPTED = "accepted"
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    UNDELIVERED = "undelivered"
    FAILED = "failed"


RANK = {Status.PENDING: 0, Status.RETRYING: 1, Status.ACCEPTED: 2, Status.QUEUED: 3, Status.SENDING: 4,
        Status.SENT: 5, Status.DELIVERED: 6, Status.READ: 7, Status.UNDELIVERED: 6, Status.FAILED: 6}
TERMINAL = frozenset({Status.DELIVERED, Status.READ, Status.UNDELIVERED, Status.FAILED})
PROVIDER_TOOK = frozenset({Status.ACCEPTED, Status.QUEUED, Status.SENDING, Status.SENT, Status.DELIVERED,
                           Status.READ})


def advance(current: Status, reported: Status) -> Status:
    """The status after a report: never backwards, and a terminal status stays (read after delivered ok)."""
    if current in TERMINAL and not (current is Status.DELIVERED and reported is Status.READ):
        return current
    return reported if RANK[reported] > RANK[current] else current


class Delivery(BaseModel):
    """One message to one person on one channel: the work item channel workers send."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str
    incident_id: str
    reference: str
    kind: Kind
    contact_id: str
    channel: Channel
    to: str
    body: str = ""
    subject: str = ""
    html: str = ""
    link: str = ""
    exercise: bool = False
    tried: tuple[str, ...] = ()  # contact:channel pairs already tried for this message
    task: str = ""  # the task a task message is about
    created_at: datetime


def message_key(incident_id: str, kind: Kind, contact_id: str, channel: Channel, revision: int | str = 1) -> str:
    """`{incident}.{kind}.{contact}.{channel}.{revision}`: a redelivered work item never sends twice."""
    return f"{incident_id}.{kind.value}.{contact_id}.{channel.value}.{revision}"


def kinds_for(event: Event, was_gold: bool) -> Kind | None:
    """The message an event sends to people, if any."""
    if event.type is EventType.RAISED:
        return Kind.HOLDING
    if event.type is EventType.BRIEFING_APPROVED:
        return Kind.BRIEFING
    if event.type is EventType.UPDATE_SENT:
        return Kind.UPDATE
    if event.type is EventType.TASKS_PLANNED:
        return Kind.TASK
    if event.type is EventType.TASK_CHANGED and (event.data["action"] == "decline"
                                                 or event.data["action"].startswith("escalate_")):
        return Kind.TASK
    if event.type is EventType.STATE_CHANGED:
        target = State(event.data["to"])
        if target is State.STOOD_DOWN:
            return Kind.STAND_DOWN
        if target is State.CLOSED:
            return Kind.CLOSURE
        if target is State.ESCALATED and not was_gold:
            return Kind.HOLDING  # gold: the newly involved (chief executive, leader, comms) hear of it
    return None


def fallback(delivery: Delivery, directory: Directory) -> tuple[Contact, Channel] | None:
    """After a permanent failure: the person's next channel, then their deputy's, never one tried."""
    tried = set(delivery.tried) | {f"{delivery.contact_id}:{delivery.channel.value}"}
    contact = directory.get(delivery.contact_id)
    chain: list[Contact] = []
    seen: set[str] = set()
    while contact is not None and contact.id not in seen:
        chain.append(contact)
        seen.add(contact.id)
        contact = directory.deputy_of(contact.id)
    for person in chain:
        for channel in person.channels:
            if f"{person.id}:{channel.value}" not in tried:
                return person, channel
    return None
