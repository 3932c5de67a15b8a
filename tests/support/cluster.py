"""Fault-test helpers: SIMS processes (`sims worker`, `sims web`) over real NATS, and what was sent.

The loopback JetStream cluster itself is `sims.adapters.nats_server.LocalCluster` (shared with
bench/cluster.py); this module adds what only tests need: starting and stopping SIMS as child
processes, finding a stream's leader, and counting the messages the providers accepted per key.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from nats.js import JetStreamContext
from nats.js.errors import APIError

from sims.adapters.jetstream import TRANSIENT
from tests.support.smtp_server import SmtpServer
from tests.support.twilio_server import TwilioServer

SIMS = str(Path(sys.executable).parent / "sims")
ROOT = Path(__file__).resolve().parents[2]


def sims_env(nats_url: str, data_dir: Path, twilio: TwilioServer, smtp: SmtpServer, http_port: int,
             **extra: str) -> dict[str, str]:
    """Environment for `sims worker` / `sims web` children: real providers on loopback, quiet logs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIMS_", "TWILIO_"))}
    env.update({
        "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "SIMS_NATS_URL": nats_url, "SIMS_DATA_DIR": str(data_dir),
        "SIMS_TWILIO_ACCOUNT_SID": twilio.account_sid, "SIMS_TWILIO_AUTH_TOKEN": twilio.auth_token,
        "SIMS_TWILIO_FROM": "+447700900999", "SIMS_TWILIO_API_BASE": twilio.base_url,
        "SIMS_SMTP_HOST": "127.0.0.1", "SIMS_SMTP_PORT": str(smtp.port), "SIMS_SMTP_TLS": "none",
        "SIMS_SMTP_FROM": "sims@example.org", "SIMS_LINK_SECRETS": "k:fault-test", "SIMS_LOG_LEVEL": "warning",
        "SIMS_HTTP_PORT": str(http_port), "SIMS_PUBLIC_BASE_URL": f"http://127.0.0.1:{http_port}",
        "SIMS_SMS_RATE": "0", "SIMS_EMAIL_RATE": "0",
    })
    env.update(extra)
    return env


@dataclass
class SimsProcesses:
    """`sims worker` and `sims web` as child processes (each its own session, stopped by pid)."""

    env: dict[str, str]
    log_dir: Path
    workers: int = 1
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.env['SIMS_HTTP_PORT']}"

    def _spawn(self, name: str, *args: str) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        self.procs[name] = subprocess.Popen([SIMS, *args], env=self.env, cwd=ROOT, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    async def start(self, timeout: float = 60.0) -> SimsProcesses:
        for i in range(self.workers):
            self._spawn(f"worker-{i}", "worker")
        self._spawn("web", "web")
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient() as client:
            while True:
                self.check_alive()
                try:
                    if (await client.get(self.http_url + "/healthz", timeout=2)).status_code in (200, 503):
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"sims web not answering; see {self.log_dir}")
                await asyncio.sleep(0.2)
        while not all("Press Ctrl-C" in self.log(name) for name in self.procs):
            self.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"sims processes not ready; see {self.log_dir}")
            await asyncio.sleep(0.2)
        return self

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def check_alive(self) -> None:
        """Every child still runs (a crash during a fault is a failure, with its log's tail)."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.log(name)[-3000:]}")

    def stop(self, timeout: float = 20.0) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()


async def leader_of(js: JetStreamContext, stream: str) -> str:
    """The server name leading a replicated stream (waits out an election)."""
    for _ in range(200):
        try:
            info = await js.stream_info(stream)
            if info.cluster and info.cluster.leader:
                return str(info.cluster.leader)
        except (*TRANSIENT, APIError):  # no leader yet: the info request times out or is refused
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"stream {stream} has no leader")


def sent_per_key(twilio: TwilioServer, smtp: SmtpServer) -> Counter[str]:
    """How often each message reached a provider: SMS by (reference in its text, number), email by Message-ID."""
    counts: Counter[str] = Counter()
    for m in twilio.messages:
        ref = re.search(r"[A-Z]{3}-\d{4}-\d{4}", m.body)
        counts[f"sms:{ref.group(0) if ref else '?'}:{m.to}"] += 1
    for mail in smtp.handler.messages:
        counts[f"email:{str(mail.message['Message-ID']).strip('<> ')}"] += 1
    return counts


async def audit_verify_cli(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`sims audit verify` on the live trail, as an operator runs it."""
    return await asyncio.to_thread(subprocess.run, [SIMS, "audit", "verify"], env=env, cwd=ROOT, capture_output=True,
                                   text=True, timeout=120)
