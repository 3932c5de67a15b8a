"""SIMS and the floor by turns: each round runs both once, alternating who goes first.

    .venv/bin/python -m bench.paired [--quick] [--sizes 10,200,2000] [--mode inproc|proc1|proc2]

`--mode proc1` / `proc2`: SIMS as one or two `sims worker` processes instead (their CPU is then not
reported: it is not this process's).

This machine's speed drifts over minutes (the same code's p50 at 200 has moved by half within an hour),
so a ratio of two contenders measured minutes apart says as much about the host as about them. Here
both are up together, each on its own fresh nats-server, in this process, and every round runs one
of each back to back: both see the same conditions, and each round gives its own ratio (SIMS / floor).
While one runs the other is idle: the floor's two pull loops wait on their fetches, and SIMS's sweeper
does its pass each second; the CPU this process used while the floor ran (and in the first 0.1 s after)
is reported as the floor's ("ms CPU/msg"), that idle pass included, and the same for SIMS.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from pathlib import Path
from typing import Any

from bench import floor as floor_bench
from bench import notify
from bench.common import Providers, Scenario, bench_parser, percentile, render_messages, run_alone
from handlers.progress import progress

FULL_RUNS = {10: 20, 200: 20, 2000: 3}
QUICK_RUNS = {10: 3, 200: 2, 2000: 1}
SEED = 20261207
# A pause after each run, so the next starts on a quiet machine. With 0.1 s, SIMS's runs right after the
# floor's were now and then 0.5-0.9 s slower, its planning stalled (in each of three runs of 20 rounds;
# the cause, most likely what the floor's run left its server to do, was not pinned down); with 0.5 s,
# none was. Its length varies (seeded), so runs do not start in step with a periodic cycle of either
# contender (SIMS's sweeper each second, pull requests that expire every 0.5 s): real incidents come
# at any time.
SETTLE_S = (0.4, 0.7)
CPU_TAIL_S = 0.1  # a contender's CPU is counted over its run and this much of the pause after it


async def run_paired(scenario: Scenario, providers: Providers, tmp: Path, sizes: list[int], runs: dict[int, int],
                     say: Any = print, mode: str = "inproc") -> dict[str, Any]:
    """Results for `sims_<mode>` and `floor` (as `notify.run_mode` and `floor.bench_floor` give them), and
    `paired`: per size, each round's ratio, who went first, and the median ratio. `mode`: SIMS's worker
    in this process (`inproc`) or as one or two `sims worker` processes (`proc1`, `proc2`)."""
    sims: dict[str, Any] = {"mode": mode, "label": notify.MODE_LABEL[mode], "sizes": {}, "teardown": [],
                            "paired_with": "floor"}
    floor: dict[str, Any] = {"label": floor_bench.LABEL, "sizes": {}, "paired_with": f"sims_{mode}"}
    paired: dict[str, Any] = {}
    pause = random.Random(SEED)
    say(f"{notify.MODE_LABEL[mode]} and the floor, by turns:")
    async with (notify.sims_running(mode, scenario, providers, tmp, sizes, sims) as rt,
                floor_bench.floor_running(providers, tmp, render_messages(scenario, min(sizes))) as fl):
        for n in sizes:
            messages = render_messages(scenario, n)
            took: dict[str, list[float]] = {"sims": [], "floor": []}
            cpu = {"sims": 0.0, "floor": 0.0}
            details: list[dict[str, Any]] = []
            rounds: list[dict[str, Any]] = []
            with progress(f"  paired n={n}: rounds", total=runs.get(n, 1), every=2.0) as tick:
                for i in range(runs.get(n, 1)):
                    order = ("sims", "floor") if i % 2 == 0 else ("floor", "sims")
                    for who in order:
                        started = time.process_time()
                        if who == "sims":
                            detail = await notify.one_run(rt, n, timeout=30.0 + n * 0.1)
                            details.append(detail)
                            took["sims"].append(detail["ttn_s"])
                        else:
                            took["floor"].append(await fl.one_run(messages, 30.0 + n * 0.1))
                        await asyncio.sleep(CPU_TAIL_S)  # its acks and last writes: counted as its own
                        cpu[who] += time.process_time() - started
                        await asyncio.sleep(pause.uniform(*SETTLE_S) - CPU_TAIL_S)
                    last = details[-1]
                    rounds.append({"first": order[0], "sims_s": took["sims"][-1], "floor_s": took["floor"][-1],
                                   "ratio": took["sims"][-1] / took["floor"][-1],
                                   "sims_last_queued_s": last["last_queued_s"],
                                   "sims_last_by_channel_s": last["last_by_channel_s"]})
                    tick(1)
            count = n * len(rounds)
            sims["sizes"][str(n)] = notify.summarise_sims(  # a worker process's CPU is not this process's
                n, scenario, took["sims"], details, cpu["sims"] * 1000 / count if mode == "inproc" else None)
            floor["sizes"][str(n)] = floor_bench.summarise_floor(n, scenario, took["floor"], cpu["floor"] * 1000 / count)
            ratios = [r["ratio"] for r in rounds]
            turns = paired[str(n)] = {"rounds": rounds, "ratio_median": percentile(ratios, 50),
                                      "ratio_max": max(ratios), "ratio_min": min(ratios)}
            notify.say_size(mode, n, sims["sizes"][str(n)], say)
            floor_bench.say_size(n, floor["sizes"][str(n)], say)
            say(f"  SIMS / floor n={n:<5} by round: median {turns['ratio_median']:.2f}x "
                f"(from {turns['ratio_min']:.2f}x to {turns['ratio_max']:.2f}x over {len(rounds)} rounds)")
    floor["send_failures"] = fl.failures
    return {f"sims_{mode}": sims, "floor": floor, "paired": paired}


async def bench_paired(scenario: Scenario, providers: Providers, tmp: Path, sizes: list[int], quick: bool,
                       say: Any = print, mode: str = "inproc") -> dict[str, Any]:
    return await run_paired(scenario, providers, tmp, sizes, QUICK_RUNS if quick else FULL_RUNS, say, mode)


def main(argv: list[str] | None = None) -> None:
    from sims.logs import configure

    configure("warning", json=False)
    parser = bench_parser(__doc__)
    parser.add_argument("--mode", choices=sorted(notify.MODE_LABEL), default="inproc",
                        help="SIMS's worker in this process, or one or two `sims worker` processes")
    args = parser.parse_args(argv)
    run_alone(__doc__, functools.partial(bench_paired, mode=args.mode), args=args)


if __name__ == "__main__":
    main()
