"""`sims up` as a person runs it: embedded NATS, worker and web; clean stop; data kept across runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from sims.adapters.nats_server import free_port

SIMS = [sys.executable, "-m", "handlers.cli"]


def start(env: dict[str, str]) -> tuple[subprocess.Popen[str], list[str]]:
    proc = subprocess.Popen([*SIMS, "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    deadline = time.monotonic() + 30
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "Press Ctrl-C" in line:
            return proc, lines
    proc.kill()
    raise AssertionError("sims up did not start:\n" + "".join(lines))


def stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    return out


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SIMS, *args], env=env, capture_output=True, text=True, timeout=60)


def test_sims_up_serves_all_three_parts_stops_cleanly_and_keeps_its_data(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "SIMS_DATA_DIR": str(tmp_path / "data"), "SIMS_NATS_PORT": "0",
           "SIMS_HTTP_PORT": str(port), "SIMS_LOG_JSON": "false"}
    env.pop("SIMS_NATS_URL", None)
    proc, banner = start(env)
    try:
        first_run(env, proc, banner, tmp_path, port)
    finally:
        if proc.poll() is None:  # a failed check: still stop it cleanly, with its nats-server
            proc.terminate()
            proc.communicate(timeout=30)
    assert not (tmp_path / "data" / "nats.url").exists()
    assert subprocess.run(["pgrep", "-f", str(tmp_path / "data")], capture_output=True).returncode == 1
    refused = cli(env, "status")
    assert refused.returncode == 1 and "sims up" in refused.stderr

    proc, _ = start(env)  # second run: same data
    try:
        status = cli(env, "status", "SWK-2026-0001")
        assert status.returncode == 0 and "Shots fired, no injuries" in status.stdout
        verify = cli(env, "audit", "verify")
        assert verify.returncode == 0 and verify.stdout.startswith("OK: ")
    finally:
        stop(proc)


def first_run(env: dict[str, str], proc: subprocess.Popen[str], banner: list[str], tmp_path: Path, port: int) -> None:
    text = "".join(banner)
    assert "NATS (embedded, JetStream, sync always)" in text and f"http://127.0.0.1:{port}" in text
    steps = ["Starting SIMS: checking the protocol and the contacts...", "Starting the embedded NATS server",
             "Preparing streams, consumers and buckets...", "Starting the worker...", "Starting the web server...",
             "Ready in "]
    at = [next(i for i, line in enumerate(banner) if line.startswith(step)) for step in steps]
    assert at == sorted(at), banner  # start-up progress, step by step, in order, ending with the time taken
    url = (tmp_path / "data" / "nats.url").read_text()
    conf = next((tmp_path / "data" / "jetstream").glob("*.conf")).read_text()
    assert "sync_interval: always" in conf
    assert "NATS users: admin, worker, web" in text and "authorization" in conf  # NKeys made on first start
    for role in ("admin", "worker", "web"):
        assert (tmp_path / "data" / "nats" / f"{role}.nk").stat().st_mode & 0o777 == 0o600
    anonymous = subprocess.run([sys.executable, "-c", "import asyncio, nats, sys\n"
                                f"asyncio.run(nats.connect({url!r}, allow_reconnect=False, connect_timeout=3))"],
                               capture_output=True, text=True, timeout=30)
    assert anonymous.returncode != 0 and "Authorization Violation" in anonymous.stderr
    raised = cli(env, "raise", "--type", "shooting", "--level", "1", "--ward", "Faraday", "--location",
                 "Old Kent Road", "--outline", "Shots fired, no injuries", "--actor", "duty")
    assert raised.returncode == 0 and "SWK-2026-0001" in raised.stdout, raised.stderr
    health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json()
    assert health["ok"] and health["jetstream"]
    assert httpx.get(f"http://127.0.0.1:{port}/api/incidents", timeout=5).status_code == 401
    made = cli(env, "tokens", "add", "status-board", "--scope", "read")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("sims_")
    listed = httpx.get(f"http://127.0.0.1:{port}/api/incidents", timeout=5,
                       headers={"Authorization": f"Bearer {token}"}).json()
    assert [i["reference"] for i in listed] == ["SWK-2026-0001"]
    out = stop(proc)
    assert "Stopped." in out
    assert url.startswith("nats://127.0.0.1:")
