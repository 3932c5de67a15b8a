"""Retention policy: which closed incidents are due for erasure, and the erasure decision itself."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sims import protocol
from sims.erasure import ERASED, scrub_delivery
from sims.errors import TransitionNotAllowed
from sims.messages import ErasePersonalData, Event, EventType, RaiseIncident
from sims.model import TERMINAL_STATES, Incident, State
from sims.retention import (
    closed_at,
    decide_erase,
    due_for_erasure,
    erasure_due_at,
    reason_for,
    without_addresses,
)

NOW = datetime(2026, 11, 30, 22, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def raised(reference: str = "SWK-2026-0001", incident_id: str = "i1") -> Incident:
    command = RaiseIncident(actor="duty", type="stabbing", level="1", occurred_at="2026-11-30T21:40:00Z",
                            ward="Peckham", location="Rye Lane", outline="A young man was stabbed",
                            restricted="Victim: Jordan Smith, 17")
    incident = protocol.replay(protocol.decide_raise(command, incident_id=incident_id, reference=reference,
                                                     wards=["Peckham"], now=NOW))
    assert incident is not None
    return incident


def ended(state: State, at: datetime, **kw: str) -> Incident:
    incident = raised(**kw)
    event = Event(type=EventType.STATE_CHANGED, incident_id=incident.id, at=at, actor="d", command_id="c",
                  data={"from": "review", "to": state.value, "trigger": "close", "reason": "done"})
    return protocol.evolve(incident, event)


def erase(incident: Incident) -> ErasePersonalData:
    return ErasePersonalData(actor="sims", incident=incident.id, reason="retention period ended")


def test_closing_or_standing_down_records_when() -> None:
    for state in TERMINAL_STATES:
        incident = ended(state, NOW + DAY)
        assert incident.closed_at == NOW + DAY and closed_at(incident) == NOW + DAY
    assert raised().closed_at is None and closed_at(raised()) is None


@pytest.mark.parametrize("state", [s for s in State if s not in TERMINAL_STATES])
def test_an_open_incident_is_never_due_however_old(state: State) -> None:
    incident = raised().model_copy(update={"state": state})
    assert erasure_due_at(incident, DAY) is None
    assert due_for_erasure([incident], NOW + 3650 * DAY, DAY) == []


def test_a_closed_incident_is_due_exactly_when_its_retention_ends() -> None:
    incident = ended(State.CLOSED, NOW)
    assert erasure_due_at(incident, 30 * DAY) == NOW + 30 * DAY
    assert due_for_erasure([incident], NOW + 30 * DAY - timedelta(seconds=1), 30 * DAY) == []
    [due] = due_for_erasure([incident], NOW + 30 * DAY, 30 * DAY)
    assert due.incident_id == incident.id and due.closed_at == NOW and due.due_at == NOW + 30 * DAY


def test_retention_zero_makes_a_closed_incident_due_at_once() -> None:
    incident = ended(State.STOOD_DOWN, NOW)
    assert [d.reference for d in due_for_erasure([incident], NOW, timedelta(0))] == ["SWK-2026-0001"]


def test_an_erased_incident_is_not_due_again() -> None:
    incident = ended(State.CLOSED, NOW)
    [event] = decide_erase(incident, erase(incident), NOW + 40 * DAY)
    after = protocol.evolve(incident, event)
    assert due_for_erasure([after], NOW + 3650 * DAY, DAY) == []


def test_due_incidents_come_oldest_first_and_others_are_left_out() -> None:
    old = ended(State.CLOSED, NOW - 90 * DAY, reference="SWK-2026-0001", incident_id="a")
    newer = ended(State.STOOD_DOWN, NOW - 40 * DAY, reference="SWK-2026-0002", incident_id="b")
    recent = ended(State.CLOSED, NOW - 5 * DAY, reference="SWK-2026-0003", incident_id="c")
    still_open = raised(reference="SWK-2026-0004", incident_id="d")
    due = due_for_erasure([recent, newer, still_open, old], NOW, 30 * DAY)
    assert [d.reference for d in due] == ["SWK-2026-0001", "SWK-2026-0002"]


def test_a_projection_without_closed_at_falls_back_to_its_last_change() -> None:
    incident = ended(State.CLOSED, NOW).model_copy(update={"closed_at": None, "updated_at": NOW - 10 * DAY})
    assert erasure_due_at(incident, DAY) == NOW - 9 * DAY


@pytest.mark.parametrize("state", [s for s in State if s not in TERMINAL_STATES])
def test_erasing_an_open_incident_is_refused(state: State) -> None:
    incident = raised().model_copy(update={"state": state})
    with pytest.raises(TransitionNotAllowed, match="still open") as refused:
        decide_erase(incident, erase(incident), NOW)
    assert refused.value.state == state.value


def test_erasure_clears_the_details_and_keeps_the_record() -> None:
    incident = ended(State.CLOSED, NOW)
    [event] = decide_erase(incident, erase(incident), NOW + DAY)
    assert event.type is EventType.PERSONAL_DATA_ERASED and event.data["fields"] == ["restricted"]
    assert "Jordan" not in event.model_dump_json()
    after = protocol.evolve(incident, event)
    assert after.restricted.reveal() == "" and after.erased_at == NOW + DAY
    assert after.version == incident.version + 1 and after.state is State.CLOSED
    assert (after.reference, after.outline, after.occurred_at, after.closed_at, after.closed_reason) == (
        incident.reference, incident.outline, incident.occurred_at, incident.closed_at, incident.closed_reason)
    assert "Personal data erased (restricted)" in event.summary()


def test_erasing_twice_decides_nothing_the_second_time() -> None:
    incident = ended(State.CLOSED, NOW)
    after = protocol.evolve(incident, decide_erase(incident, erase(incident), NOW)[0])
    assert decide_erase(after, erase(after), NOW + DAY) == []


def test_a_delivery_record_loses_the_address_and_error_text_but_keeps_its_status() -> None:
    record = {"key": "i1.holding.p1.sms.1", "to": "+447700900123", "status": "failed", "contact_id": "p1",
              "error": "21211: The 'To' number +447700900123 is not a valid phone number", "attempts": 1}
    scrubbed = scrub_delivery(record)
    assert scrubbed is not None
    assert scrubbed["to"] == ERASED and "+4477" not in str(scrubbed)
    assert scrubbed["error"] == f"21211: {ERASED}"
    assert {k: scrubbed[k] for k in ("key", "status", "contact_id", "attempts")} == {
        "key": "i1.holding.p1.sms.1", "status": "failed", "contact_id": "p1", "attempts": 1}
    assert scrub_delivery(None) is None


def test_the_reason_names_the_period() -> None:
    assert reason_for(30 * DAY) == "retention period ended (30 days after closure)"
    assert reason_for(DAY) == "retention period ended (1 day after closure)"


def test_every_due_incident_is_tried_and_one_that_must_wait_is_tried_again() -> None:
    """The sweep erases what it can; a deferred incident stays due; past the limit it is erased anyway."""
    import asyncio

    from sims.erasure import Erased, ErasureDeferred, ErasureService

    class Incidents:
        def __init__(self, items: list[Incident]) -> None:
            self.items = {i.id: i for i in items}
            self.handled: list[str] = []

        async def current(self, key: str) -> Incident:
            return self.items[key]

        async def handle(self, command: ErasePersonalData) -> object:
            incident = self.items[command.incident]
            events = decide_erase(incident, command, NOW)
            for event in events:
                self.items[incident.id] = protocol.evolve(incident, event)
            self.handled.append(incident.id)
            return type("Result", (), {"ok": True, "version": self.items[incident.id].version, "error": None})()

    class Clock:
        now_ = NOW

        def now(self) -> datetime:
            return self.now_

    class Nothing:
        async def destroy(self, incident_id: str) -> bool:
            return True

        async def get(self, bucket: str, key: str) -> object:
            return {"p1": [f"{key.split('.', 1)[1]}.closure.p1.sms.1"]} if key == "told.busy" else None

        async def entries(self, bucket: str, pattern: str = ">") -> dict[str, object]:
            return {}

        async def append(self, **kw: object) -> None:
            return None

    async def purge(bucket: str, key: str) -> None:
        return None

    quiet = ended(State.CLOSED, NOW - 40 * DAY, reference="SWK-2026-0001", incident_id="quiet")
    busy = ended(State.CLOSED, NOW - 30 * DAY - timedelta(hours=1), reference="SWK-2026-0002", incident_id="busy")
    incidents, clock, ports = Incidents([quiet, busy]), Clock(), Nothing()
    service = ErasureService(incidents=incidents, keys=ports, kv=ports, audit=ports, clock=clock,  # type: ignore[arg-type]
                             purge=purge, retention=30 * DAY)
    outcomes = asyncio.run(service.run(incidents.items.values(), actor="sims"))
    assert [(d.incident_id, type(o)) for d, o in outcomes] == [("quiet", Erased), ("busy", ErasureDeferred)]
    assert incidents.items["quiet"].erased_at is not None and incidents.items["busy"].erased_at is None
    clock.now_ = NOW + 2 * DAY  # busy is now more than a day past due: its stuck message no longer holds it
    [done] = asyncio.run(service.sweep(incidents.items.values()))
    assert done.incident_id == "busy" and incidents.items["busy"].erased_at is not None


@pytest.mark.parametrize(("text", "expected"), [
    ("The 'To' number +447700900123 is not a valid phone number.",
     "The 'To' number [address] is not a valid phone number."),
    ("550 5.1.1 <jo.smith@example.org>: Recipient address rejected", "550 5.1.1 <[address]>: Recipient address rejected"),
    ("to whatsapp:+44 7700 900123 failed", "to [address] failed"),
    ("call 07700 900123.", "call [address]."),
])
def test_provider_errors_lose_numbers_and_addresses_before_they_reach_the_audit_trail(text: str, expected: str) -> None:
    assert without_addresses(text) == expected


@pytest.mark.parametrize("text", ["Twilio error 21211 at 2026-12-01T02:00:00Z", "code 30003 Unreachable handset",
                                  "retry after 300 seconds (429) SM0123456789abcdef0123456789abcdef"])
def test_codes_times_and_provider_ids_are_left_alone(text: str) -> None:
    assert without_addresses(text) == text
