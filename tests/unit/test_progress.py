"""Progress for long CLI operations: plain throttled lines off a terminal, never on stdout."""

from __future__ import annotations

import io

import pytest

from handlers.progress import progress, step


def test_plain_lines_show_count_share_and_a_final_total() -> None:
    out = io.StringIO()
    with progress("Reading the audit trail", total=4, out=out, every=0.0) as tick:
        for _ in range(4):
            tick(1)
    lines = out.getvalue().splitlines()
    assert lines[:4] == [f"Reading the audit trail: {n}/4 ({25 * n}%)" for n in range(1, 5)]
    assert lines[-1].startswith("Reading the audit trail: 4 done in ") and lines[-1].endswith(" s")


def test_lines_are_throttled_and_an_unknown_total_still_counts() -> None:
    out = io.StringIO()
    with progress("Replaying", out=out, every=3600.0) as tick:
        for _ in range(1000):
            tick(1)
    assert out.getvalue().splitlines() == [out.getvalue().splitlines()[-1]]  # only the final line
    assert out.getvalue().startswith("Replaying: 1000 done in ")


def test_a_step_says_when_it_started_and_how_it_ended() -> None:
    out = io.StringIO()
    with step("Starting NATS", out=out):
        pass
    with pytest.raises(RuntimeError), step("Connecting", out=out):
        raise RuntimeError("refused")
    lines = out.getvalue().splitlines()
    assert lines[0] == "Starting NATS..." and lines[1].startswith("Starting NATS: done in ")
    assert lines[2] == "Connecting..." and lines[3].startswith("Connecting: failed after ")
