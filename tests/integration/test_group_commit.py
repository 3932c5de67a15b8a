"""Concurrent writes to one stream are stored as atomic batches, and each writer still gets its own answer."""

from __future__ import annotations

import asyncio
import json

import pytest
from nats.js.api import StreamConfig
from nats.js.errors import KeyWrongLastSequenceError

from sims.adapters import jetstream as jsa
from sims.adapters.group_commit import group_commit
from sims.audit import verify
from sims.bootstrap import Runtime


async def test_concurrent_kv_writes_go_in_batches_with_each_writers_sequence(runtime: Runtime) -> None:
    gc = group_commit(runtime.js._nc)
    before = gc.batches
    await asyncio.gather(*(runtime.kv.put("sims_deliveries", f"d.batch.{i}", {"i": i}) for i in range(100)))
    assert gc.batches > before  # 100 writes at once: the first alone, the rest grouped
    kv = await runtime.js.key_value("sims_deliveries")
    revisions = {i: (await kv.get(f"d.batch.{i}")).revision for i in range(100)}
    assert len(set(revisions.values())) == 100  # each stored once, at its own sequence
    assert {i: json.loads((await kv.get(f"d.batch.{i}")).value)["i"] for i in range(100)} == {i: i for i in range(100)}


async def test_a_stale_write_in_a_batch_fails_alone_and_the_others_are_stored(runtime: Runtime) -> None:
    await runtime.kv.put("sims_deliveries", "d.taken", {"v": 1})
    results = await asyncio.gather(
        *(runtime.kv.create("sims_deliveries", f"d.fresh.{i}", {"i": i}) for i in range(20)),
        runtime.kv.create("sims_deliveries", "d.taken", {"v": 2}),  # exists: this create must fail
        *(runtime.kv.create("sims_deliveries", f"d.fresh.{i}", {"i": i}) for i in range(20, 40)))
    assert results.count(False) == 1 and results[20] is False
    assert await runtime.kv.get("sims_deliveries", "d.taken") == {"v": 1}
    assert all([await runtime.kv.get("sims_deliveries", f"d.fresh.{i}") == {"i": i} for i in range(40)])


async def test_concurrent_audit_appends_keep_every_chain_valid(runtime: Runtime) -> None:
    gc = group_commit(runtime.js._nc)
    before = gc.batched
    await asyncio.gather(*(runtime.audit.append(chain=f"inc-g.{person}", actor="sims", incident_id="inc-g",
                                                action="message.accepted", outcome="twilio", detail={"n": n})
                           for person in range(20) for n in range(3)))
    assert gc.batched > before
    for person in range(20):
        records = [r async for r in runtime.audit.records(f"inc-g.{person}")]
        assert [r["detail"]["n"] for r in records] == [0, 1, 2]
        assert verify(records).ok


async def test_a_stream_without_atomic_batches_takes_every_write_alone(runtime: Runtime) -> None:
    await runtime.js.add_stream(StreamConfig(name="PLAIN", subjects=["plain.>"]))
    gc = group_commit(runtime.js._nc)

    async def write(i: int) -> int:
        async def alone() -> int:
            return int((await runtime.js.publish(f"plain.{i}", b"x", headers={"Nats-Msg-Id": f"p{i}"})).seq)
        return await gc.write("PLAIN", f"plain.{i}", b"x", {"Nats-Msg-Id": f"p{i}"}, alone)

    seqs = await asyncio.gather(*(write(i) for i in range(30)))
    assert sorted(seqs) == list(range(1, 31))  # all stored once, none as a half-made batch
    assert "PLAIN" in gc._refused
    assert (await runtime.js.stream_info("PLAIN")).state.messages == 30


async def test_a_cas_update_that_loses_a_race_inside_a_batch_is_retried_by_its_writer(runtime: Runtime) -> None:
    await runtime.kv.put("sims_deliveries", "d.counter", {"n": 0})

    def bump(old: dict[str, int] | None) -> dict[str, int]:
        return {"n": (old or {"n": 0})["n"] + 1}

    await asyncio.gather(*(runtime.kv.update("sims_deliveries", "d.counter", bump) for _ in range(25)))
    assert await runtime.kv.get("sims_deliveries", "d.counter") == {"n": 25}  # no update lost


async def test_streams_sims_makes_allow_atomic_batches(runtime: Runtime) -> None:
    for stream in (jsa.AUDIT, jsa.OUTBOX, "KV_sims_deliveries", "KV_sims_links"):
        assert (await runtime.js.stream_info(stream)).config.allow_atomic, stream


@pytest.mark.parametrize("size", [1, 2])
async def test_a_wrong_last_sequence_still_reaches_the_writer(runtime: Runtime, size: int) -> None:
    kv = await runtime.js.key_value("sims_deliveries")
    await kv.put("d.guarded", b"{}")
    gc = group_commit(runtime.js._nc)

    async def stale() -> int:
        async def alone() -> int:
            return int(await kv.update("d.guarded", b"{}", last=999))
        return await gc.write("KV_sims_deliveries", "$KV.sims_deliveries.d.guarded", b"{}",
                              {"Nats-Expected-Last-Subject-Sequence": "999"}, alone)

    with pytest.raises(KeyWrongLastSequenceError):
        await asyncio.gather(*(stale() for _ in range(size)))
