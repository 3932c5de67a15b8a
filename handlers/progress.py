"""Progress for long CLI operations (start-up, replay, exports, verification, benchmarks).

On a terminal: a live bar (rich). Otherwise (a log file, CI, a pipe): one plain line on stderr at
most every `every` seconds and a last line with the total and the time taken. Progress never goes to
stdout, so an export written to stdout stays clean.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Callable, TextIO

Tick = Callable[[int], None]


class _Lines:
    """Plain progress lines, throttled."""

    def __init__(self, label: str, total: int | None, out: TextIO, every: float) -> None:
        self.label, self.total, self.out, self.every = label, total, out, every
        self.done = 0
        self.started = self.last = time.monotonic()

    def _line(self, final: bool = False) -> str:
        elapsed = time.monotonic() - self.started
        if final:
            return f"{self.label}: {self.done} done in {elapsed:.1f} s"
        if self.total:
            return f"{self.label}: {self.done}/{self.total} ({100 * self.done // self.total}%)"
        return f"{self.label}: {self.done}..."

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            print(self._line(), file=self.out, flush=True)

    def finish(self) -> None:
        print(self._line(final=True), file=self.out, flush=True)


@contextmanager
def progress(label: str, total: int | None = None, *, out: TextIO | None = None,
             every: float = 0.5) -> Iterator[Tick]:
    """`with progress("Verifying audit records", total=n) as tick: ... tick(1)` - a bar or plain lines."""
    stream = out or sys.stderr
    if stream.isatty():
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TimeElapsedColumn

        columns = [SpinnerColumn(), "{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
        with Progress(*columns, console=Console(file=stream), transient=False) as bar:
            task = bar.add_task(label, total=total)
            yield lambda n=1: bar.advance(task, n)
        return
    lines = _Lines(label, total, stream, every)
    yield lines.advance
    lines.finish()


@contextmanager
def step(label: str, *, out: TextIO | None = None) -> Iterator[None]:
    """One start-up step: `label...` then `label: done in 0.4 s` (or `failed`)."""
    stream = out or sys.stderr
    started = time.monotonic()
    print(f"{label}...", file=stream, flush=True)
    try:
        yield
    except BaseException:
        print(f"{label}: failed after {time.monotonic() - started:.1f} s", file=stream, flush=True)
        raise
    print(f"{label}: done in {time.monotonic() - started:.1f} s", file=stream, flush=True)
