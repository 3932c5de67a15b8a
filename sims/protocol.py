"""The Critical Incident Protocol as a table: (state, trigger) -> state, with guards. No I/O."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from sims.errors import TransitionNotAllowed, ValidationFailed
from sims.messages import (
    Acknowledge,
    ActOnTask,
    ApproveBriefing,
    EscalateTask,
    DraftBriefing,
    Event,
    EventType,
    RaiseIncident,
    SendUpdate,
    Transition,
    Trigger,
    UpdateIncident,
)
from sims import tasks
from sims.model import TERMINAL_STATES, Details, Incident, Restricted, State, Task

S, T = State, Trigger

# The whole protocol on one screen. Read a row as: in STATE, TRIGGER moves the incident to TARGET.
TRANSITIONS: dict[tuple[State, Trigger], State] = {
    (S.RAISED, T.START_NOTIFYING): S.NOTIFYING,
    (S.RAISED, T.STAND_DOWN): S.STOOD_DOWN,
    (S.RAISED, T.ESCALATE): S.ESCALATED,
    (S.NOTIFYING, T.CONFIRM_NOTIFIED): S.ACTIVE,
    (S.NOTIFYING, T.ESCALATE): S.ESCALATED,
    (S.NOTIFYING, T.STAND_DOWN): S.STOOD_DOWN,
    (S.ACTIVE, T.ESCALATE): S.ESCALATED,
    (S.ACTIVE, T.BEGIN_REASSURANCE): S.REASSURANCE,
    (S.ACTIVE, T.STAND_DOWN): S.STOOD_DOWN,
    (S.ESCALATED, T.DE_ESCALATE): S.ACTIVE,
    (S.ESCALATED, T.BEGIN_REASSURANCE): S.REASSURANCE,
    (S.ESCALATED, T.STAND_DOWN): S.STOOD_DOWN,
    (S.REASSURANCE, T.ESCALATE): S.ESCALATED,
    (S.REASSURANCE, T.BEGIN_RECOVERY): S.RECOVERY,
    (S.RECOVERY, T.BEGIN_REVIEW): S.REVIEW,
    (S.REVIEW, T.CLOSE): S.CLOSED,
}

# Guards: return a reason to refuse, or None. Kept as data beside the table.
Guard = Callable[[Incident, Transition], str | None]


def _needs_reason(incident: Incident, command: Transition) -> str | None:
    return "give a reason (it goes to everyone who was told and into the audit trail)" if not command.reason.strip() else None


def _can_close(incident: Incident, command: Transition) -> str | None:
    open_steps = [t.title for t in incident.tasks if t.kind == "reassurance" and t.status.value not in ("done", "waived")]
    if open_steps:
        return ("these reassurance steps are still open - complete them or waive each with a reason: "
                + "; ".join(open_steps))
    return _needs_reason(incident, command)


GUARDS: dict[Trigger, Guard] = {
    T.STAND_DOWN: _needs_reason,
    T.CLOSE: _can_close,
    T.DE_ESCALATE: _needs_reason,
}

_WHY_NOT: dict[State, str] = {
    S.CLOSED: "it is closed; raise a new incident if something else has happened",
    S.STOOD_DOWN: "it was stood down; raise a new incident if the threshold is now met",
}


def allowed_triggers(state: State) -> list[Trigger]:
    """The protocol's next legal moves from `state`, in table order."""
    return [trigger for (s, trigger) in TRANSITIONS if s is state]


def next_state(incident: Incident, command: Transition) -> State:
    """The state `command` leads to, or TransitionNotAllowed with a reason the user can act on."""
    target = TRANSITIONS.get((incident.state, command.trigger))
    allowed = [t.value for t in allowed_triggers(incident.state)]
    if target is None:
        reason = _WHY_NOT.get(incident.state) or (
            f"the protocol does not go from {incident.state.value} by {command.trigger.value}"
        )
        raise TransitionNotAllowed(incident.state.value, command.trigger.value, reason, allowed)
    guard = GUARDS.get(command.trigger)
    refusal = guard(incident, command) if guard else None
    if refusal:
        raise TransitionNotAllowed(incident.state.value, command.trigger.value, refusal, allowed)
    return target


def _event(type_: EventType, incident_id: str, command: Any,
           now: datetime, data: dict[str, object]) -> Event:
    return Event(type=type_, incident_id=incident_id, at=now, actor=command.actor,
                 command_id=command.command_id, data=data)


def decide_raise(command: RaiseIncident, *, incident_id: str, reference: str, wards: Iterable[str],
                 now: datetime) -> list[Event]:
    """The events of a valid raise; ValidationFailed names every problem with the command."""
    problems = []
    if command.ward not in set(wards):
        problems.append(f"ward {command.ward!r} is not a ward of this borough (see `sims wards`)")
    if command.occurred_at > now:
        problems.append("occurred_at is in the future")
    if problems:
        raise ValidationFailed("The incident was not raised", problems)
    data = command.model_dump(mode="json", exclude={"kind", "command_id", "actor"})
    data.update(id=incident_id, reference=reference, raised_by=command.actor)
    return [_event(EventType.RAISED, incident_id, command, now, data)]


def decide_update(incident: Incident, command: UpdateIncident, now: datetime) -> list[Event]:
    if incident.state in TERMINAL_STATES:
        raise TransitionNotAllowed(incident.state.value, "update", _WHY_NOT[incident.state])
    changes = command.changes()
    if not changes:
        raise ValidationFailed("The update changes nothing", ["give at least one field to add or correct"])
    for power in command.add_police_powers:
        if power.expires_at <= power.authorised_at:
            raise ValidationFailed("The update was not applied", [f"{power.kind.value} expires before it was authorised"])
    return [_event(EventType.UPDATED, incident.id, command, now, changes)]


def decide_transition(incident: Incident, command: Transition, now: datetime) -> list[Event]:
    target = next_state(incident, command)
    data: dict[str, object] = {"from": incident.state.value, "to": target.value,
                               "trigger": command.trigger.value, "reason": command.reason}
    return [_event(EventType.STATE_CHANGED, incident.id, command, now, data)]


def _open(incident: Incident, what: str) -> None:
    if incident.state in TERMINAL_STATES:
        raise TransitionNotAllowed(incident.state.value, what, _WHY_NOT[incident.state])


def decide_briefing(incident: Incident, command: DraftBriefing | ApproveBriefing, now: datetime) -> list[Event]:
    """A new briefing version, or the approval (and so the sending) of an existing one."""
    if isinstance(command, DraftBriefing):
        _open(incident, "draft_briefing")
        return [_event(EventType.BRIEFING_DRAFTED, incident.id, command, now,
                       {"version": len(incident.briefings) + 1, "talking_points": command.talking_points})]
    _open(incident, "approve_briefing")
    if not 1 <= command.briefing_version <= len(incident.briefings):
        raise ValidationFailed("The briefing was not approved", [
            f"there is no version {command.briefing_version} (drafted: {len(incident.briefings)})"])
    if command.briefing_version == incident.briefing_approved:
        raise ValidationFailed("The briefing was not approved", [f"version {command.briefing_version} was sent already"])
    return [_event(EventType.BRIEFING_APPROVED, incident.id, command, now, {"version": command.briefing_version})]


def decide_send_update(incident: Incident, command: SendUpdate, now: datetime) -> list[Event]:
    _open(incident, "send_update")
    return [_event(EventType.UPDATE_SENT, incident.id, command, now,
                   {"text": command.text, "number": incident.updates_sent + 1})]


def decide_task(incident: Incident, command: ActOnTask, now: datetime,
                deputy_of: Callable[[str], str | None]) -> list[Event]:
    """Act on one task; nothing happens (no event) when the action was already taken."""
    _open(incident, "act on a task of")
    task = next((t for t in incident.tasks if t.id == command.task), None)
    if task is None:
        raise ValidationFailed("No such task", [f"{command.task!r} is not a task of {incident.reference}"])
    changed = tasks.act(task, tasks.TaskAction(command.action), actor_is_duty_officer=command.person is None,
                        person=command.person, note=command.note, reason=command.reason,
                        deputy=deputy_of(task.owner) if task.owner and command.action == "decline" else None)
    if changed is None:
        return []
    return [_event(EventType.TASK_CHANGED, incident.id, command, now, {
        "action": command.action, "via": command.via, "note": command.note, "reason": command.reason,
        "previous_owner": task.owner, "task": changed.model_dump(mode="json")})]


def decide_escalation(incident: Incident, command: EscalateTask, now: datetime) -> list[Event]:
    """A timer fired: escalate the task unless it was acknowledged, done or waived meanwhile."""
    if incident.state in TERMINAL_STATES:
        return []
    task = next((t for t in incident.tasks if t.id == command.task), None)
    changed = tasks.escalate(task, command.level) if task else None
    if changed is None:
        return []
    return [_event(EventType.TASK_CHANGED, incident.id, command, now, {
        "action": f"escalate_{command.level}", "via": "timer", "note": "", "reason": "",
        "previous_owner": changed.owner, "task": changed.model_dump(mode="json")})]


def decide_acknowledge(incident: Incident, command: Acknowledge, now: datetime) -> list[Event]:
    marker = f"{command.message_kind}:{command.person}"
    if marker in incident.acknowledged:
        return []
    return [_event(EventType.MESSAGE_ACKNOWLEDGED, incident.id, command, now,
                   {"kind": command.message_kind, "person": command.person, "via": command.via})]


def _merge(current: tuple[object, ...], add: list[object], remove: list[object]) -> tuple[object, ...]:
    kept = [item for item in current if item not in remove]
    return tuple(kept + [item for item in add if item not in kept])


_LISTS = ("crime_scenes", "cordons", "rendezvous_points", "road_closures", "police_powers")


def evolve(incident: Incident | None, event: Event) -> Incident:
    """Apply one event; replaying every event of an incident gives its current state."""
    if event.type is EventType.RAISED:
        data = dict(event.data)
        return Incident(state=State.RAISED, version=1, raised_at=event.at, updated_at=event.at, **data)
    if incident is None:
        raise ValueError(f"event {event.type} before incident.raised for {event.incident_id}")
    if event.type is EventType.STATE_CHANGED:
        target = State(event.data["to"])
        return incident.model_copy(update={
            "state": target, "version": incident.version + 1, "updated_at": event.at,
            "gold": incident.gold or target is State.ESCALATED,
            "closed_reason": event.data.get("reason") if target in TERMINAL_STATES else incident.closed_reason,
            "closed_at": event.at if target in TERMINAL_STATES else incident.closed_at,
        })
    bump = {"version": incident.version + 1, "updated_at": event.at}
    if event.type is EventType.BRIEFING_DRAFTED:
        return incident.model_copy(update={**bump, "briefings": (*incident.briefings, event.data["talking_points"])})
    if event.type is EventType.BRIEFING_APPROVED:
        return incident.model_copy(update={**bump, "briefing_approved": int(event.data["version"])})
    if event.type is EventType.UPDATE_SENT:
        return incident.model_copy(update={**bump, "updates_sent": incident.updates_sent + 1})
    if event.type is EventType.TASKS_PLANNED:
        planned = tuple(Task.model_validate(t) for t in event.data["tasks"])
        return incident.model_copy(update={**bump, "tasks": incident.tasks + planned})
    if event.type is EventType.TASK_CHANGED:
        changed = Task.model_validate(event.data["task"])
        return incident.model_copy(update={**bump, "tasks": tuple(changed if t.id == changed.id else t
                                                                   for t in incident.tasks)})
    if event.type is EventType.PERSONAL_DATA_ERASED:  # the sealed fields read as erased from now on
        return incident.model_copy(update={**bump, "restricted": Restricted(""), "erased_at": event.at})
    if event.type is EventType.MESSAGE_ACKNOWLEDGED:
        marker = f"{event.data['kind']}:{event.data['person']}"
        return incident.model_copy(update={**bump, "acknowledged": (*incident.acknowledged, marker)})
    changes = event.data
    details = incident.details.model_dump(mode="json")
    for name in _LISTS:
        details[name] = _merge(tuple(details[name]), changes.get(f"add_{name}", []), changes.get(f"remove_{name}", []))
    for name in ("victim_age_band", "cross_border", "other_borough"):
        if name in changes:
            details[name] = changes[name]
    top = {k: changes[k] for k in ("level", "location", "outline", "restricted") if k in changes}
    merged = incident.model_dump(mode="json") | top | {
        "details": details, "version": incident.version + 1, "updated_at": event.at.isoformat(),
    }
    return Incident.model_validate(merged)


def replay(events: Iterable[Event]) -> Incident | None:
    incident: Incident | None = None
    for event in events:
        incident = evolve(incident, event)
    return incident


__all__ = ["TRANSITIONS", "GUARDS", "allowed_triggers", "next_state", "decide_raise", "decide_update",
           "decide_transition", "evolve", "replay", "Details"]
