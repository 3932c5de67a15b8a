"""One pull request at a time (handlers/pull.py): nothing lost, nothing waits on another request's answer."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import AsyncIterator

import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig

from handlers.pull import OneRequestPull
from sims.adapters.nats_server import NatsServer


@pytest.fixture
async def work(nats_server: NatsServer) -> AsyncIterator[tuple[object, OneRequestPull]]:
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="WORK", subjects=["work.>"], retention=RetentionPolicy.WORK_QUEUE))
    await js.add_consumer("WORK", ConsumerConfig(durable_name="w", ack_policy=AckPolicy.EXPLICIT, ack_wait=30))
    subscription = await js.pull_subscribe("work.>", durable="w", stream="WORK")
    pull = OneRequestPull(subscription)
    await pull.start()
    yield js, pull
    await pull.stop()
    await nc.close()


async def test_every_message_is_handed_over_once_across_many_requests(work: tuple[object, OneRequestPull]) -> None:
    js, pull = work
    seen: Counter[bytes] = Counter()
    sent: list[bytes] = []
    stop = asyncio.Event()

    async def consume() -> None:  # as FastStream's pull loop: fetch, handle, acknowledge, again
        while not stop.is_set() or pull._ready:
            for msg in await pull.fetch(16, timeout=0.2):
                seen[msg.data] += 1
                await msg.ack()

    consumer = asyncio.create_task(consume())
    rnd = random.Random(7)
    for burst in range(40):  # bursts of 1-40, some bigger than a batch, with pauses around a request's life
        for i in range(rnd.randint(1, 40)):
            sent.append(f"{burst}.{i}".encode())
            await js.publish("work.x", sent[-1])  # type: ignore[attr-defined]
        await asyncio.sleep(rnd.choice([0, 0.01, 0.15, 0.25]))
    deadline = time.monotonic() + 10
    while sum(seen.values()) < len(sent) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    stop.set()
    await consumer
    assert set(seen) == set(sent) and set(seen.values()) == {1}  # all of them, each once
    assert (await js.stream_info("WORK")).state.messages == 0  # type: ignore[attr-defined]  # all acknowledged


async def test_a_burst_after_an_idle_spell_is_handed_over_without_waiting_for_the_request_to_end(
        work: tuple[object, OneRequestPull]) -> None:
    js, pull = work
    assert await pull.fetch(64, timeout=0.3) == []  # idle: the request expires, nothing came
    waiting = asyncio.create_task(pull.fetch(64, timeout=30))  # a request that would wait 30 s
    await asyncio.sleep(0.1)
    started = time.monotonic()
    for i in range(5):
        await js.publish("work.x", f"m{i}".encode())  # type: ignore[attr-defined]
    got = await waiting
    while len(got) < 5:  # the rest, if the first came alone
        got += await pull.fetch(64, timeout=30)
    assert [m.data for m in got] == [f"m{i}".encode() for i in range(5)]
    assert time.monotonic() - started < 10  # handed over as they came, not at the request's expiry


async def test_a_late_status_for_an_earlier_request_does_not_end_the_current_one(
        work: tuple[object, OneRequestPull]) -> None:
    js, pull = work
    assert await pull.fetch(8, timeout=0.2) == []  # request 1: expired
    for _ in range(500):  # until the server's word that it is over (408) has come
        if pull._open is None:
            break
        await asyncio.sleep(0.01)
    assert pull._open is None
    waiting = asyncio.create_task(pull.fetch(8, timeout=30))  # request 2, in flight
    await asyncio.sleep(0.1)
    assert pull._open == f"{pull._inbox}.2"
    nc = pull._nc
    await nc.publish(f"{pull._inbox}.1", b"", headers={"Status": "408"})  # request 1's word, arriving late
    await asyncio.sleep(0.2)
    assert not waiting.done()  # request 2 still waits: the status was not taken as its answer
    await js.publish("work.x", b"after")  # type: ignore[attr-defined]
    assert [m.data for m in await waiting] == [b"after"]
