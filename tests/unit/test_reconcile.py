"""Status reconciliation: which records are looked up at Twilio, and how the reconciler applies answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sims.notifications.reconcile import GIVE_UP_AFTER, StatusReconciler, due, status_source
from sims.notify import Status
from sims.ports import DeliveryFailed

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
AFTER, EVERY = timedelta(minutes=10), timedelta(minutes=5)


def record(key: str = "inc1.holding.alice.sms.1", *, status: str = "sent", provider: str = "twilio",
           provider_id: str | None = "SM1", channel: str = "sms", age: timedelta = timedelta(minutes=30),
           **extra: Any) -> dict[str, Any]:
    return {"key": key, "incident_id": "inc1", "status": status, "provider": provider,
            "provider_id": provider_id, "channel": channel, "accepted_at": (NOW - age).isoformat(),
            "updated_at": (NOW - age).isoformat(), **extra}


def keys(records: list[Any]) -> list[str]:
    return [r["key"] for r in records]


@pytest.mark.parametrize("status", ["accepted", "queued", "sending", "sent"])
def test_a_twilio_message_still_waiting_after_the_delay_is_due(status: str) -> None:
    assert keys(due([record(status=status)], NOW, {})) == ["inc1.holding.alice.sms.1"]


@pytest.mark.parametrize("status", ["delivered", "read", "undelivered", "failed", "pending", "retrying"])
def test_a_final_status_or_one_the_provider_never_took_is_not_looked_up(status: str) -> None:
    assert due([record(status=status)], NOW, {}) == []


@pytest.mark.parametrize("changes", [
    {"provider": "notify"}, {"provider": "smtp", "channel": "email"}, {"provider_id": None},
    {"provider_id": ""}, {"channel": "email"}, {"status": "no-such-status"}, {"accepted_at": None},
    {"accepted_at": "not a time"}])
def test_only_twilio_sms_and_whatsapp_with_a_sid_and_an_acceptance_time(changes: dict[str, Any]) -> None:
    assert due([{**record(), **changes}], NOW, {}) == []


def test_whatsapp_is_looked_up_too() -> None:
    assert len(due([record(channel="whatsapp")], NOW, {})) == 1


def test_not_before_the_callbacks_had_their_chance() -> None:
    assert due([record(age=AFTER - timedelta(seconds=1))], NOW, {}, after=AFTER) == []
    assert len(due([record(age=AFTER)], NOW, {}, after=AFTER)) == 1


def test_not_again_within_every() -> None:
    r = record()
    assert due([r], NOW, {r["key"]: NOW - EVERY + timedelta(seconds=1)}, every=EVERY) == []
    assert len(due([r], NOW, {r["key"]: NOW - EVERY}, every=EVERY)) == 1
    assert len(due([r], NOW, {"another.key": NOW}, every=EVERY)) == 1


def test_gives_up_on_a_message_older_than_the_maximum_age() -> None:
    assert len(due([record(age=GIVE_UP_AFTER - timedelta(minutes=1))], NOW, {})) == 1
    assert due([record(age=GIVE_UP_AFTER)], NOW, {}) == []
    assert due([record(age=timedelta(hours=2))], NOW, {}, give_up=timedelta(hours=1)) == []


# ---- the reconciler, over fakes ------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.at = NOW

    def now(self) -> datetime:
        return self.at


class Incident:
    def __init__(self, id: str, erased: bool = False, updated: timedelta = timedelta(hours=1)) -> None:
        self.id = id
        self.erased_at = NOW if erased else None
        self.updated_at = NOW - updated


class Notifications:
    def __init__(self, records: dict[str, list[dict[str, Any]]]) -> None:
        self.records = records
        self.reports: list[tuple[str, str, str | None, str | None]] = []

    async def deliveries(self, incident_id: str) -> list[dict[str, Any]]:
        if incident_id == "broken":
            raise RuntimeError("nats: timeout")
        return self.records.get(incident_id, [])

    async def on_status(self, provider_id: str, reported: str, error_code: str | None,
                        key: str | None = None) -> Status | None:
        self.reports.append((provider_id, reported, error_code, key))
        if provider_id == "SM-explodes":
            raise RuntimeError("kv: wrong last sequence")
        return Status(reported)


class Source:
    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def fetch_status(self, provider_id: str) -> tuple[str, str | None] | None:
        self.asked.append(provider_id)
        answer = self.answers.get(provider_id)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[no-any-return]


def reconciler(notifications: Notifications, source: Source, clock: Clock) -> StatusReconciler:
    return StatusReconciler(notifications, source, clock, after=AFTER, every=EVERY)


async def test_applies_each_answer_as_a_report_and_skips_what_would_change_nothing() -> None:
    notifications = Notifications({"inc1": [
        record("a", provider_id="SM-a", status="sent"), record("b", provider_id="SM-b", status="queued"),
        record("c", provider_id="SM-c", status="sent"), record("d", provider_id="SM-d", status="delivered"),
        record("e", provider_id="SM-e", status="sent")]})
    source = Source({"SM-a": ("delivered", None), "SM-b": ("undelivered", "30003"), "SM-c": ("queued", None),
                     "SM-e": ("canceled", None)})
    moved = await reconciler(notifications, source, Clock()).run([Incident("inc1")])  # type: ignore[list-item]
    assert moved == 2
    assert sorted(source.asked) == ["SM-a", "SM-b", "SM-c", "SM-e"]  # d is final: not asked
    assert sorted(notifications.reports) == [("SM-a", "delivered", None, "a"), ("SM-b", "undelivered", "30003", "b")]


async def test_one_bad_record_or_incident_never_stops_the_others() -> None:
    notifications = Notifications({"inc1": [
        record("gone", provider_id="SM-gone"), record("busy", provider_id="SM-busy"),
        record("odd", provider_id="SM-odd"), record("boom", provider_id="SM-explodes"),
        record("fine", provider_id="SM-fine")]})
    source = Source({"SM-gone": None, "SM-explodes": ("delivered", None), "SM-fine": ("delivered", None),
                     "SM-busy": DeliveryFailed(provider="twilio", transient=True, code="20503", message="busy"),
                     "SM-odd": ValueError("bad JSON")})
    moved = await reconciler(notifications, source, Clock()).run(
        [Incident("broken"), Incident("inc1")])  # type: ignore[list-item]
    assert moved == 1
    assert {r[0] for r in notifications.reports} == {"SM-explodes", "SM-fine"}


async def test_at_most_one_pass_per_every_and_one_lookup_per_record_per_every() -> None:
    clock = Clock()
    notifications = Notifications({"inc1": [record("a", provider_id="SM-a")]})
    source = Source({"SM-a": ("sent", None)})
    rec = reconciler(notifications, source, clock)
    incidents: Any = [Incident("inc1"), Incident("old", erased=True)]
    await rec.run(incidents)
    clock.at += EVERY - timedelta(seconds=1)
    await rec.run(incidents)  # too soon for another pass
    assert source.asked == ["SM-a"]
    clock.at += timedelta(seconds=1)
    await rec.run(incidents)
    assert source.asked == ["SM-a", "SM-a"]
    notifications.records["inc1"] = [record("a", provider_id="SM-a", status="delivered")]
    clock.at += EVERY
    await rec.run(incidents)
    assert source.asked == ["SM-a", "SM-a"] and rec.checked == {}  # settled: forgotten


async def test_erased_incidents_are_not_read() -> None:
    notifications = Notifications({"old": [record("a", provider_id="SM-a")]})
    source = Source({"SM-a": ("delivered", None)})
    assert await reconciler(notifications, source, Clock()).run([Incident("old", erased=True)]) == 0  # type: ignore[list-item]
    assert source.asked == []


async def test_incidents_untouched_since_long_before_the_give_up_age_are_not_read() -> None:
    notifications = Notifications({"old": [record("a", provider_id="SM-a")], "recent": [
        record("b", provider_id="SM-b")]})
    source = Source({"SM-a": ("delivered", None), "SM-b": ("delivered", None)})
    incidents: Any = [Incident("old", updated=GIVE_UP_AFTER + timedelta(days=1, seconds=1)),
                      Incident("recent", updated=GIVE_UP_AFTER)]
    assert await reconciler(notifications, source, Clock()).run(incidents) == 1
    assert source.asked == ["SM-b"]


def test_the_status_source_is_found_directly_or_behind_a_failover_sender() -> None:
    class Plain:
        name = "smtp"

    class Twilio(Source):
        pass

    class Failover:
        def __init__(self, suppliers: list[object]) -> None:
            self.suppliers = suppliers

    twilio = Twilio({})
    assert status_source([Plain(), twilio]) is twilio
    assert status_source([Plain(), Failover([Plain(), twilio])]) is twilio
    assert status_source([Plain(), Failover([Plain()])]) is None


class LeaseKV:
    """KeyValue.update as NatsKV does it, for one process: change(old) -> new."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    async def update(self, bucket: str, key: str, change: Any, known: Any = None) -> Any:
        self.data[key] = new = change(self.data.get(key))
        return new


async def test_the_pass_lease_goes_to_one_worker_until_it_runs_out() -> None:
    from sims.notifications.reconcile import lease_for

    kv: Any = LeaseKV()
    first, second = (lease_for(kv, "b", "lease", EVERY) for _ in range(2))
    assert await first(NOW) and not await second(NOW)
    assert await first(NOW + EVERY)  # the holder's next pass
    assert not await second(NOW + EVERY + EVERY * 0.5)
    assert await second(NOW + EVERY + EVERY)  # the holder died: its lease ran out
    assert not await first(NOW + EVERY + EVERY)
