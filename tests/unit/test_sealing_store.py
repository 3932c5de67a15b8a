"""The sealing event store over small fakes: what reaches the inner store, and what a load gives back."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from sims import crypto
from sims.adapters.keystore import UNAVAILABLE, KeyDestroyed, SealingEventStore
from sims.messages import Event, EventType

NOW = datetime(2026, 11, 30, 22, 0, tzinfo=UTC)
NAME = "Victim: Jordan Smith, 17"


class Inner:
    def __init__(self) -> None:
        self.stored: list[Event] = []

    async def append(self, incident_id: str, events: list[Any], expected_seq: int, msg_id: str) -> int:
        self.stored.extend(events)
        return len(self.stored)

    async def load(self, incident_id: str, after: int = 0) -> tuple[list[Any], int]:
        return self.stored[after:], len(self.stored)


class Keys:
    def __init__(self) -> None:
        self.keys: dict[str, bytes | None] = {}

    async def get(self, incident_id: str) -> bytes | None:
        return self.keys.get(incident_id)

    async def get_or_create(self, incident_id: str) -> bytes:
        if incident_id in self.keys and self.keys[incident_id] is None:
            raise KeyDestroyed(incident_id)
        return self.keys.setdefault(incident_id, crypto.new_key()) or b""


def event(type_: EventType, **data: Any) -> Event:
    return Event(type=type_, incident_id="i1", at=NOW, actor="duty", command_id="c", data=data)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_personal_fields_are_sealed_on_the_way_in_and_opened_on_the_way_out() -> None:
    inner, keys = Inner(), Keys()
    store = SealingEventStore(inner, keys)  # type: ignore[arg-type]
    run(store.append("i1", [event(EventType.UPDATED, restricted=NAME, outline="x"),
                            event(EventType.UPDATED, outline="y")], 0, "m"))
    assert crypto.is_sealed(inner.stored[0].data["restricted"]) and inner.stored[0].data["outline"] == "x"
    assert inner.stored[1].data == {"outline": "y"}
    loaded, seq = run(store.load("i1"))
    assert seq == 2 and loaded[0].data["restricted"] == NAME and loaded[1].data == {"outline": "y"}


def test_no_key_is_made_for_an_incident_without_personal_data() -> None:
    inner, keys = Inner(), Keys()
    store = SealingEventStore(inner, keys)  # type: ignore[arg-type]
    run(store.append("i1", [event(EventType.UPDATED, restricted="", outline="x")], 0, "m"))
    assert keys.keys == {}


def test_after_the_erasure_event_sealed_fields_read_as_empty_without_asking_for_the_key() -> None:
    inner, keys = Inner(), Keys()
    store = SealingEventStore(inner, keys)  # type: ignore[arg-type]
    run(store.append("i1", [event(EventType.UPDATED, restricted=NAME)], 0, "m"))
    run(store.append("i1", [event(EventType.PERSONAL_DATA_ERASED, fields=["restricted"], reason="r")], 1, "m2"))
    keys.keys["i1"] = None  # destroyed
    loaded, _ = run(store.load("i1"))
    assert loaded[0].data["restricted"] == crypto.ERASED


def test_a_missing_key_without_an_erasure_says_so_rather_than_showing_nothing() -> None:
    inner, keys = Inner(), Keys()
    store = SealingEventStore(inner, keys)  # type: ignore[arg-type]
    run(store.append("i1", [event(EventType.UPDATED, restricted=NAME)], 0, "m"))
    del keys.keys["i1"]
    loaded, _ = run(store.load("i1"))
    assert loaded[0].data["restricted"] == UNAVAILABLE


def test_nothing_new_can_be_sealed_for_an_incident_whose_key_was_destroyed() -> None:
    inner, keys = Inner(), Keys()
    keys.keys["i1"] = None
    store = SealingEventStore(inner, keys)  # type: ignore[arg-type]
    with pytest.raises(KeyDestroyed):
        run(store.append("i1", [event(EventType.UPDATED, restricted=NAME)], 0, "m"))
    assert inner.stored == []


def test_a_tampered_value_in_the_stream_is_refused_on_load() -> None:
    inner, keys = Inner(), Keys()
    store = SealingEventStore(inner, keys)  # type: ignore[arg-type]
    run(store.append("i1", [event(EventType.UPDATED, restricted=NAME)], 0, "m"))
    sealed = inner.stored[0].data["restricted"]
    tampered = sealed[:-2] + ("AB" if sealed.endswith("AA") else "AA")
    inner.stored[0] = inner.stored[0].model_copy(update={"data": {"restricted": tampered}})
    with pytest.raises(crypto.SealBroken):
        run(store.load("i1"))
