"""SIMS time-to-notify: from the raise command's result to the last message a provider accepted.

    .venv/bin/python -m bench.notify [--quick] [--sizes 10,200,2000] [--modes inproc,proc1,proc2]

A real nats-server (JetStream, `sync_interval: always` as SIMS runs it), the local Twilio-like server and an
aiosmtpd sink each run as their own process. Modes:
  inproc  the worker (build_broker + connect_runtime + the notified-sweeper, as `sims worker` runs) in this process
  proc1   one `sims worker` subprocess
  proc2   two `sims worker` subprocesses sharing the durable consumers
Completion is seen by a core-NATS subscription on the incident's delivery records in KV
(`$KV.sims_deliveries.d.<incident>.>`); figures are then read from the records themselves
(`NotificationService.deliveries`): time-to-notify = max(accepted_at) - the moment the raise's result
arrived (both UTC wall clock on this machine).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common import (
    LINK_SECRETS,
    PYTHON,
    RAISE,
    ROOT,
    TWILIO_FROM,
    TYPE_FOR_SIZE,
    Providers,
    Scenario,
    child_env,
    cpu_per_message,
    finish_run,
    fmt_s,
    now,
    parse_sizes,
    percentile,
    read_line,
    run_folder,
    stop_on_sigterm,
    stop_process,
    summarise,
)
from handlers import loop as event_loop
from handlers.progress import progress

FULL_RUNS = {"inproc": {10: 20, 200: 20, 2000: 3}, "proc1": {10: 3, 200: 5, 2000: 1},
             "proc2": {10: 3, 200: 5, 2000: 1}}
QUICK_RUNS = {"inproc": {10: 3, 200: 3, 2000: 1}, "proc1": {10: 2, 200: 2, 2000: 1},
              "proc2": {10: 2, 200: 2, 2000: 1}}
SETTLE_S = 0.1  # a pause after each run
MODE_LABEL = {"inproc": "SIMS, worker in-process", "proc1": "SIMS, 1 `sims worker` process",
              "proc2": "SIMS, 2 `sims worker` processes"}


def settings_for(scenario: Scenario, providers: Providers, data_dir: Path) -> Any:
    from sims.config import Settings

    return Settings(
        data_dir=data_dir, public_base_url="http://127.0.0.1:9", protocol=scenario.protocol_path,
        contacts_dir=scenario.contacts_dir, templates_dir=ROOT / "templates", link_secrets=LINK_SECRETS,
        log_level="warning", command_timeout=30.0, sms_rate=0, email_rate=0,
        twilio_account_sid=providers.account_sid, twilio_auth_token=providers.auth_token, twilio_from=TWILIO_FROM,
        twilio_api_base=providers.twilio_url, smtp_host="127.0.0.1", smtp_port=providers.smtp_port, smtp_tls="none",
        smtp_from="sims@example.org")


def worker_env(scenario: Scenario, providers: Providers, url: str, data_dir: Path) -> dict[str, str]:
    return child_env(
        PYTHONUNBUFFERED="1", SIMS_NATS_URL=url, SIMS_DATA_DIR=str(data_dir), SIMS_PROTOCOL=str(scenario.protocol_path),
        SIMS_CONTACTS_DIR=str(scenario.contacts_dir), SIMS_TEMPLATES_DIR=str(ROOT / "templates"),
        SIMS_LINK_SECRETS=LINK_SECRETS, SIMS_LOG_LEVEL="warning", SIMS_LOG_JSON="true",
        SIMS_PUBLIC_BASE_URL="http://127.0.0.1:9", SIMS_SMS_RATE="0", SIMS_EMAIL_RATE="0",
        SIMS_TWILIO_ACCOUNT_SID=providers.account_sid, SIMS_TWILIO_AUTH_TOKEN=providers.auth_token,
        SIMS_TWILIO_FROM=TWILIO_FROM, SIMS_TWILIO_API_BASE=providers.twilio_url, SIMS_SMTP_HOST="127.0.0.1",
        SIMS_SMTP_PORT=str(providers.smtp_port), SIMS_SMTP_TLS="none", SIMS_SMTP_FROM="sims@example.org")


def start_workers(count: int, env: dict[str, str], log_dir: Path) -> list[subprocess.Popen[str]]:
    sims = str(Path(PYTHON).parent / "sims")
    procs: list[subprocess.Popen[str]] = []
    try:
        for i in range(count):
            log = open(log_dir / f"worker-{i}.log", "w")  # noqa: SIM115 - owned by the child
            procs.append(subprocess.Popen([sims, "worker"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log,
                                          text=True, start_new_session=True))
        for proc in procs:
            read_line(proc, 60, want="Press Ctrl-C to stop")
    except BaseException as exc:
        for proc in procs:
            stop_process(proc)
        logs = "".join((log_dir / f"worker-{i}.log").read_text()[-2000:] for i in range(len(procs)))
        raise RuntimeError(f"`sims worker` did not start: {exc}\n{logs}") from exc
    return procs


def bounded(step: Any, name: str, timeout: float = 20.0, notes: list[str] | None = None) -> Any:
    """A teardown step that may not hang the benchmark: give up after `timeout` seconds and say so."""

    async def run() -> None:
        started = time.monotonic()
        try:
            await asyncio.wait_for(step(), timeout)
        except TimeoutError:
            message = f"{name} did not finish within {timeout:.0f} s"
            print(f"  WARNING: {message}", flush=True)
            if notes is not None:
                notes.append(message)
            return
        if notes is not None and time.monotonic() - started > 2:
            notes.append(f"{name} took {time.monotonic() - started:.1f} s")

    return run


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def one_run(rt: Any, n: int, timeout: float) -> dict[str, Any]:
    """Raise one incident that notifies n people; wait (bounded) until every message was accepted."""
    from sims.adapters.commands import submit
    from sims.messages import RaiseIncident
    from sims.services import incident_id_for

    command = RaiseIncident.model_validate({**RAISE, "type": TYPE_FOR_SIZE[n], "occurred_at": now().isoformat(),
                                            "command_id": f"bench-{n}-{uuid.uuid4().hex}"})
    incident_id = incident_id_for(command.command_id)
    accepted: set[str] = set()
    done = asyncio.Event()

    async def seen(msg: Any) -> None:
        if msg.data and b'"accepted_at"' in msg.data and b'"accepted_at": null' not in msg.data:
            accepted.add(msg.subject)
            if len(accepted) >= n:
                done.set()

    sub = await rt.nc.subscribe(f"$KV.sims_deliveries.d.{incident_id}.>", cb=seen, pending_msgs_limit=1_000_000)
    await rt.nc.flush()
    try:
        sent = now()
        result = await submit(rt.nc, rt.js, rt.kv, command, timeout=30.0)
        t0 = now()
        if not result.get("ok"):
            raise RuntimeError(f"raise refused or not answered: {result}")
        try:
            await asyncio.wait_for(done.wait(), timeout)
        except TimeoutError:
            pass  # read the records anyway: the report says how many were missing
    finally:
        await sub.unsubscribe()
    records = await rt.notifications.deliveries(incident_id)
    took = [r for r in records if r.get("accepted_at")]
    patience = time.monotonic() + 5.0
    while len(took) < n and done.is_set() and time.monotonic() < patience:
        # The watch saw every record as it was published; on a cluster it is stored a few milliseconds
        # later, once a second node has it: read again.
        await asyncio.sleep(0.05)
        records = await rt.notifications.deliveries(incident_id)
        took = [r for r in records if r.get("accepted_at")]
    if len(took) < n:
        when = "read back 5 s after the watch saw all" if done.is_set() else f"accepted within {timeout:.0f}s"
        raise RuntimeError(f"only {len(took)}/{n} messages {when} "
                           f"(statuses: {sorted({r['status'] for r in records})})")
    last = max(_ts(r["accepted_at"]) for r in took)
    first = min(_ts(r["accepted_at"]) for r in took)
    queued = [_ts(r["queued_at"]) for r in took if r.get("queued_at")]
    by_channel = {channel: max((_ts(r["accepted_at"]) - t0).total_seconds() for r in took if r["channel"] == channel)
                  for channel in {r["channel"] for r in took}}
    return {"ttn_s": (last - t0).total_seconds(), "command_s": (t0 - sent).total_seconds(),
            "last_by_channel_s": by_channel,
            "first_accepted_s": (first - t0).total_seconds(),
            "last_queued_s": (max(queued) - t0).total_seconds() if queued else None,
            "attempts_max": max(int(r.get("attempts") or 1) for r in took)}


@asynccontextmanager
async def sims_running(mode: str, scenario: Scenario, providers: Providers, tmp: Path, sizes: list[int],
                       results: dict[str, Any]) -> AsyncIterator[Any]:
    """A fresh nats-server and SIMS in `mode` on it, warmed up at the smallest size; yields the bench's runtime.

    Teardown steps that take long or hang are noted in `results["teardown"]`.
    """
    from handlers.serve import sweep_forever
    from handlers.worker import build_broker
    from sims.adapters.nats_server import NatsServer
    from sims.bootstrap import connect_runtime

    base = tmp / mode
    server = NatsServer(store_dir=base / "nats", name=f"bench-{mode}").start()
    notes = results.setdefault("teardown", [])
    try:
        async with AsyncExitStack() as stack:
            settings = settings_for(scenario, providers, base / "data")
            rt = await connect_runtime(settings, server.url, f"bench-{mode}")
            stack.push_async_callback(bounded(rt.close, "Runtime.close", notes=notes))
            if mode == "inproc":
                broker = build_broker(rt, server.url)
                await broker.start()
                stack.push_async_callback(bounded(broker.stop, "NatsBroker.stop", notes=notes))
                sweeper = asyncio.create_task(sweep_forever(rt))
                event_loop.settle_heap()  # as `sims worker` does once up

                async def stop_sweeper() -> None:
                    sweeper.cancel()
                    await asyncio.gather(sweeper, return_exceptions=True)

                stack.push_async_callback(bounded(stop_sweeper, "sweeper cancel", notes=notes))
            else:
                count = int(mode.removeprefix("proc"))
                started = time.monotonic()
                procs = await asyncio.to_thread(start_workers, count, worker_env(scenario, providers, server.url, base / "data"), base)
                stack.callback(lambda: [stop_process(p, timeout=20) for p in procs])
                results["worker_start_s"] = time.monotonic() - started
            await one_run(rt, min(sizes), 30.0)  # warm-up: connections, caches (not counted)
            yield rt
    finally:
        server.stop()


def summarise_sims(n: int, scenario: Scenario, samples: list[float], details: list[dict[str, Any]],
                   cpu_ms_per_msg: float | None) -> dict[str, Any]:
    """One size's figures: p50/p99 and the p50 of each stage (what `say_size` prints)."""
    sms, email = scenario.mix(n)

    def p50(values: list[float]) -> float:
        return percentile(values, 50)

    return summarise(n, samples, {
        "sms": sms, "email": email,
        "command_p50_s": p50([d["command_s"] for d in details]),
        "last_queued_p50_s": p50([d["last_queued_s"] or 0 for d in details]),
        "first_accepted_p50_s": p50([d["first_accepted_s"] for d in details]),
        "attempts_max": max(d["attempts_max"] for d in details),
        "last_by_channel_p50_s": {channel: p50([d["last_by_channel_s"].get(channel, 0) for d in details])
                                  for channel in details[0]["last_by_channel_s"]},
        **({"cpu_ms_per_msg": cpu_ms_per_msg} if cpu_ms_per_msg is not None else {})})


def say_size(mode: str, n: int, r: dict[str, Any], say: Any = print) -> None:
    cpu_note = f"{r['cpu_ms_per_msg']:.2f} ms CPU/msg; " if "cpu_ms_per_msg" in r else ""
    say(f"  {mode:6} n={n:<5} p50 {fmt_s(r['p50_s']):>8}  p99 {fmt_s(r['p99_s']):>8}  "
        f"{r['msgs_per_s_p50']:.0f} msg/s  ({cpu_note}runs {r['runs']}; p50 of: raise->result "
        f"{fmt_s(r['command_p50_s'])}, first accepted {fmt_s(r['first_accepted_p50_s'])}, "
        f"last queued {fmt_s(r['last_queued_p50_s'])}, last "
        + ", ".join(f"{channel} {fmt_s(t)}" for channel, t in sorted(r["last_by_channel_p50_s"].items())) + ")")


async def run_mode(mode: str, scenario: Scenario, providers: Providers, tmp: Path, sizes: list[int],
                   runs: dict[int, int], say: Any = print) -> dict[str, Any]:
    results: dict[str, Any] = {"mode": mode, "label": MODE_LABEL[mode], "sizes": {}, "teardown": []}
    async with sims_running(mode, scenario, providers, tmp, sizes, results) as rt:
        for n in sizes:
            samples, details = [], []
            cpu = time.process_time()  # this process's CPU: with the worker in-process, the worker's
            with progress(f"  {mode} n={n}: runs", total=runs.get(n, 1), every=2.0) as tick:
                for _ in range(runs.get(n, 1)):
                    detail = await one_run(rt, n, timeout=30.0 + n * 0.1)
                    samples.append(detail["ttn_s"])
                    details.append(detail)
                    tick(1)
                    await asyncio.sleep(SETTLE_S)
            used = cpu_per_message(cpu, n * len(samples)) if mode == "inproc" else None
            results["sizes"][str(n)] = summarise_sims(n, scenario, samples, details, used)
            say_size(mode, n, results["sizes"][str(n)], say)
    return results


async def bench_sims(scenario: Scenario, providers: Providers, tmp: Path, sizes: list[int], modes: list[str],
                     quick: bool, say: Any = print) -> dict[str, Any]:
    table = QUICK_RUNS if quick else FULL_RUNS
    out = {}
    for mode in modes:
        say(f"{MODE_LABEL[mode]}:")
        out[mode] = await run_mode(mode, scenario, providers, tmp, sizes, table[mode], say)
    return out


def main(argv: list[str] | None = None) -> None:
    stop_on_sigterm()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer runs (for smoke tests)")
    parser.add_argument("--sizes", default="10,200,2000")
    parser.add_argument("--modes", default=None, help="inproc,proc1,proc2 (default: all; --quick: inproc)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    sizes = parse_sizes(args.sizes)
    modes = (args.modes or ("inproc" if args.quick else "inproc,proc1,proc2")).split(",")
    from sims.logs import configure

    configure("warning", json=False)
    started = time.monotonic()
    with run_folder() as tmp_name:
        tmp = Path(tmp_name)
        scenario = Scenario(tmp / "scenario", sizes)
        with Providers() as providers:
            results = event_loop.run(bench_sims(scenario, providers, tmp, sizes, modes, args.quick))
    finish_run(results, providers.counts, started, args.json)


if __name__ == "__main__":
    main()
