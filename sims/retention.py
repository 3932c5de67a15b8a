"""Retention of personal data: which closed incidents are due for erasure, and the erasure decision. No I/O.

An incident's personal data (its restricted details, sealed under a per-incident key) is kept while
the incident is open and for `retention` after it was closed or stood down; then it is erased. The
non-personal record (timeline, states, times, tasks, audit trail) is kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sims.crypto import SEALED_FIELDS
from sims.errors import TransitionNotAllowed
from sims.messages import ErasePersonalData, Event, EventType
from sims.model import TERMINAL_STATES, Incident

DEFAULT_RETENTION_DAYS = 365
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_PHONE = re.compile(r"(?<![A-Za-z0-9])(?:whatsapp:)?\+?\d(?: ?\d){9,14}(?![A-Za-z0-9])")  # 10-15 digits
ERASE = "erase the personal data of"


def closed_at(incident: Incident) -> datetime | None:
    """When the incident was closed or stood down; None while it is open.

    Projections written before `closed_at` existed fall back to the last change of a closed incident.
    """
    if incident.state not in TERMINAL_STATES:
        return None
    return incident.closed_at or incident.updated_at


def erasure_due_at(incident: Incident, retention: timedelta) -> datetime | None:
    """When the incident's personal data falls due for erasure; None if open or erased already."""
    closed = closed_at(incident)
    if closed is None or incident.erased_at is not None:
        return None
    return closed + retention


@dataclass(frozen=True, slots=True, kw_only=True)
class Due:
    """An incident whose personal data is due for erasure, and since when."""

    incident_id: str
    reference: str
    closed_at: datetime
    due_at: datetime


def due_for_erasure(incidents: Iterable[Incident], now: datetime, retention: timedelta) -> list[Due]:
    """The incidents (closed or stood down, not erased) whose retention ended at or before `now`, oldest first."""
    found = []
    for incident in incidents:
        due = erasure_due_at(incident, retention)
        closed = closed_at(incident)
        if due is not None and closed is not None and due <= now:
            found.append(Due(incident_id=incident.id, reference=incident.reference, closed_at=closed, due_at=due))
    return sorted(found, key=lambda d: (d.due_at, d.reference))


def decide_erase(incident: Incident, command: ErasePersonalData, now: datetime) -> list[Event]:
    """The erasure event; refused while the incident is open; nothing (no event) when erased already."""
    if incident.state not in TERMINAL_STATES:
        raise TransitionNotAllowed(incident.state.value, ERASE,
                                   "it is still open; personal data is erased only after it is closed or stood down")
    if incident.erased_at is not None:
        return []
    return [Event(type=EventType.PERSONAL_DATA_ERASED, incident_id=incident.id, at=now, actor=command.actor,
                  command_id=command.command_id, data={"fields": list(SEALED_FIELDS), "reason": command.reason})]


def reason_for(retention: timedelta) -> str:
    days = retention.days
    return f"retention period ended ({days} day{'s' if days != 1 else ''} after closure)"


def without_addresses(text: str, marker: str = "[address]") -> str:
    """`text` (a provider's error message, say) with phone numbers and email addresses replaced: such
    text goes into the audit trail, which is never changed, so it must not carry them in the first place."""
    return _PHONE.sub(marker, _EMAIL.sub(marker, text))
