"""SIMS time-to-notify on a 3-node JetStream cluster on loopback (every stream and bucket replicated 3 times).

    .venv/bin/python -m bench.cluster [--quick] [--sizes 10,200,2000] [--json FILE]

The cluster is `sims.adapters.nats_server.LocalCluster` (the one the fault tests use), each node with
`sync_interval: always`; SIMS connects with every node's URL and picks 3 replicas itself. The worker
runs in this process as in the single-node `inproc` mode (bench/notify.py), and time-to-notify is
measured the same way (`bench.notify.one_run`), so the two compare directly: the difference is the
cost of replication (each write acknowledged by a quorum of 2 of 3 nodes, each syncing to disk).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from bench.common import Providers, Scenario, finish_run, fmt_s, parse_sizes, run_folder, summarise
from handlers import loop as event_loop

LABEL = "SIMS, 3-node cluster (R3), worker in-process"
SIZES = (10, 200, 2000)
FULL_RUNS = {10: 20, 200: 10, 2000: 3}
QUICK_RUNS = {10: 3, 200: 2, 2000: 1}


async def run_cluster(scenario: Scenario, providers: Providers, tmp: Path, sizes: list[int],
                      runs: dict[int, int], say: Any = print) -> dict[str, Any]:
    """Start a loopback cluster, run the in-process worker over it, and time raises of each size."""
    from bench import notify
    from handlers.serve import sweep_forever
    from handlers.worker import build_broker
    from sims.adapters import jetstream as jsa
    from sims.adapters.nats_server import LocalCluster
    from sims.bootstrap import connect_runtime

    base = tmp / "cluster"
    wanted = [n for n in sizes if n in SIZES and runs.get(n, 0) > 0]
    results: dict[str, Any] = {"mode": "cluster", "label": LABEL, "sizes": {}, "teardown": [], "nodes": 3}
    if not wanted:
        return {**results, "skipped": True}
    notes = results["teardown"]
    cluster = LocalCluster(base / "nats", name="bench-cluster").start()
    try:
        started = time.monotonic()
        await cluster.ready()
        results["cluster_ready_s"] = time.monotonic() - started
        async with AsyncExitStack() as stack:
            settings = notify.settings_for(scenario, providers, base / "data")
            rt = await connect_runtime(settings, cluster.url, "bench-cluster")
            stack.push_async_callback(notify.bounded(rt.close, "Runtime.close", notes=notes))
            results["replicas"] = (await rt.js.stream_info(jsa.OUTBOX)).config.num_replicas
            broker = build_broker(rt, cluster.url)
            await broker.start()
            stack.push_async_callback(notify.bounded(broker.stop, "NatsBroker.stop", notes=notes))
            stopping = asyncio.Event()
            sweeper = asyncio.create_task(sweep_forever(rt, stop=stopping))

            async def stop_sweeper() -> None:
                stopping.set()
                await asyncio.gather(sweeper, return_exceptions=True)

            stack.push_async_callback(notify.bounded(stop_sweeper, "sweeper stop", notes=notes))
            await notify.one_run(rt, min(wanted), 60.0)  # warm-up: connections, caches (not counted)
            for n in wanted:
                samples, details = [], []
                for _ in range(runs[n]):
                    detail = await notify.one_run(rt, n, timeout=60.0 + n * 0.2)
                    samples.append(detail["ttn_s"])
                    details.append(detail)
                    await asyncio.sleep(0.1)
                sms, email = scenario.mix(n)
                middle = len(details) // 2
                results["sizes"][str(n)] = summarise(n, samples, {
                    "sms": sms, "email": email,
                    "command_p50_s": sorted(d["command_s"] for d in details)[middle],
                    "first_accepted_p50_s": sorted(d["first_accepted_s"] for d in details)[middle],
                    "last_queued_p50_s": sorted(d["last_queued_s"] or 0 for d in details)[middle],
                    "attempts_max": max(d["attempts_max"] for d in details)})
                r = results["sizes"][str(n)]
                say(f"  cluster n={n:<5} p50 {fmt_s(r['p50_s']):>8}  p99 {fmt_s(r['p99_s']):>8}  "
                    f"{r['msgs_per_s_p50']:.0f} msg/s  (runs {r['runs']}; p50 of: raise->result "
                    f"{fmt_s(r['command_p50_s'])}, first accepted {fmt_s(r['first_accepted_p50_s'])})")
    finally:
        cluster.stop()
    return results


def main(argv: list[str] | None = None) -> None:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer runs (for smoke tests)")
    parser.add_argument("--sizes", default="10,200,2000")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    from sims.logs import configure

    sizes = parse_sizes(args.sizes)
    configure("warning", json=False)
    started = time.monotonic()
    with run_folder("sims-bench-cluster-") as tmp_name:
        tmp = Path(tmp_name)
        scenario = Scenario(tmp / "scenario", sizes)
        with Providers() as providers:
            print(f"{LABEL}:")
            runs = QUICK_RUNS if args.quick else FULL_RUNS
            results = event_loop.run(run_cluster(scenario, providers, tmp, sizes, runs))
    finish_run(results, providers.counts, started, args.json)


if __name__ == "__main__":
    main()
