"""The benchmark still runs end to end (a small size), so its figures can be reproduced."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any


def provider_counts(lines: list[str]) -> dict[str, Any]:
    """The providers' counts from a contender's closing line ("provider counts: {...}; machine: ...")."""
    line = next(line for line in lines if line.startswith("provider counts: "))
    return dict(json.loads(line.split(": ", 1)[1].rsplit("; machine", 1)[0]))


def test_the_time_to_notify_benchmark_runs_and_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, "-m", "bench.notify", "--quick", "--sizes", "10", "--modes", "inproc",
                          "--json", str(out)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "n=10" in run.stdout and "p99" in run.stdout
    assert "inproc n=10: runs: " in run.stderr and " done in " in run.stderr  # progress, on stderr
    data = json.loads(out.read_text())
    size = data["inproc"]["sizes"]["10"]
    assert size["sms"] == 5 and size["email"] == 5 and size["attempts_max"] == 1
    assert 0 < size["p50_s"] <= size["p99_s"]
    runs = size["runs"] + 1  # and one warm-up: every message once, none twice
    assert data["providers"]["twilio"]["accepted"] == data["providers"]["twilio"]["requests"] == 5 * runs
    assert data["providers"]["smtp"]["accepted"] == 5 * runs


def test_sims_and_the_floor_run_by_turns_and_each_round_has_its_ratio() -> None:
    run = subprocess.run([sys.executable, "-m", "bench.paired", "--quick", "--sizes", "10"],
                         capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "paired n=10: rounds: 3 done in " in run.stderr
    lines = run.stdout.splitlines()
    sims = next(line for line in lines if line.strip().startswith("inproc n=10"))
    floor = next(line for line in lines if line.strip().startswith("floor  n=10"))
    assert "runs 3" in sims and "runs 3" in floor
    by_round = next(line for line in lines if "SIMS / floor n=10" in line)
    median = float(by_round.split("median ")[1].split("x")[0])
    low, high = (float(x) for x in by_round.split("(from ")[1].split(" over")[0].replace("x", "").split(" to "))
    assert 0 < low <= median <= high and "over 3 rounds" in by_round
    counts = provider_counts(lines)
    # SIMS and the floor: one warm-up and three rounds each, 5 SMS + 5 emails a run, every one exactly once
    assert counts["twilio"]["accepted"] == counts["twilio"]["requests"] == 2 * 4 * 5
    assert counts["smtp"]["accepted"] == 2 * 4 * 5


def test_two_worker_processes_and_the_floor_run_by_turns() -> None:
    run = subprocess.run([sys.executable, "-m", "bench.paired", "--quick", "--sizes", "10", "--mode", "proc2"],
                         capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    assert lines[0].startswith("SIMS, 2 `sims worker` processes and the floor, by turns")
    sims = next(line for line in lines if line.strip().startswith("proc2  n=10"))
    assert "runs 3" in sims and "CPU/msg" not in sims  # the workers' CPU is not the bench process's
    assert "over 3 rounds" in next(line for line in lines if "SIMS / floor n=10" in line)
    counts = provider_counts(lines)
    assert counts["twilio"]["accepted"] == counts["twilio"]["requests"] == 2 * 4 * 5
    assert counts["smtp"]["accepted"] == 2 * 4 * 5
