"""What message templates may see: the shareable part of an incident, the recipient, the resources
and the kind-specific extras (task, update, reason).

Templates for SMS, email subjects and bodies are given these views and never an `Incident`, so the
restricted details (names, ...) cannot reach a message: `SharedView` has no field for them, and every
view refuses a `Restricted` value outright.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sims.model import Incident, IncidentType, Level, Restricted, State

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

TYPE_LABELS: dict[IncidentType, str] = {
    IncidentType.STABBING: "Stabbing",
    IncidentType.SHOOTING: "Shooting",
    IncidentType.HOMICIDE: "Homicide",
    IncidentType.SERIOUS_ASSAULT: "Serious assault",
    IncidentType.OTHER: "Serious incident",
}

LEVEL_LABELS: dict[Level, str] = {
    Level.LOCAL: "Level 1 (local)",
    Level.BOROUGH: "Level 2 (borough)",
    Level.MAJOR: "Level 3 (major)",
}


def refuse_restricted(view: DataclassInstance) -> None:
    """Raise TypeError if any field of the dataclass `view` holds (or lists) a `Restricted` value."""
    for field in fields(view):
        value = getattr(view, field.name)
        items = value if isinstance(value, tuple) else (value,)
        if any(isinstance(item, Restricted) for item in items):
            raise TypeError(
                f"{type(view).__name__}.{field.name} was given restricted text; restricted details "
                "never go into messages"
            )


def _require_str(view: object, *names: str) -> None:
    for name in names:
        value = getattr(view, name)
        if not isinstance(value, str):
            raise TypeError(f"{type(view).__name__}.{name} must be text, not {type(value).__name__}")


def as_utc(value: datetime, what: str) -> datetime:
    """`value` in UTC; a time without a timezone is refused (its meaning would be a guess)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must include a timezone")
    return value.astimezone(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class SharedView:
    """The fields of an incident that may go into any message, and nothing else."""

    reference: str
    type_label: str
    level: Level
    ward: str
    location: str
    outline: str
    occurred_at: datetime
    exercise: bool
    gold: bool
    state: State

    def __post_init__(self) -> None:
        refuse_restricted(self)
        _require_str(self, "reference", "type_label", "level", "ward", "location", "outline", "state")
        object.__setattr__(self, "level", Level(self.level))
        object.__setattr__(self, "state", State(self.state))
        object.__setattr__(self, "occurred_at", as_utc(self.occurred_at, "occurred_at"))

    @classmethod
    def of(cls, incident: Incident) -> SharedView:
        """The shareable view of `incident`; its restricted text is not copied."""
        return cls(
            reference=incident.reference,
            type_label=TYPE_LABELS[incident.type],
            level=incident.level,
            ward=incident.ward,
            location=incident.location,
            outline=incident.outline,
            occurred_at=incident.occurred_at,
            exercise=incident.exercise,
            gold=incident.gold,
            state=incident.state,
        )

    @property
    def level_label(self) -> str:
        return LEVEL_LABELS[self.level]

    @property
    def state_label(self) -> str:
        return self.state.value.replace("_", " ").capitalize()


@dataclass(frozen=True, slots=True, kw_only=True)
class RecipientView:
    """Who a message is for: full name, how to greet them (first name or 'Cllr Okafor'), roles."""

    name: str
    salutation: str
    roles: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "roles", tuple(self.roles))
        refuse_restricted(self)
        _require_str(self, "name", "salutation")


@dataclass(frozen=True, slots=True, kw_only=True)
class Resources:
    """Where residents can get support or pass on information; from the borough's configuration.

    The Wellbeing Hub number is a fictional demo one (Ofcom's drama range); Crimestoppers and
    Fearless are the real national services.
    """

    council: str = "Southwark Council"
    wellbeing_hub_phone: str = "020 7946 0321"
    wellbeing_hub_url: str = "southwark.gov.uk/wellbeing-hub"
    crimestoppers_phone: str = "0800 555 111"
    crimestoppers_url: str = "crimestoppers-uk.org"
    fearless_url: str = "fearless.org"

    def __post_init__(self) -> None:
        refuse_restricted(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class Extra:
    """Kind-specific, shareable fields; refuses `Restricted` text like the views do."""

    def __post_init__(self) -> None:
        refuse_restricted(self)
        for field in fields(self):
            value = getattr(self, field.name)
            if field.type == "str" and not isinstance(value, str):
                raise TypeError(f"{type(self).__name__}.{field.name} must be text")


@dataclass(frozen=True, slots=True, kw_only=True)
class BriefingExtra(Extra):
    """The duty officer's edited lines for elected members; empty means the template's wording."""

    talking_points: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskExtra(Extra):
    """A protocol task for the recipient: its title and when it is due (UTC-aware)."""

    title: str
    due_at: datetime

    def __post_init__(self) -> None:
        Extra.__post_init__(self)
        object.__setattr__(self, "due_at", as_utc(self.due_at, "due_at"))


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateExtra(Extra):
    """What the duty officer wrote for everyone told about the incident."""

    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StandDownExtra(Extra):
    """Why the response was stood down, as it may be shared."""

    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ClosureExtra(Extra):
    """The closing note, as it may be shared."""

    reason: str


# What `Renderer.render_sms` and `render_email` accept as `extra` (which one depends on the kind).
SmsExtra = BriefingExtra | TaskExtra | UpdateExtra | StandDownExtra | ClosureExtra
