"""Supplier failover policy: circuit breakers in order, probes, and the identical-text guard."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sims.failover import (
    Breaker,
    FailureKind,
    Held,
    IdenticalTextGuard,
    Policy,
    SupplierState,
    active,
    choose,
    failed,
    soonest,
    succeeded,
)

T0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
POLICY = Policy(failures_to_trip=3, cool_down=timedelta(seconds=30), max_cool_down=timedelta(minutes=10))


def pair() -> list[Breaker]:
    return [Breaker(supplier="twilio"), Breaker(supplier="notify")]


def test_the_first_healthy_supplier_in_order_is_chosen() -> None:
    index, breakers = choose(pair(), T0, POLICY)
    assert index == 0 and breakers == pair()
    assert active(pair(), T0) == "twilio"


def test_transient_failures_trip_only_after_the_threshold() -> None:
    b = Breaker(supplier="twilio")
    b = failed(b, FailureKind.TRANSIENT, T0, POLICY, "500")
    b = failed(b, FailureKind.TRANSIENT, T0, POLICY, "500")
    assert b.state is SupplierState.HEALTHY and b.failures == 2
    b = failed(b, FailureKind.TRANSIENT, T0, POLICY, "500")
    assert b.state is SupplierState.FAILING and b.until == T0 + timedelta(seconds=30)


def test_a_success_between_failures_resets_the_count() -> None:
    b = failed(Breaker(supplier="twilio"), FailureKind.TRANSIENT, T0, POLICY)
    b = failed(succeeded(b, T0), FailureKind.TRANSIENT, T0, POLICY)
    assert b.state is SupplierState.HEALTHY and b.failures == 1


def test_rate_limit_trips_at_once_for_at_least_what_the_supplier_asked() -> None:
    b = failed(Breaker(supplier="notify"), FailureKind.RATE_LIMITED, T0, POLICY, "429", retry_after=90)
    assert b.state is SupplierState.FAILING and b.until == T0 + timedelta(seconds=90)


def test_refused_credentials_trip_for_the_longest_cool_down() -> None:
    b = failed(Breaker(supplier="notify"), FailureKind.REFUSED, T0, POLICY, "403")
    assert b.state is SupplierState.FAILING and b.until == T0 + POLICY.max_cool_down


def test_a_failing_supplier_is_skipped_for_the_next() -> None:
    breakers = [failed(Breaker(supplier="twilio"), FailureKind.RATE_LIMITED, T0, POLICY), Breaker(supplier="notify")]
    index, _ = choose(breakers, T0 + timedelta(seconds=1), POLICY)
    assert index == 1
    assert active(breakers, T0 + timedelta(seconds=1)) == "notify"


def test_after_the_cool_down_one_send_probes_and_others_keep_to_the_next() -> None:
    breakers = [failed(Breaker(supplier="twilio"), FailureKind.RATE_LIMITED, T0, POLICY), Breaker(supplier="notify")]
    later = T0 + timedelta(seconds=31)
    index, breakers = choose(breakers, later, POLICY)
    assert index == 0 and breakers[0].state is SupplierState.PROBING
    index, breakers = choose(breakers, later, POLICY)  # a concurrent send while the probe is out
    assert index == 1


def test_a_probe_that_works_switches_back() -> None:
    breakers = [failed(Breaker(supplier="twilio"), FailureKind.RATE_LIMITED, T0, POLICY), Breaker(supplier="notify")]
    later = T0 + timedelta(seconds=31)
    _, breakers = choose(breakers, later, POLICY)
    back = succeeded(breakers[0], later)
    assert back.state is SupplierState.HEALTHY and back.trips == 0 and back.since == later
    assert active([back, breakers[1]], later) == "twilio"


def test_a_failed_probe_trips_again_with_a_doubled_cool_down() -> None:
    b = failed(Breaker(supplier="twilio"), FailureKind.TRANSIENT, T0, Policy(failures_to_trip=1))
    later = T0 + timedelta(seconds=31)
    _, (probe,) = choose([b], later, POLICY)
    again = failed(probe, FailureKind.TRANSIENT, later, POLICY)
    assert again.state is SupplierState.FAILING and again.until == later + timedelta(seconds=60)


def test_cool_down_is_capped() -> None:
    b = Breaker(supplier="twilio", trips=20)
    assert failed(b, FailureKind.RATE_LIMITED, T0, POLICY).until == T0 + POLICY.max_cool_down


def test_a_late_failure_does_not_extend_an_open_breaker() -> None:
    b = failed(Breaker(supplier="twilio"), FailureKind.RATE_LIMITED, T0, POLICY)
    again = failed(b, FailureKind.TRANSIENT, T0 + timedelta(seconds=1), POLICY)
    assert again.until == b.until and again.trips == b.trips


def test_an_abandoned_probe_frees_the_slot_after_its_timeout() -> None:
    b = failed(Breaker(supplier="twilio"), FailureKind.RATE_LIMITED, T0, POLICY)
    t1 = T0 + timedelta(seconds=31)
    _, (probe,) = choose([b], t1, POLICY)
    assert choose([probe], t1 + timedelta(seconds=5), POLICY)[0] is None
    assert choose([probe], t1 + POLICY.probe_timeout, POLICY)[0] == 0


def test_when_every_supplier_is_out_soonest_says_how_long_to_wait() -> None:
    breakers = [failed(Breaker(supplier="twilio"), FailureKind.RATE_LIMITED, T0, POLICY, retry_after=50),
                failed(Breaker(supplier="notify"), FailureKind.RATE_LIMITED, T0, POLICY, retry_after=40)]
    assert choose(breakers, T0, POLICY)[0] is None
    assert soonest(breakers, T0 + timedelta(seconds=10)) == pytest.approx(30)
    assert active(breakers, T0) is None
    assert soonest(pair(), T0) == 0


def test_skip_excludes_suppliers_already_tried_for_this_message() -> None:
    assert choose(pair(), T0, POLICY, frozenset({"twilio"}))[0] == 1
    assert choose(pair(), T0, POLICY, frozenset({"twilio", "notify"}))[0] is None


def test_the_guard_holds_the_21st_identical_text_within_the_hour() -> None:
    guard = IdenticalTextGuard()
    for i in range(20):
        guard.admit("+447700900123", "Same words", T0 + timedelta(minutes=i))
    with pytest.raises(Held) as held:
        guard.admit("+447700900123", "Same words", T0 + timedelta(minutes=30))
    assert held.value.sent == 20 and held.value.wait == pytest.approx(30 * 60)
    guard.admit("+447700900123", "Other words", T0 + timedelta(minutes=30))  # a different text is fine
    guard.admit("+447700900124", "Same words", T0 + timedelta(minutes=30))  # so is another number
    guard.admit("+447700900123", "Same words", T0 + timedelta(hours=1))  # the first fell out of the window


def test_the_guard_gives_back_a_slot_when_the_send_failed() -> None:
    guard = IdenticalTextGuard(limit=1)
    slot = guard.admit("+447700900123", "Same", T0)
    guard.release(slot, T0)
    guard.admit("+447700900123", "Same", T0)
    with pytest.raises(Held):
        guard.admit("+447700900123", "Same", T0)
