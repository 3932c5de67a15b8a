"""The readiness report's maths from hand-built events and delivery records: delivery and acknowledgement
times per channel, task outcomes, failed channels, stale contact details, and the trend between drills."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from sims import readiness
from sims.messages import Event, EventType
from sims.model import Incident, State, Task, TaskStatus

T0 = datetime(2026, 11, 30, 21, 0, tzinfo=UTC)
PEOPLE = {
    "police": readiness.Person(id="police", name="PC Whitford", roles=("police_lead",)),
    "cllr": readiness.Person(id="cllr", name="Cllr Jessop", roles=("ward_councillor",)),
    "csp": readiness.Person(id="csp", name="Miriam Harrington", roles=("community_safety_lead",)),
}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def iso(seconds: float) -> str:
    return at(seconds).isoformat()


def task(id_: str, owner: str, role: str, due: float, status: TaskStatus = TaskStatus.PENDING) -> Task:
    return Task(id=id_, number=1, title=id_.replace("_", " "), kind="response", owner_role=role, owner=owner,
                due_at=at(due), status=status)


def incident(state: State = State.STOOD_DOWN, tasks: tuple[Task, ...] = (), ref: str = "SWK-2026-0001",
             raised: datetime = T0) -> Incident:
    return Incident(id="i1", reference=ref, state=state, type="stabbing", level="1", occurred_at=raised,
                    raised_at=raised, ward="Peckham", location="Rye Lane", outline="Exercise", exercise=True,
                    raised_by="duty", updated_at=raised, tasks=tasks)


def ack(person: str, kind: str, seconds: float, via: str = "link") -> Event:
    return Event(type=EventType.MESSAGE_ACKNOWLEDGED, incident_id="i1", at=at(seconds), actor=person,
                 command_id=f"a-{person}-{kind}", data={"kind": kind, "person": person, "via": via})


def task_event(action: str, t: Task, seconds: float, via: str = "link") -> Event:
    return Event(type=EventType.TASK_CHANGED, incident_id="i1", at=at(seconds), actor="x",
                 command_id=f"t-{t.id}-{action}", data={"action": action, "via": via, "note": "", "reason": "",
                                                        "previous_owner": t.owner, "task": t.model_dump(mode="json")})


def record(person: str, kind: str, channel: str, queued: float, *, delivered: float | None = None,
           accepted: float | None = None, status: str = "delivered", error: str | None = None,
           task_id: str = "", history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    hist = history if history is not None else (
        [{"status": "sent", "at": iso(queued + 1), "error_code": None},
         {"status": "delivered", "at": iso(delivered), "error_code": None}] if delivered is not None else [])
    return {"key": f"i1.{kind}.{person}.{channel}.1", "incident_id": "i1", "kind": kind, "task": task_id,
            "contact_id": person, "channel": channel, "to": "x", "queued_at": iso(queued), "status": status,
            "accepted_at": iso(accepted) if accepted is not None else None, "error": error, "history": hist}


CONFIRM = task("confirm_facts", "police", "police_lead", due=3600)
COMMS = task("comms", "csp", "community_safety_lead", due=1800)
REASSURE = task("reassure", "cllr", "ward_councillor", due=7200)
WAIVED = task("waived_step", "csp", "community_safety_lead", due=7200, status=TaskStatus.WAIVED)


def drill() -> readiness.ReadinessReport:
    tasks = (CONFIRM.model_copy(update={"status": TaskStatus.DONE}),
             COMMS.model_copy(update={"status": TaskStatus.DONE}), REASSURE, WAIVED)
    deliveries = [
        record("police", "holding", "sms", 1, delivered=11, accepted=2),
        record("cllr", "holding", "sms", 1, status="failed", history=[],
               error="21211: The 'To' number +447700900143 is not a valid phone number."),
        record("cllr", "holding", "email", 3, accepted=5, status="accepted"),
        record("police", "task", "sms", 2, delivered=12, accepted=3, task_id="confirm_facts"),
        record("csp", "task", "email", 2, accepted=4, status="accepted", task_id="comms"),
        record("csp", "holding", "email", 1, accepted=2, status="accepted"),
        record("csp", "stand_down", "email", 5000, accepted=5001, status="accepted"),
    ]
    events = [
        ack("police", "holding", 61),
        ack("cllr", "holding", 123),
        ack("csp", "holding", 500, via="console"),  # the duty officer on their behalf: not the person's
        task_event("acknowledge", CONFIRM, 301),
        task_event("done", CONFIRM.model_copy(update={"status": TaskStatus.DONE}), 600),
        task_event("done", COMMS.model_copy(update={"status": TaskStatus.DONE}), 2400, via="console"),
    ]
    return readiness.build(incident(tasks=tasks), events, deliveries, PEOPLE, now=at(9000))


def person(report: readiness.ReadinessReport, pid: str) -> readiness.Readiness:
    return next(p for p in report.people if p.key == pid)


def channel(row: readiness.Readiness, name: str) -> readiness.ChannelFigures:
    return next(c for c in row.channels if c.channel == name)


def test_time_to_delivery_per_channel_counts_from_queued_to_the_delivery_report_or_smtp_acceptance() -> None:
    report = drill()
    police = channel(person(report, "police"), "sms")
    assert (police.messages, police.delivered, police.failed) == (2, 2, 0)
    assert police.delivery_seconds == (10.0, 10.0)
    cllr = person(report, "cllr")
    assert channel(cllr, "sms").failed == 1 and channel(cllr, "sms").delivered == 0
    assert channel(cllr, "email").delivery_seconds == (2.0,)  # email: accepted by the mail server
    assert report.messages == 7 and report.failed == 1


def test_time_to_acknowledge_runs_from_the_first_message_and_counts_on_the_channel_that_reached_them() -> None:
    report = drill()
    police = channel(person(report, "police"), "sms")
    assert sorted(police.ack_seconds) == [60.0, 299.0]  # holding notice, then the task
    cllr = person(report, "cllr")
    assert channel(cllr, "email").ack_seconds == (122.0,)  # the SMS failed; the email reached them
    assert channel(cllr, "sms").ack_seconds == ()
    csp = person(report, "csp")
    assert csp.acknowledged == 0 and csp.asked == 2  # a console acknowledgement is not theirs
    assert (report.acknowledged, report.asked) == (3, 5)
    assert report.ack_rate == pytest.approx(0.6)


def test_tasks_are_on_time_late_never_or_waived_and_counted_per_person_and_role() -> None:
    report = drill()
    outcomes = {t.id: t.outcome for t in report.tasks}
    assert outcomes == {"confirm_facts": "on_time", "comms": "late", "reassure": "never", "waived_step": "waived"}
    counts = report.task_counts
    assert (counts.on_time, counts.late, counts.never, counts.waived, counts.open) == (1, 1, 1, 1, 0)
    assert person(report, "police").tasks.on_time == 1 and person(report, "csp").tasks.late == 1
    role = next(r for r in report.roles if r.key == "ward_councillor")
    assert role.tasks.never == 1 and role.failed_channels == ("cllr:sms",)


def test_a_running_drill_keeps_tasks_not_yet_due_open_and_overdue_ones_never() -> None:
    running = incident(state=State.ACTIVE, tasks=(CONFIRM, REASSURE))
    results = readiness.task_results(running, [], now=at(4000))
    assert {t.id: t.outcome for t in results} == {"confirm_facts": "never", "reassure": "open"}


def test_failed_channels_and_stale_contact_details_come_from_permanent_failures() -> None:
    report = drill()
    assert person(report, "cllr").failed_channels == ("sms",)
    assert [(s.person, s.channel, s.code) for s in report.stale] == [("cllr", "sms", "21211")]
    assert report.failures[0]["code"] == "21211"
    assert report.failures[0]["error"] == "21211: The 'To' number [address] is not a valid phone number."
    undelivered = record("police", "holding", "sms", 1, status="undelivered", history=[
        {"status": "sent", "at": iso(2), "error_code": None},
        {"status": "undelivered", "at": iso(9), "error_code": "30005"}])
    assert readiness.failure_code(undelivered) == "30005"
    exhausted = record("police", "holding", "sms", 1, status="failed", error="20500: Internal Server Error", history=[])
    again = readiness.build(incident(), [], [undelivered, exhausted], PEOPLE, now=at(100))
    assert [s.code for s in again.stale] == ["30005"]  # a provider outage is not a stale number
    assert channel(person(again, "police"), "sms").failed == 2


def test_details_checked_long_ago_are_flagged_where_the_directory_records_it() -> None:
    old = {**PEOPLE, "police": readiness.Person(id="police", name="PC Whitford", roles=("police_lead",),
                                               verified_on=date(2025, 1, 2))}
    report = readiness.build(incident(), [], [record("police", "holding", "sms", 1, delivered=5)], old,
                             now=at(100))
    assert [(s.person, s.code) for s in report.stale] == [("police", "verified")]


def test_roles_merge_their_holders_channels() -> None:
    report = drill()
    police = next(r for r in report.roles if r.key == "police_lead")
    assert police.median_ack == pytest.approx((60 + 299) / 2)
    assert {r.key for r in report.roles} == {"police_lead", "ward_councillor", "community_safety_lead"}


def test_trend_orders_drills_and_change_compares_with_the_one_before() -> None:
    later = drill()
    earlier = readiness.build(incident(ref="SWK-2026-0000", raised=T0 - timedelta(days=30)), [
        Event(type=EventType.MESSAGE_ACKNOWLEDGED, incident_id="i1", at=T0 - timedelta(days=30) + timedelta(seconds=601),
              actor="police", command_id="a", data={"kind": "holding", "person": "police", "via": "link"})],
        [{**record("police", "holding", "sms", 0, delivered=0), "queued_at": (T0 - timedelta(days=30, seconds=-1)).isoformat(),
          "history": [{"status": "delivered", "at": (T0 - timedelta(days=30, seconds=-31)).isoformat()}]}],
        PEOPLE, now=at(9000))
    points = readiness.trend([later, earlier])
    assert [p.reference for p in points] == ["SWK-2026-0000", "SWK-2026-0001"]
    assert points[0].median_ack == 600.0 and points[0].median_delivery == 30.0
    diff = readiness.change(points, "SWK-2026-0001")
    assert diff["median_ack"] == pytest.approx(later.median_ack - 600.0)  # type: ignore[operator]
    assert diff["never"] == 1.0 and diff["stale"] == 1.0
    assert readiness.change(points, "SWK-2026-0000") == {}  # the first drill has nothing before it
