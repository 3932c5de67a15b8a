"""The Critical Incident Protocol: every transition in the table, every refusal, replay."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from sims import protocol
from sims.errors import TransitionNotAllowed, ValidationFailed
from sims.messages import RaiseIncident, Transition, Trigger, UpdateIncident
from sims.model import TERMINAL_STATES, Incident, State

NOW = datetime(2026, 11, 30, 22, 0, tzinfo=timezone.utc)
WARDS = ["Peckham", "Rye Lane"]


def raised(**overrides: object) -> Incident:
    data = dict(actor="duty", type="stabbing", level="2", occurred_at="2026-11-30T21:40:00Z", ward="Peckham",
                location="Rye Lane", outline="A young man was stabbed", restricted="Victim: J Smith, 17")
    command = RaiseIncident.model_validate({**data, **overrides})
    incident = protocol.replay(protocol.decide_raise(command, incident_id="i1", reference="SWK-2026-0001",
                                                     wards=WARDS, now=NOW))
    assert incident is not None
    return incident


def in_state(state: State) -> Incident:
    return raised().model_copy(update={"state": state})


@pytest.mark.parametrize(("state", "trigger", "target"), [(s, t, v) for (s, t), v in protocol.TRANSITIONS.items()])
def test_every_transition_in_the_table_moves_to_its_target(state: State, trigger: Trigger, target: State) -> None:
    """Each (state, trigger) row leads to its target state and records from/to/trigger."""
    incident = in_state(state)
    events = protocol.decide_transition(incident, Transition(actor="d", incident="i1", trigger=trigger,
                                                             reason="because"), NOW)
    after = protocol.evolve(incident, events[0])
    assert after.state is target
    assert after.version == incident.version + 1
    assert events[0].data == {"from": state.value, "to": target.value, "trigger": trigger.value, "reason": "because"}


@pytest.mark.parametrize(("state", "trigger"), [(s, t) for s in State for t in Trigger if (s, t) not in protocol.TRANSITIONS])
def test_every_pair_not_in_the_table_is_refused_with_what_is_allowed(state: State, trigger: Trigger) -> None:
    """Anything not in the table is refused, naming the state, the trigger and the legal moves."""
    incident = in_state(state)
    with pytest.raises(TransitionNotAllowed) as refused:
        protocol.decide_transition(incident, Transition(actor="d", incident="i1", trigger=trigger, reason="r"), NOW)
    assert refused.value.state == state.value and refused.value.trigger == trigger.value
    assert refused.value.allowed == [t.value for t in protocol.allowed_triggers(state)]
    assert state.value.replace("_", " ") in str(refused.value)


@pytest.mark.parametrize("trigger", [Trigger.STAND_DOWN, Trigger.CLOSE, Trigger.DE_ESCALATE])
def test_stand_down_close_and_de_escalate_need_a_reason(trigger: Trigger) -> None:
    state = next(s for (s, t) in protocol.TRANSITIONS if t is trigger)
    with pytest.raises(TransitionNotAllowed, match="give a reason"):
        protocol.decide_transition(in_state(state), Transition(actor="d", incident="i1", trigger=trigger), NOW)


def test_terminal_states_have_no_way_out_and_refuse_updates() -> None:
    for state in TERMINAL_STATES:
        assert protocol.allowed_triggers(state) == []
        with pytest.raises(TransitionNotAllowed, match="raise a new incident"):
            protocol.decide_update(in_state(state), UpdateIncident(actor="d", incident="i1", outline="x"), NOW)


def test_escalation_marks_the_incident_gold_and_it_stays_gold() -> None:
    incident = raised()
    for trigger in (Trigger.ESCALATE, Trigger.DE_ESCALATE):
        event = protocol.decide_transition(incident, Transition(actor="d", incident="i1", trigger=trigger, reason="r"), NOW)[0]
        incident = protocol.evolve(incident, event)
    assert incident.state is State.ACTIVE and incident.gold is True


def test_raise_refuses_unknown_ward_and_future_time_naming_both() -> None:
    command = RaiseIncident(actor="d", type="shooting", level="1", occurred_at=NOW + timedelta(hours=1),
                            ward="Atlantis", location="x", outline="y")
    with pytest.raises(ValidationFailed) as refused:
        protocol.decide_raise(command, incident_id="i", reference="r", wards=WARDS, now=NOW)
    assert len(refused.value.problems) == 2
    assert "'Atlantis' is not a ward" in refused.value.problems[0]
    assert "future" in refused.value.problems[1]


def test_updates_add_and_remove_list_items_and_replace_values() -> None:
    incident = raised()
    steps = [
        UpdateIncident(actor="d", incident="i1", add_cordons=("Rye Lane north", "Station approach"),
                       victim_age_band="18-24", cross_border=True, other_borough="Lambeth"),
        UpdateIncident(actor="d", incident="i1", add_cordons=("Rye Lane north",), remove_cordons=("Station approach",),
                       outline="A man in his twenties was stabbed", level="3",
                       add_police_powers=({"kind": "section_60", "area": "Peckham", "authorised_at": "2026-11-30T22:00:00Z",
                                           "expires_at": "2026-12-01T07:00:00Z"},)),
    ]
    for command in steps:
        incident = protocol.evolve(incident, protocol.decide_update(incident, command, NOW)[0])
    assert incident.details.cordons == ("Rye Lane north",)
    assert incident.details.victim_age_band == "18-24" and incident.details.other_borough == "Lambeth"
    assert incident.outline == "A man in his twenties was stabbed" and incident.level == "3"
    assert incident.details.police_powers[0].expires_at == datetime(2026, 12, 1, 7, tzinfo=timezone.utc)
    assert incident.version == 3


def test_police_power_expiring_before_authorisation_is_refused() -> None:
    command = UpdateIncident(actor="d", incident="i1", add_police_powers=(
        {"kind": "section_35", "area": "x", "authorised_at": "2026-11-30T22:00:00Z", "expires_at": "2026-11-30T21:00:00Z"},))
    with pytest.raises(ValidationFailed, match="expires before"):
        protocol.decide_update(raised(), command, NOW)


def test_empty_update_is_refused() -> None:
    with pytest.raises(ValidationFailed, match="changes nothing"):
        protocol.decide_update(raised(), UpdateIncident(actor="d", incident="i1"), NOW)


def test_restricted_text_never_prints_outside_reveal() -> None:
    incident = raised()
    assert str(incident.restricted) == "[restricted]" and f"{incident.restricted}" == "[restricted]"
    assert incident.restricted.reveal() == "Victim: J Smith, 17"
    assert incident.model_dump(mode="json")["restricted"] == "Victim: J Smith, 17"  # stored, behind sign-in


def test_times_without_zone_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        RaiseIncident(actor="d", type="other", level="1", occurred_at="2026-11-30T21:40:00", ward="Peckham",
                      location="x", outline="y")
