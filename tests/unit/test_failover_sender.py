"""The failover sender over small hand-written fakes of its ports: which failures move a message on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sims.adapters.failover_sender import FailoverSender
from sims.failover import IdenticalTextGuard, Policy
from sims.ports import Accepted, DeliveryFailed, OutgoingSms

SMS = OutgoingSms(key="k", to="+447700900123", body="Hello")


class Clock:
    def __init__(self) -> None:
        self.at = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.at


class Audit:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    async def append(self, **record: Any) -> None:
        self.records.append(record)


class KV:
    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    async def get(self, bucket: str, key: str) -> Any:
        return self.data.get(key)

    async def put(self, bucket: str, key: str, value: Any) -> None:
        self.data[key] = value


class Scripted:
    """A supplier answering from a list: Accepted, or a DeliveryFailed to raise; then always accepting."""

    def __init__(self, name: str, *answers: DeliveryFailed) -> None:
        self.name = name
        self.answers = list(answers)
        self.sent: list[str] = []

    async def send(self, sms: OutgoingSms) -> Accepted:
        if self.answers:
            raise self.answers.pop(0)
        self.sent.append(sms.key)
        return Accepted(provider=self.name, provider_id="x")

    async def close(self) -> None: ...


def failure(code: str, transient: bool = True, retry_after: float | None = None) -> DeliveryFailed:
    return DeliveryFailed(provider="p", transient=transient, code=code, message=code, retry_after=retry_after)


def sender(*suppliers: Scripted, guard: IdenticalTextGuard | None = None) -> tuple[FailoverSender, Audit, KV, Clock]:
    audit, kv, clock = Audit(), KV(), Clock()
    return (FailoverSender("sms", list(suppliers), audit=audit, kv=kv, clock=clock,  # type: ignore[arg-type]
                           policy=Policy(failures_to_trip=2), guard=guard), audit, kv, clock)


async def test_a_server_error_moves_the_message_to_the_next_supplier_at_once() -> None:
    first, second = Scripted("twilio", failure("20500")), Scripted("notify")
    s, audit, kv, _ = sender(first, second)
    assert (await s.send(SMS)).provider == "notify"
    assert kv.data["supplier.sms.twilio"]["state"] == "healthy"  # one failure: not yet failing
    assert audit.records == []


async def test_a_rate_limit_marks_the_supplier_failing_audits_it_and_later_sends_skip_it() -> None:
    first, second = Scripted("twilio", failure("20429", retry_after=5)), Scripted("notify")
    s, audit, kv, _ = sender(first, second)
    await s.send(SMS)
    await s.send(SMS)
    assert first.sent == [] and second.sent == ["k", "k"]
    assert [r["action"] for r in audit.records] == ["supplier.failing"]
    assert audit.records[0]["chain"] == "system" and audit.records[0]["detail"]["active"] == "notify"
    assert kv.data["supplier.sms.twilio"]["state"] == "failing" and kv.data["supplier.sms.notify"]["active"]


async def test_after_the_cool_down_a_probe_switches_back_and_it_is_audited() -> None:
    first, second = Scripted("twilio", failure("20429")), Scripted("notify")
    s, audit, kv, clock = sender(first, second)
    await s.send(SMS)
    clock.at += timedelta(seconds=31)
    assert (await s.send(SMS)).provider == "twilio"
    assert [r["action"] for r in audit.records] == ["supplier.failing", "supplier.recovered"]
    assert "now goes through twilio" in audit.records[1]["outcome"]
    assert kv.data["supplier.sms.twilio"]["active"] and kv.data["supplier.sms.twilio"]["state"] == "healthy"


async def test_a_message_level_failure_is_not_tried_elsewhere() -> None:
    first, second = Scripted("twilio", failure("21211", transient=False)), Scripted("notify")
    s, _, _, _ = sender(first, second)
    with pytest.raises(DeliveryFailed) as raised:
        await s.send(SMS)
    assert raised.value.code == "21211" and second.sent == []


async def test_a_timeout_is_retried_later_not_sent_through_another_supplier() -> None:
    first, second = Scripted("twilio", failure("timeout")), Scripted("notify")
    s, _, _, _ = sender(first, second)
    with pytest.raises(DeliveryFailed) as raised:
        await s.send(SMS)
    assert raised.value.code == "timeout" and raised.value.transient and second.sent == []


async def test_when_every_supplier_is_out_the_message_waits_for_the_soonest() -> None:
    first = Scripted("twilio", failure("20429", retry_after=40))
    second = Scripted("notify", failure("429", retry_after=20))
    s, _, _, clock = sender(first, second)
    with pytest.raises(DeliveryFailed) as raised:
        await s.send(SMS)
    assert raised.value.transient and raised.value.retry_after == pytest.approx(30)  # notify's cool-down: 30 s
    clock.at += timedelta(seconds=1)
    with pytest.raises(DeliveryFailed) as waiting:
        await s.send(SMS)
    assert waiting.value.code == "no-supplier" and waiting.value.retry_after == pytest.approx(29)


async def test_the_21st_identical_text_is_held_and_a_failed_send_does_not_count() -> None:
    only = Scripted("twilio", failure("20500"), failure("20500"))
    s, audit, _, clock = sender(only, guard=IdenticalTextGuard(limit=2))
    for _ in range(2):
        with pytest.raises(DeliveryFailed):
            await s.send(SMS)  # failed at the supplier: no text reached the network
    clock.at += timedelta(seconds=31)  # past the cool-down the two failures caused
    await s.send(SMS)
    await s.send(SMS)
    with pytest.raises(DeliveryFailed) as held:
        await s.send(SMS)
    assert held.value.code == "identical-limit" and held.value.retry_after == pytest.approx(3600)
    assert only.sent == ["k", "k"] and audit.records[-1]["action"] == "message.held"


class Looking(Scripted):
    """A supplier that can say whether it already took a message (as Twilio's Messages list can)."""

    def __init__(self, name: str, took: dict[str, str]) -> None:
        super().__init__(name)
        self.took = took
        self.asked: list[str] = []

    async def find_accepted(self, sms: OutgoingSms, since: datetime) -> Accepted | None:
        self.asked.append(sms.key)
        found = self.took.get(sms.key)
        return Accepted(provider=self.name, provider_id=found) if found else None


class Committing(Scripted):
    """A supplier that records a message at the moment it takes it (as SmtpEmailSender does)."""

    records_on_commit = True

    async def send(self, sms: OutgoingSms, recorded: Any = None) -> Accepted:  # type: ignore[override]
        accepted = await super().send(sms)
        if recorded is not None:
            await recorded(accepted)
        return accepted


async def test_a_redelivered_message_is_looked_up_at_every_supplier_that_can_say() -> None:
    first, second = Looking("twilio", {}), Looking("other", {"k": "SM-from-other"})
    failover, *_ = sender(first, second)
    found = await failover.find_accepted(SMS, datetime(2026, 12, 1, tzinfo=UTC))  # type: ignore[attr-defined]
    assert found == Accepted(provider="other", provider_id="SM-from-other")
    assert first.asked == second.asked == ["k"]
    assert await failover.find_accepted(OutgoingSms(key="new", to=SMS.to, body=SMS.body),  # type: ignore[attr-defined]
                                        datetime(2026, 12, 1, tzinfo=UTC)) is None
    assert first.sent == second.sent == []  # looking never sends


async def test_lookup_and_record_on_commit_exist_only_where_a_supplier_has_them() -> None:
    plain, *_ = sender(Scripted("notify"))
    assert not hasattr(plain, "find_accepted") and not hasattr(plain, "records_on_commit")
    smtp_first, *_ = sender(Committing("smtp"), Scripted("notify"))
    assert smtp_first.records_on_commit and not hasattr(smtp_first, "find_accepted")  # type: ignore[attr-defined]
    records: list[Accepted] = []

    async def recorded(accepted: Accepted) -> None:
        records.append(accepted)

    took = await smtp_first.send(SMS, recorded=recorded)  # the committing supplier records it as it takes it
    assert records == [took]
