"""The floor: the same sends with nothing but a plain JetStream work queue and the two thin clients.

    .venv/bin/python -m bench.floor [--quick] [--sizes 10,200,2000]

No protocol, no directory, no audit trail, no delivery records, no retries: N pre-rendered work items
(the holding message SIMS would send each person, same templates) are published to a plain work-queue
stream on the same kind of nats-server (`sync_interval: always`), two pull consumers (sms, email) fetch
up to 64 at a time and send each batch concurrently with TwilioSmsSender / SmtpEmailSender (SIMS's own
thin clients, with as many SMTP connections as SIMS's default), then ack. Time-to-notify = last provider
acceptance minus the moment before the first publish.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from bench.common import (
    TWILIO_FROM,
    Providers,
    Scenario,
    cpu_per_message,
    fmt_s,
    render_messages,
    run_alone,
    summarise,
)
from sims.config import Settings

FULL_RUNS = {10: 20, 200: 20, 2000: 5}
QUICK_RUNS = {10: 3, 200: 3, 2000: 1}
BATCH = 64
LABEL = "floor: nats-py work queue + thin clients"
SMTP_CONNECTIONS = Settings.model_fields["smtp_connections"].default  # SIMS's default, as SIMS sends


class Floor:
    def __init__(self, url: str, providers: Providers) -> None:
        self.url, self.providers = url, providers
        self.accepted: dict[str, list[float]] = {}
        self.expected: dict[str, int] = {}
        self.done: dict[str, asyncio.Event] = {}
        self.failures = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._running = True

    async def start(self) -> None:
        import nats
        from nats.js.api import RetentionPolicy, StorageType, StreamConfig

        from sims.adapters.smtp_email import SmtpEmailSender
        from sims.adapters.twilio_sms import TwilioSmsSender

        self.nc = await nats.connect(self.url, name="bench-floor")
        self.js = self.nc.jetstream(timeout=10.0)
        await self.js.add_stream(StreamConfig(name="FLOOR", subjects=["floor.send.>"],
                                              retention=RetentionPolicy.WORK_QUEUE, storage=StorageType.FILE))
        p = self.providers
        self.senders: dict[str, Any] = {
            "sms": TwilioSmsSender(p.account_sid, p.auth_token, from_=TWILIO_FROM, api_base=p.twilio_url),
            "email": SmtpEmailSender("127.0.0.1", p.smtp_port, "none", from_addr="sims@example.org",
                                    connections=SMTP_CONNECTIONS)}
        for channel in ("sms", "email"):
            sub = await self.js.pull_subscribe(f"floor.send.{channel}", durable=f"floor-{channel}", stream="FLOOR")
            self._tasks.append(asyncio.create_task(self._consume(sub)))

    async def _consume(self, sub: Any) -> None:
        while self._running:
            try:
                msgs = await sub.fetch(BATCH, timeout=0.5)
            except TimeoutError:
                continue
            await asyncio.gather(*(self._handle(m) for m in msgs))

    async def _handle(self, msg: Any) -> None:
        from sims.ports import OutgoingEmail, OutgoingSms

        item = json.loads(msg.data)
        try:
            if item["channel"] == "sms":
                await self.senders["sms"].send(OutgoingSms(key=item["key"], to=item["to"], body=item["body"]))
            else:
                await self.senders["email"].send(OutgoingEmail(
                    key=item["key"], to=item["to"], subject=item["subject"], text=item["body"], html=item["html"],
                    message_id=f"<{item['key']}@floor>"))
        except Exception:  # noqa: BLE001 - the floor does not retry; the run then fails its count
            self.failures += 1
            await msg.ack()
            return
        run = item["run"]
        self.accepted[run].append(time.time())
        await msg.ack()
        if len(self.accepted[run]) >= self.expected[run]:
            self.done[run].set()

    async def one_run(self, messages: list[dict[str, str]], timeout: float) -> float:
        run = f"r{len(self.expected)}"
        self.accepted[run], self.expected[run], self.done[run] = [], len(messages), asyncio.Event()
        payloads = [(f"floor.send.{m['channel']}", json.dumps({**m, "run": run, "key": f"{run}.{i}"}).encode())
                    for i, m in enumerate(messages)]
        t0 = time.time()
        await asyncio.gather(*(self.js.publish(subject, data, timeout=10.0) for subject, data in payloads))
        await asyncio.wait_for(self.done[run].wait(), timeout)
        return max(self.accepted[run]) - t0

    async def stop(self) -> None:
        self._running = False
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for sender in self.senders.values():
            await sender.close()
        await self.nc.close()


@asynccontextmanager
async def floor_running(providers: Providers, tmp: Path, warm_up: list[dict[str, str]]) -> AsyncIterator[Floor]:
    """A fresh nats-server and the floor on it, warmed up with `warm_up`; `send_failures` counted at the end."""
    from sims.adapters.nats_server import NatsServer

    server = NatsServer(store_dir=tmp / "floor" / "nats", name="bench-floor").start()
    try:
        floor = Floor(server.url, providers)
        await floor.start()
        try:
            await floor.one_run(warm_up, 30)
            yield floor
        finally:
            await floor.stop()
    finally:
        server.stop()


def summarise_floor(n: int, scenario: Scenario, samples: list[float], cpu_ms_per_msg: float) -> dict[str, Any]:
    sms, email = scenario.mix(n)
    return summarise(n, samples, {"sms": sms, "email": email, "cpu_ms_per_msg": cpu_ms_per_msg})


def say_size(n: int, r: dict[str, Any], say: Any = print) -> None:
    say(f"  floor  n={n:<5} p50 {fmt_s(r['p50_s']):>8}  p99 {fmt_s(r['p99_s']):>8}  "
        f"{r['msgs_per_s_p50']:.0f} msg/s  ({r['cpu_ms_per_msg']:.2f} ms CPU/msg; runs {r['runs']})")


async def bench_floor(scenario: Scenario, providers: Providers, tmp: Path, sizes: list[int], quick: bool,
                      say: Any = print) -> dict[str, Any]:
    runs = QUICK_RUNS if quick else FULL_RUNS
    out: dict[str, Any] = {"label": LABEL, "sizes": {}}
    say("Floor (plain JetStream work queue + TwilioSmsSender/SmtpEmailSender, no SIMS):")
    async with floor_running(providers, tmp, render_messages(scenario, min(sizes))) as floor:
        for n in sizes:
            messages = render_messages(scenario, n)
            cpu = time.process_time()
            samples = [await floor.one_run(messages, 30 + n * 0.1) for _ in range(runs.get(n, 1))]
            out["sizes"][str(n)] = summarise_floor(n, scenario, samples, cpu_per_message(cpu, n * len(samples)))
            say_size(n, out["sizes"][str(n)], say)
    out["send_failures"] = floor.failures
    return out


def main(argv: list[str] | None = None) -> None:
    run_alone(__doc__, bench_floor, argv)


if __name__ == "__main__":
    main()
