"""How SIMS's processes run: on uvloop's event loop (libuv) when installed, else asyncio's own; and,
once up, with their start-up objects out of the cyclic collector's walks and its youngest generation
collected less often (`settle_heap`).

About a third of a busy worker's CPU went to asyncio's loop itself (scheduling tasks, socket reads
and writes; profiled at 200 recipients); uvloop does that work in C. `SIMS_EVENT_LOOP=asyncio` keeps
asyncio's loop (to compare, or to look into a problem with the standard tools); any other value,
or none, means uvloop where it is installed.
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

# Net allocations of container objects between two collections of the youngest generation (Python's
# default: 700). With the default, a worker at 200 recipients collected the youngest generation about once
# every 5 messages, the middle one every 50 and all of them every 500-1,000 (7-15 ms each, every handler
# paused): about 85 us of a message's CPU. With 20,000 no collection ran in 1,000 messages (what a message
# allocates is freed by reference counting). Measured at 200 recipients, alternating round by round in one
# process: 6.5-7.5% less CPU a message and 1-4% less time to notify; peak memory 1 MB higher (121 against
# 120 MB after 2,200 messages). The floor, run the same way, gained nothing from it (p50 346 against 342 ms).
YOUNG_GENERATION_THRESHOLD = 20_000


def name() -> str:
    """The loop `run` uses here: "uvloop" or "asyncio"."""
    if os.environ.get("SIMS_EVENT_LOOP", "").strip().lower() == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)`, on uvloop's loop where `name()` says so."""
    if name() == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


def settle_heap() -> None:
    """Once a process is up: what start-up made (modules, models, the broker, templates) lives as long as
    the process, so the cyclic collector stops walking it (`gc.freeze`). Without this, each full
    collection walks every start-up object and pauses all handlers for tens of milliseconds. Then the
    youngest generation is collected every `YOUNG_GENERATION_THRESHOLD` allocations instead of 700
    (the older generations keep their default ratios)."""
    gc.collect()
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, middle, old)
