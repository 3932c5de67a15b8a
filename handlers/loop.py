"""How SIMS's processes run: on uvloop's event loop (libuv) when installed, else asyncio's own; and,
once up, with their start-up objects out of the cyclic collector's walks (`settle_heap`).

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
    collection walks every start-up object and pauses all handlers for tens of milliseconds."""
    gc.collect()
    gc.freeze()
