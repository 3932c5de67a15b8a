"""The benchmark still runs end to end (a small size), so its figures can be reproduced."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


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
