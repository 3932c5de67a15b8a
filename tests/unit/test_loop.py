"""How the processes run (handlers/loop.py): uvloop where installed, asyncio's own on request; the
start-up objects frozen once up."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys

import pytest

from handlers import loop


async def _running_loop_module() -> str:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop()).__module__


def test_run_uses_uvloop_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIMS_EVENT_LOOP", raising=False)
    assert loop.name() == "uvloop"
    assert loop.run(_running_loop_module()).startswith("uvloop")


def test_sims_event_loop_asyncio_keeps_the_standard_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIMS_EVENT_LOOP", "asyncio")
    assert loop.name() == "asyncio"
    assert loop.run(_running_loop_module()).startswith("asyncio")


def test_run_returns_the_result_and_raises_what_the_coroutine_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIMS_EVENT_LOOP", raising=False)

    async def fails() -> None:
        raise LookupError("from the coroutine")

    async def answer() -> int:
        await asyncio.sleep(0.01)
        return 42

    assert loop.run(answer()) == 42
    with pytest.raises(LookupError, match="from the coroutine"):
        loop.run(fails())


def test_without_uvloop_installed_run_falls_back_to_asyncio() -> None:
    """As on a platform uvloop does not support: an import that fails means asyncio's loop."""
    code = ("import sys, asyncio; sys.modules['uvloop'] = None\n"
            "from handlers import loop\n"
            "async def m():\n    return type(asyncio.get_running_loop()).__module__\n"
            "print(loop.name(), loop.run(m()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["asyncio", "asyncio.unix_events"]


def test_settle_heap_freezes_what_start_up_made() -> None:
    made = [{"start-up": i} for i in range(1000)]  # noqa: F841 - alive while the heap is settled
    before = gc.get_freeze_count()
    threshold = gc.get_threshold()
    try:
        loop.settle_heap()
        assert gc.get_freeze_count() >= before + len(made)
        assert gc.get_threshold() == (loop.YOUNG_GENERATION_THRESHOLD, *threshold[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
