"""Listing a KV bucket while its keys are rewritten: every key is in every listing, with a current value."""

from __future__ import annotations

import asyncio

from sims.bootstrap import Runtime

BUCKET, KEYS = "sims_deliveries", 40


async def test_a_listing_never_misses_a_key_that_is_being_rewritten(runtime: Runtime) -> None:
    kv = runtime.kv
    for i in range(KEYS):
        await kv.put(BUCKET, f"d.inc.k{i}", {"n": 0})
    await kv.put(BUCKET, "d.inc.gone", {"n": 0})
    await (await kv.bucket(BUCKET)).delete("d.inc.gone")
    stop = asyncio.Event()
    written = 0

    async def rewrite() -> None:  # as delivery reports do while `sims status` lists an incident's messages
        nonlocal written
        while not stop.is_set():
            written += 1
            await kv.put(BUCKET, f"d.inc.k{written % KEYS}", {"n": written})

    writer = asyncio.create_task(rewrite())
    try:
        listings = [await kv.entries(BUCKET, "d.inc.>") for _ in range(100)]
    finally:
        stop.set()
        await writer
    assert written > 100  # the keys really were rewritten during the listings
    assert all(set(found) == {f"d.inc.k{i}" for i in range(KEYS)} for found in listings)  # none missed, none deleted
