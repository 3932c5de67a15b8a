"""Incident and its details: plain values, no I/O."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("time must include a timezone (e.g. 2026-11-30T21:40:00Z or +00:00)")
    from datetime import timezone

    try:
        return value.astimezone(timezone.utc)
    except OverflowError as exc:  # e.g. 0001-01-01T00:00:00+01:00: before the first representable UTC time
        raise ValueError("time is out of range") from exc


UtcDateTime = Annotated[datetime, AfterValidator(_utc)]


class Restricted(str):
    """Text that must never leave SIMS's signed-in pages: renders as a marker everywhere else.

    Templates for SMS, email subjects and member briefings never receive this type (see
    `sims.views.SharedView`); if one ever did, `__html__` and `__format__` show only the marker.
    """

    MARKER = "[restricted]"

    def __str__(self) -> str:
        return self.MARKER

    def __html__(self) -> str:
        return self.MARKER

    def __format__(self, spec: str) -> str:
        return self.MARKER

    def reveal(self) -> str:
        """The text itself, for signed-in staff allowed to see it."""
        return str.__str__(self)


def _restricted(value: Any) -> Restricted:
    return value if isinstance(value, Restricted) else Restricted(str(value))


RestrictedText = Annotated[
    str, AfterValidator(_restricted), PlainSerializer(lambda v: str.__str__(v), return_type=str)
]


class IncidentType(StrEnum):
    STABBING = "stabbing"
    SHOOTING = "shooting"
    HOMICIDE = "homicide"
    SERIOUS_ASSAULT = "serious_assault"
    OTHER = "other"


class Level(StrEnum):
    """How wide the response is: local to the ward, borough-wide, or major (cross-borough/London)."""

    LOCAL = "1"
    BOROUGH = "2"
    MAJOR = "3"


class State(StrEnum):
    RAISED = "raised"
    NOTIFYING = "notifying"
    ACTIVE = "active"
    ESCALATED = "escalated"
    REASSURANCE = "reassurance"
    RECOVERY = "recovery"
    REVIEW = "review"
    CLOSED = "closed"
    STOOD_DOWN = "stood_down"


TERMINAL_STATES = frozenset({State.CLOSED, State.STOOD_DOWN})


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class PowerKind(StrEnum):
    S60 = "section_60"
    S60AA = "section_60aa"
    S35 = "section_35"


class PolicePower(Frozen):
    """A police authorisation in force (stop and search s60, dispersal s35...) with its expiry."""

    kind: PowerKind
    area: str = Field(min_length=1, max_length=300)
    authorised_at: UtcDateTime
    expires_at: UtcDateTime


class VictimAgeBand(StrEnum):
    UNDER_10 = "under_10"
    AGE_10_17 = "10-17"
    AGE_18_24 = "18-24"
    AGE_25_PLUS = "25+"
    UNKNOWN = "unknown"


Text = Annotated[str, Field(max_length=4000)]
Short = Annotated[str, Field(min_length=1, max_length=300)]


class Details(Frozen):
    """What is known beyond the raise; grows by `DetailsUpdated` events."""

    crime_scenes: tuple[Short, ...] = ()
    cordons: tuple[Short, ...] = ()
    rendezvous_points: tuple[Short, ...] = ()
    police_powers: tuple[PolicePower, ...] = ()
    road_closures: tuple[Short, ...] = ()
    victim_age_band: VictimAgeBand | None = None
    cross_border: bool = False
    other_borough: str | None = None


class TaskStatus(StrEnum):
    PENDING = "pending"
    ACKNOWLEDGED = "acknowledged"
    DONE = "done"
    DECLINED = "declined"
    OVERDUE = "overdue"
    ESCALATED = "escalated"
    WAIVED = "waived"


OPEN_TASK = (TaskStatus.PENDING, TaskStatus.ACKNOWLEDGED, TaskStatus.OVERDUE, TaskStatus.ESCALATED)


class Task(BaseModel):
    """One protocol step for one incident, with its current owner."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    number: int
    title: str
    kind: str
    owner_role: str
    owner: str | None
    due_at: datetime
    status: TaskStatus = TaskStatus.PENDING
    note: str = ""
    reason: str = ""
    escalation_level: int = 0
    escalation: tuple[float, ...] = ()  # seconds after due: deputy, then duty officer

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_TASK


class Incident(Frozen):
    """The current state of one incident: a projection of its events."""

    id: str
    reference: str
    version: int = 0
    state: State = State.RAISED
    type: IncidentType
    level: Level
    occurred_at: UtcDateTime
    raised_at: UtcDateTime
    ward: str
    location: str
    outline: str
    restricted: RestrictedText = ""
    exercise: bool = False
    also_affects: tuple[str, ...] = Field((), description="Neighbouring boroughs named on the raise.")
    linked_from: str | None = Field(None, description="The neighbouring borough's incident this was raised from.")
    raised_by: str
    gold: bool = False
    details: Details = Details()
    updated_at: UtcDateTime
    closed_reason: str | None = None
    briefings: tuple[str, ...] = Field((), description="Every drafted version of the members' briefing, in order.")
    briefing_approved: int = Field(0, description="The version approved and sent (0: none yet).")
    updates_sent: int = 0
    tasks: tuple[Task, ...] = Field((), description="One per protocol step.")
    acknowledged: tuple[str, ...] = Field((), description="'kind:person' for each message acknowledged.")
    closed_at: UtcDateTime | None = Field(None, description="When it was closed or stood down.")
    erased_at: UtcDateTime | None = Field(None, description="When its personal data was erased (retention).")
