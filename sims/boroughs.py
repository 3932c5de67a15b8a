"""Several boroughs in one deployment: which neighbours an incident concerns, and what crosses to them.

Pure: no I/O. A borough's protocol names its neighbouring boroughs (`boundaries:`), with the wards
on each side of the shared boundary. An incident concerns a neighbour when its ward is on that
boundary or the raise names the neighbour (`also_affects`). The neighbour is sent a
`BoundaryNotice` holding shareable fields only (never restricted details), and raises a linked
incident of its own from it, under its own protocol and contacts. When the sender's incident is
escalated, stood down or closed the neighbour is told again, and updates everyone told of its
linked incident. A linked incident is not forwarded again, so a notice never echoes back.

The VRU's overview gets a `VruSummary` of every incident of every borough: shareable fields only.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sims.errors import ValidationFailed
from sims.messages import RaiseIncident, SendUpdate
from sims.model import Incident, IncidentType, Level, State, UtcDateTime
from sims.protocol_config import ProtocolConfig

BOUNDARY_WARD = "the ward is on the boundary"
NAMED = "named on the raise"
MAX_OUTLINE, MAX_LOCATION = 2000, 300


class BoundaryNotice(BaseModel):
    """What one borough tells a neighbour about an incident: shareable fields only (the wire schema)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    from_code: str = Field(pattern=r"^[A-Z]{2,5}$")
    from_borough: str
    to_code: str = Field(pattern=r"^[A-Z]{2,5}$")
    incident_id: str = Field(pattern=r"^[A-Za-z0-9_-]{8,64}$")
    reference: str
    type: IncidentType
    level: Level
    occurred_at: UtcDateTime
    ward: str
    their_wards: tuple[str, ...] = Field((), description="The receiver's wards across the boundary.")
    location: str
    outline: str
    exercise: bool = False
    why: str
    kind: Literal["raised", "changed"] = Field(default="raised", description="A raise, or a later change of state.")
    state: State = State.RAISED
    version: int = Field(default=1, ge=1, description="The sender's incident version this notice reflects.")


# Changes of state a neighbour is told about (after the raise): the incident went to gold, or ended.
TOLD_STATES = frozenset({State.ESCALATED, State.STOOD_DOWN, State.CLOSED})
_SAID = {State.ESCALATED: "{b} has escalated {ref} to gold", State.STOOD_DOWN: "{b} has stood down {ref}",
         State.CLOSED: "{b} has closed {ref}"}


class VruSummary(BaseModel):
    """One incident as the VRU's pan-London view shows it: shareable fields only."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    borough: str
    borough_name: str
    incident_id: str
    reference: str
    version: int
    state: State
    type: IncidentType
    level: Level
    ward: str
    gold: bool
    exercise: bool
    raised_at: UtcDateTime
    updated_at: UtcDateTime
    linked_from: str | None = None
    concerns: tuple[str, ...] = ()


def unknown_neighbours(protocol: ProtocolConfig, also_affects: tuple[str, ...]) -> list[str]:
    """Codes named on a raise that are not neighbouring boroughs in this protocol."""
    return [code for code in also_affects if code not in protocol.boundaries]


def concerned(protocol: ProtocolConfig, ward: str, also_affects: tuple[str, ...] = ()) -> dict[str, str]:
    """Neighbouring borough code -> why it is told, for an incident in `ward`; in the protocol's order."""
    found: dict[str, str] = {}
    for code, boundary in protocol.boundaries.items():
        if ward in boundary.wards:
            found[code] = BOUNDARY_WARD
        elif code in also_affects:
            found[code] = NAMED
    return found


def notices_for(incident: Incident, protocol: ProtocolConfig) -> list[BoundaryNotice]:
    """The notices a raised incident sends its neighbours; none for one raised from a notice."""
    if incident.linked_from:
        return []
    return [
        BoundaryNotice(
            from_code=protocol.borough.code, from_borough=protocol.borough.name, to_code=code,
            incident_id=incident.id, reference=incident.reference, type=incident.type, level=incident.level,
            occurred_at=incident.occurred_at, ward=incident.ward,
            their_wards=protocol.boundaries[code].wards.get(incident.ward, ()),
            location=incident.location, outline=incident.outline, exercise=incident.exercise, why=why)
        for code, why in concerned(protocol, incident.ward, incident.also_affects).items()
    ]


def changes_for(incident: Incident, protocol: ProtocolConfig) -> list[BoundaryNotice]:
    """After a change of state a neighbour cares about (TOLD_STATES): one notice per neighbour told of the raise."""
    if incident.state not in TOLD_STATES:
        return []
    return [notice.model_copy(update={"kind": "changed", "state": incident.state, "version": incident.version})
            for notice in notices_for(incident, protocol)]


def ward_for(notice: BoundaryNotice, protocol: ProtocolConfig) -> str:
    """The receiver's ward for a linked incident: one the sender names, else ours facing the sender's ward,
    else our first ward on that boundary; ValidationFailed when the receiver has none."""
    for ward in notice.their_wards:
        if ward in protocol.ward_set:
            return ward
    boundary = protocol.boundaries.get(notice.from_code)
    if boundary is not None:
        facing = [ours for ours, theirs in boundary.wards.items() if notice.ward in theirs]
        if facing:
            return facing[0]
        if boundary.wards:
            return next(iter(boundary.wards))
    problem = (f"{protocol.borough.name} has no ward on its boundary with {notice.from_borough} "
               f"({notice.from_code}); add boundaries.{notice.from_code} to its protocol")
    raise ValidationFailed("The boundary notice was not raised", [problem])


def command_id_for(notice: BoundaryNotice) -> str:
    """The linked raise's idempotency key: one linked incident per notice, however often it arrives."""
    return f"boundary.{notice.from_code}.{notice.incident_id}"


def linked_raise(notice: BoundaryNotice, protocol: ProtocolConfig) -> RaiseIncident:
    """The receiver's own raise from a neighbour's notice: its ward, linked back, nothing restricted."""
    if notice.to_code != protocol.borough.code:
        raise ValidationFailed("The boundary notice was not raised", [
            f"the notice is for {notice.to_code}, this is {protocol.borough.code}"])
    head = f"Linked to {notice.reference} ({notice.from_borough}, {notice.ward}; {notice.why}): "
    location = f"{notice.location} ({notice.from_borough})"
    return RaiseIncident(
        command_id=command_id_for(notice), actor=f"boundary:{notice.from_code}", type=notice.type,
        level=notice.level, occurred_at=notice.occurred_at, ward=ward_for(notice, protocol),
        location=location[:MAX_LOCATION], outline=(head + notice.outline)[:MAX_OUTLINE],
        exercise=notice.exercise, linked_from=notice.reference)


def vru_summary(incident: Incident, protocol: ProtocolConfig) -> VruSummary:
    """The VRU's view of one incident."""
    return VruSummary(
        borough=protocol.borough.code, borough_name=protocol.borough.name, incident_id=incident.id,
        reference=incident.reference, version=incident.version, state=incident.state, type=incident.type,
        level=incident.level, ward=incident.ward, gold=incident.gold, exercise=incident.exercise,
        raised_at=incident.raised_at, updated_at=incident.updated_at, linked_from=incident.linked_from,
        concerns=() if incident.linked_from else tuple(concerned(protocol, incident.ward, incident.also_affects)))


def linked_update(notice: BoundaryNotice, linked_incident_id: str) -> SendUpdate:
    """The receiver's update to everyone told of its linked incident: the neighbour's new state, nothing more
    (a stand-down or closure reason is the sender's free text and does not cross)."""
    said = _SAID.get(notice.state, "{b}'s {ref} is now " + notice.state.value.replace("_", " "))
    return SendUpdate(
        command_id=f"{command_id_for(notice)}.v{notice.version}", actor=f"boundary:{notice.from_code}",
        incident=linked_incident_id,
        text=said.format(b=notice.from_borough, ref=notice.reference) + ", the incident this one is linked to.")
