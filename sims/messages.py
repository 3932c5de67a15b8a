"""Commands (imperative, from people and systems) and events (past tense, what happened).

These are also the wire schemas: commands arrive as JSON on NATS and HTTP, events are stored in
JetStream. A command's `command_id` is its idempotency key.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from sims.ids import new_id
from sims.model import (
    IncidentType,
    Level,
    PolicePower,
    RestrictedText,
    Short,
    State,
    UtcDateTime,
    VictimAgeBand,
)

MAX_COMMAND_BYTES = 64 * 1024


class Trigger(StrEnum):
    """What moves an incident through the Critical Incident Protocol."""

    START_NOTIFYING = "start_notifying"
    CONFIRM_NOTIFIED = "confirm_notified"
    ESCALATE = "escalate"
    DE_ESCALATE = "de_escalate"
    BEGIN_REASSURANCE = "begin_reassurance"
    BEGIN_RECOVERY = "begin_recovery"
    BEGIN_REVIEW = "begin_review"
    CLOSE = "close"
    STAND_DOWN = "stand_down"


class _Command(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    command_id: str = Field(default_factory=new_id, min_length=8, max_length=128, pattern=r"^[A-Za-z0-9_=-]+(\.[A-Za-z0-9_=-]+)*$")
    actor: str = Field(min_length=1, max_length=120)


class RaiseIncident(_Command):
    """A duty officer (or another system) raises a critical incident."""

    kind: Literal["raise"] = "raise"
    type: IncidentType
    level: Level
    occurred_at: UtcDateTime
    ward: str = Field(min_length=1, max_length=80)
    location: str = Field(min_length=1, max_length=300)
    outline: str = Field(min_length=1, max_length=2000, description="What may be shared, in outline.")
    restricted: RestrictedText = Field(
        default="", max_length=8000, description="What may not be shared outside SIMS (names, ...)."
    )
    exercise: bool = False
    also_affects: tuple[Annotated[str, Field(pattern=r"^[A-Z]{2,5}$")], ...] = Field(
        default=(), max_length=10, description="Codes of neighbouring boroughs to tell as well (pan-London), "
        "beyond those whose boundary the ward is on.")
    linked_from: str | None = Field(default=None, max_length=64, pattern=r"^[A-Z]{2,5}-\d{4}-\d{4,}$",
                                    description="Reference of the neighbouring borough's incident this one "
                                    "was raised from (a boundary notice).")


class UpdateIncident(_Command):
    """Details arrive or are corrected; lists are added to (and removed from), values replaced."""

    kind: Literal["update"] = "update"
    incident: str = Field(min_length=1, max_length=64, description="Incident id or reference.")
    expected_version: int | None = Field(default=None, ge=0)
    level: Level | None = None
    location: str | None = Field(default=None, min_length=1, max_length=300)
    outline: str | None = Field(default=None, min_length=1, max_length=2000)
    restricted: RestrictedText | None = Field(default=None, max_length=8000)
    victim_age_band: VictimAgeBand | None = None
    cross_border: bool | None = None
    other_borough: str | None = Field(default=None, max_length=80)
    add_crime_scenes: tuple[Short, ...] = ()
    add_cordons: tuple[Short, ...] = ()
    add_rendezvous_points: tuple[Short, ...] = ()
    add_road_closures: tuple[Short, ...] = ()
    add_police_powers: tuple[PolicePower, ...] = ()
    remove_crime_scenes: tuple[Short, ...] = ()
    remove_cordons: tuple[Short, ...] = ()
    remove_rendezvous_points: tuple[Short, ...] = ()
    remove_road_closures: tuple[Short, ...] = ()

    def changes(self) -> dict[str, Any]:
        """The fields this update sets, as they go into the event."""
        data = self.model_dump(
            mode="json", exclude={"kind", "incident", "expected_version", "command_id", "actor"},
            exclude_defaults=True,
        )
        return {k: v for k, v in data.items() if v not in (None, [], ())}


class Transition(_Command):
    """Move an incident on through the protocol (stand down and close need a reason)."""

    kind: Literal["transition"] = "transition"
    incident: str = Field(min_length=1, max_length=64)
    trigger: Trigger
    reason: str = Field(default="", max_length=2000)
    expected_version: int | None = Field(default=None, ge=0)


class DraftBriefing(_Command):
    """Save a new version of the elected members' briefing (what members may say to the community)."""

    kind: Literal["draft_briefing"] = "draft_briefing"
    incident: str = Field(min_length=1, max_length=64)
    talking_points: str = Field(min_length=1, max_length=1500)
    expected_version: int | None = Field(default=None, ge=0)


class ApproveBriefing(_Command):
    """Approve a briefing version: it is sent to the elected members by SMS and email."""

    kind: Literal["approve_briefing"] = "approve_briefing"
    incident: str = Field(min_length=1, max_length=64)
    briefing_version: int = Field(ge=1)
    expected_version: int | None = Field(default=None, ge=0)


class SendUpdate(_Command):
    """Tell everyone who was told about the incident something new (shareable text only)."""

    kind: Literal["send_update"] = "send_update"
    incident: str = Field(min_length=1, max_length=64)
    text: str = Field(min_length=1, max_length=600)
    expected_version: int | None = Field(default=None, ge=0)


class ActOnTask(_Command):
    """Acknowledge, complete, decline (hand to the deputy) or waive a task; `person` is set for link/SMS use."""

    kind: Literal["task"] = "task"
    incident: str = Field(min_length=1, max_length=64)
    task: str = Field(min_length=1, max_length=64)
    action: Literal["acknowledge", "done", "decline", "waive"]
    note: str = Field(default="", max_length=2000, description="What was done (evidence).")
    reason: str = Field(default="", max_length=2000, description="Why it can't be done / is waived.")
    person: str | None = Field(default=None, max_length=64, description="The contact acting through their link.")
    via: Literal["console", "link", "sms", "cli", "api"] = "api"
    expected_version: int | None = Field(default=None, ge=0)


class Acknowledge(_Command):
    """A person confirms they have read a message (holding notice, briefing, update...)."""

    kind: Literal["acknowledge"] = "acknowledge"
    incident: str = Field(min_length=1, max_length=64)
    message_kind: str = Field(min_length=1, max_length=32)
    person: str = Field(min_length=1, max_length=64)
    via: Literal["link", "sms", "console", "api"] = "link"
    expected_version: int | None = Field(default=None, ge=0)


class EscalateTask(_Command):
    """A task's timer fired: remind (level 1), tell the deputy (2), tell the duty officer (3)."""

    kind: Literal["escalate_task"] = "escalate_task"
    incident: str = Field(min_length=1, max_length=64)
    task: str = Field(min_length=1, max_length=64)
    level: int = Field(ge=1, le=3)
    expected_version: int | None = Field(default=None, ge=0)


class ErasePersonalData(_Command):
    """Erase a closed incident's personal data (retention): its key is destroyed, the record stays.

    Issued by the worker's retention sweep and `sims retention run`; not part of the public `Command`
    union (no API caller erases data).
    """

    kind: Literal["erase_personal_data"] = "erase_personal_data"
    incident: str = Field(min_length=1, max_length=64)
    reason: str = Field(min_length=1, max_length=500)
    expected_version: int | None = Field(default=None, ge=0)


from sims.fund import (  # noqa: E402 - the fund's commands travel the same command stream
    ApproveClaim,
    CloseClaim,
    DeclineClaim,
    EditClaim,
    RecordSpend,
    SubmitClaim,
    SubmitEvaluation,
    WithdrawClaim,
)

FUND_COMMANDS = (EditClaim, SubmitClaim, ApproveClaim, DeclineClaim, RecordSpend, SubmitEvaluation, CloseClaim,
                 WithdrawClaim)
Command = Annotated[Union[RaiseIncident, UpdateIncident, Transition, DraftBriefing, ApproveBriefing, SendUpdate,
                          ActOnTask, Acknowledge, EscalateTask, EditClaim, SubmitClaim, ApproveClaim, DeclineClaim,
                          RecordSpend, SubmitEvaluation, CloseClaim, WithdrawClaim],
                    Field(discriminator="kind")]
COMMAND_ADAPTER: TypeAdapter[Command] = TypeAdapter(Command)
# Commands on an incident that exists (not a raise, not the fund claim's)
IncidentCommand = Union[UpdateIncident, Transition, DraftBriefing, ApproveBriefing, SendUpdate, ActOnTask, Acknowledge,
                        EscalateTask]


class EventType(StrEnum):
    RAISED = "incident.raised"
    UPDATED = "incident.updated"
    STATE_CHANGED = "incident.state_changed"
    BRIEFING_DRAFTED = "briefing.drafted"
    BRIEFING_APPROVED = "briefing.approved"
    UPDATE_SENT = "update.sent"
    TASKS_PLANNED = "tasks.planned"
    TASK_CHANGED = "task.changed"
    MESSAGE_ACKNOWLEDGED = "message.acknowledged"
    PERSONAL_DATA_ERASED = "personal_data.erased"


class Event(BaseModel):
    """One fact about an incident, as stored in the events stream."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: EventType
    incident_id: str
    at: UtcDateTime
    actor: str
    command_id: str
    data: dict[str, Any]

    def summary(self) -> str:
        if self.type is EventType.RAISED:
            return f"Raised ({self.data['type']}, level {self.data['level']}) in {self.data['ward']}"
        if self.type is EventType.UPDATED:
            return "Updated: " + ", ".join(sorted(k for k in self.data if k != "restricted")) + (
                " (+restricted details)" if "restricted" in self.data else ""
            )
        if self.type is EventType.BRIEFING_DRAFTED:
            return f"Members' briefing version {self.data['version']} drafted"
        if self.type is EventType.BRIEFING_APPROVED:
            return f"Members' briefing version {self.data['version']} approved and sent"
        if self.type is EventType.TASKS_PLANNED:
            return f"{len(self.data['tasks'])} task(s) planned from the protocol"
        if self.type is EventType.TASK_CHANGED:
            task = self.data["task"]
            extra = f" - {self.data.get('reason') or self.data.get('note')}" if (self.data.get("reason") or self.data.get("note")) else ""
            return f"Task '{task['title']}': {self.data['action']} -> {task['status']} (owner {task['owner']}){extra}"
        if self.type is EventType.MESSAGE_ACKNOWLEDGED:
            return f"{self.data['person']} acknowledged the {self.data['kind'].replace('_', ' ')} ({self.data['via']})"
        if self.type is EventType.PERSONAL_DATA_ERASED:
            return f"Personal data erased ({', '.join(self.data['fields'])}) - {self.data['reason']}"
        if self.type is EventType.UPDATE_SENT:
            return f"Update sent to everyone told: {self.data['text'][:80]}"
        reason = f" - {self.data['reason']}" if self.data.get("reason") else ""
        return f"{self.data['from']} -> {self.data['to']} ({self.data['trigger']}){reason}"


def state_of(event: Event) -> State | None:
    return State(event.data["to"]) if event.type is EventType.STATE_CHANGED else None


def parse_time(value: str) -> datetime:
    return TypeAdapter(UtcDateTime).validate_python(value)


def is_acknowledgement(command: object) -> bool:
    """A command that speaks for a person (an acknowledgement, a task action, a fund decision).

    These travel only on the acknowledgement subject, which the worker's NATS user cannot publish
    to, so a compromised worker cannot forge one.
    """
    return isinstance(command, (Acknowledge, ActOnTask, ApproveClaim, DeclineClaim))
