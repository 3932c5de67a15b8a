"""Run every benchmark once, print one table, write bench/results/latest.json and time_to_notify.png.

    .venv/bin/python -m bench [--quick] [--sizes 10,200,2000] [--skip-apprise] [--skip-workers] [--skip-cluster]
                              [--skip-scale-out]

Contenders share one synthetic scenario and one pair of local providers (Twilio-like server, SMTP sink),
each in its own process; each contender gets its own fresh nats-server. SIMS in-process and the floor
run by turns, a round of each back to back (`bench/paired.py`), so their ratio is measured under the
same conditions on a host whose speed drifts.

Scale-out: on this machine the local providers answer at once, so 1 and 2 `sims worker` processes are
both bound by its 2 cores (shared with nats-server and the providers). A second pair of providers that
take as long as real ones (`SLOW`: the Twilio-like server 150 ms a request, the SMTP sink 20 ms an end
of data, as a relay queueing to disk) shows what a second worker adds when the providers' answers,
not the CPU, set the pace.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import (
    RESULTS,
    Providers,
    Scenario,
    fmt_s,
    machine,
    parse_sizes,
    run_folder,
    stop_on_sigterm,
)
from handlers import loop as event_loop

# Runs per size, chosen so the whole default run stays under ~8 minutes on 2 cores.
# SIMS in-process and the floor run by turns (bench/paired.py): one round each, so the same counts.
FULL = {"inproc": {10: 20, 200: 20, 2000: 3}, "proc1": {10: 3, 200: 5, 2000: 1}, "proc2": {10: 3, 200: 5, 2000: 1},
        "apprise": {10: 10, 200: 5, 2000: 1}, "cluster": {10: 20, 200: 10, 2000: 3}}
QUICK = {"inproc": {10: 3, 200: 2, 2000: 1}, "proc1": {10: 2, 200: 1, 2000: 1}, "proc2": {10: 2, 200: 1, 2000: 1},
         "apprise": {10: 2, 200: 1, 2000: 1}, "cluster": {10: 3, 200: 2, 2000: 1}}
FULL["floor"], QUICK["floor"] = FULL["inproc"], QUICK["inproc"]
SLOW = {"twilio_delay": 0.15, "smtp_delay": 0.02}  # seconds: providers that answer as real ones do
SCALE_SIZES = [200, 2000]  # 200 first: also the warm-up
SCALE_RUNS = {"full": {200: 3, 2000: 1}, "quick": {200: 1, 2000: 1}}
TARGET_P99_200_S = 1.0
TARGET_FLOOR_RATIO = 2.0


async def run_all(scenario: Scenario, providers: Providers, tmp: Path, sizes: list[int], plan: dict[str, dict[int, int]],
                  modes: list[str], apprise: bool, cluster: bool = True) -> dict[str, Any]:
    from bench import apprise_bench, notify, paired
    from bench import cluster as cluster_bench

    # SIMS in-process (every run has it) and the floor by turns, so their ratio is measured under one condition
    both = await paired.run_paired(scenario, providers, tmp, sizes, plan["inproc"])
    contenders: dict[str, Any] = {"sims_inproc": {**both["sims_inproc"], "paired": both["paired"]},
                                  "floor": both["floor"]}
    for mode in (m for m in modes if m != "inproc"):
        print(f"{notify.MODE_LABEL[mode]}:", flush=True)
        contenders[f"sims_{mode}"] = await notify.run_mode(mode, scenario, providers, tmp, sizes, plan[mode])
    if cluster:
        print(f"{cluster_bench.LABEL}:", flush=True)
        contenders["sims_cluster"] = await cluster_bench.run_cluster(scenario, providers, tmp, sizes, plan["cluster"])
    if apprise:
        apprise_bench.FULL_RUNS = apprise_bench.QUICK_RUNS = plan["apprise"]
        contenders["apprise"] = await apprise_bench.bench_apprise(scenario, providers, sizes, quick=False)
    return contenders


async def run_scale_out(scenario: Scenario, providers: Providers, tmp: Path, runs: dict[int, int]) -> dict[str, Any]:
    """1 and 2 `sims worker` processes against the slow providers (see the module's doc)."""
    from bench import notify

    out: dict[str, Any] = {}
    for mode in ("proc1", "proc2"):
        label = f"{notify.MODE_LABEL[mode]}, slow providers"
        print(f"{label}:", flush=True)
        result = await notify.run_mode(mode, scenario, providers, tmp / "slow", SCALE_SIZES, runs)
        out[f"sims_{mode}_slow"] = {**result, "label": label}
    return out


def expected_messages(scenario: Scenario, sizes: list[int], plan: dict[str, dict[int, int]],
                      ran: list[str]) -> dict[str, int]:
    """SMS and emails every contender should have had accepted (warm-up at the smallest size included)."""
    sms = email = 0
    for key in ran:
        runs = plan[key.removeprefix("sims_")]
        for n, count in [(min(sizes), 1), *[(n, runs.get(n, 1)) for n in sizes]]:
            s, e = scenario.mix(n)
            sms, email = sms + s * count, email + e * count
    return {"sms": sms, "email": email}


def ratio(a: dict[str, Any] | None, b: dict[str, Any] | None, key: str) -> float | None:
    if not a or not b or not b.get(key):
        return None
    return float(a[key]) / float(b[key])


def analyse(contenders: dict[str, Any], sizes: list[int]) -> dict[str, Any]:
    sims = contenders.get("sims_inproc", {}).get("sizes", {})
    floor = contenders.get("floor", {}).get("sizes", {})
    apprise = contenders.get("apprise", {}).get("sizes", {})
    by_turns = contenders.get("sims_inproc", {}).get("paired", {})
    ratios: dict[str, Any] = {}
    for n in map(str, sizes):
        ratios[n] = {
            "sims_over_floor_by_round_median": by_turns.get(n, {}).get("ratio_median"),
            "sims_over_floor_p50": ratio(sims.get(n), floor.get(n), "p50_s"),
            "sims_over_floor_p99": ratio(sims.get(n), floor.get(n), "p99_s"),
            "sims_over_apprise_p50": ratio(sims.get(n), apprise.get(n), "p50_s"),
            "sims_over_apprise_p99": ratio(sims.get(n), apprise.get(n), "p99_s"),
            "cluster_over_single_p99": ratio(contenders.get("sims_cluster", {}).get("sizes", {}).get(n),
                                             sims.get(n), "p99_s"),
            "two_workers_over_one_msgs_per_s": ratio(
                contenders.get("sims_proc2", {}).get("sizes", {}).get(n),
                contenders.get("sims_proc1", {}).get("sizes", {}).get(n), "msgs_per_s_p50"),
            "two_workers_over_one_msgs_per_s_slow_providers": ratio(
                contenders.get("sims_proc2_slow", {}).get("sizes", {}).get(n),
                contenders.get("sims_proc1_slow", {}).get("sizes", {}).get(n), "msgs_per_s_p50"),
        }
    targets: dict[str, Any] = {}
    if "200" in sims:
        p99 = sims["200"]["p99_s"]
        targets["p99_200_under_1s"] = {"value_s": p99, "target_s": TARGET_P99_200_S, "met": p99 < TARGET_P99_200_S}
        r = ratios["200"]["sims_over_floor_p99"]
        if r is not None:
            targets["within_2x_floor_200_p99"] = {"ratio": r, "target": TARGET_FLOOR_RATIO, "met": r <= TARGET_FLOOR_RATIO,
                                                  "by_round_median": ratios["200"]["sims_over_floor_by_round_median"]}
        a = ratios["200"]["sims_over_apprise_p99"]
        if a is not None:
            targets["ahead_of_apprise_200_p99"] = {"ratio": a, "met": a < 1.0, "well_ahead": a <= 0.5}
    return {"ratios": ratios, "targets": targets}


def table(contenders: dict[str, Any], analysis: dict[str, Any], sizes: list[int]) -> str:
    rows = [f"{'contender':34} {'N':>5} {'runs':>4} {'p50':>9} {'p99':>9} {'msg/s':>7} {'SIMS/this p50':>13} "
            f"{'SIMS/this p99':>13}", "-" * 100]
    sims = contenders.get("sims_inproc", {}).get("sizes", {})
    for key, c in contenders.items():
        for n in map(str, sizes):
            r = c.get("sizes", {}).get(n)
            if not r:
                continue
            rel50 = rel99 = ""
            if key in ("floor", "apprise") and n in sims:
                rel50 = f"{sims[n]['p50_s'] / r['p50_s']:.2f}x"
                rel99 = f"{sims[n]['p99_s'] / r['p99_s']:.2f}x"
            label = c.get("label", key)[:34]
            rows.append(f"{label:34} {n:>5} {r['runs']:>4} {fmt_s(r['p50_s']):>9} {fmt_s(r['p99_s']):>9} "
                        f"{r['msgs_per_s_p50']:>7.0f} {rel50:>13} {rel99:>13}")
    rows.append("-" * 100)
    for n in map(str, sizes):
        turns = contenders.get("sims_inproc", {}).get("paired", {}).get(n)
        if turns:
            rows.append(f"SIMS in-process / floor, run by turns, N={n}: median of {len(turns['rounds'])} rounds "
                        f"{turns['ratio_median']:.2f}x (from {turns['ratio_min']:.2f}x to {turns['ratio_max']:.2f}x)")
        two = analysis["ratios"][n]["two_workers_over_one_msgs_per_s"]
        if two is not None:
            rows.append(f"2 `sims worker` processes vs 1, N={n}: {two:.2f}x the messages per second")
        slow = analysis["ratios"][n]["two_workers_over_one_msgs_per_s_slow_providers"]
        if slow is not None:
            rows.append(f"2 `sims worker` processes vs 1 with slow providers, N={n}: {slow:.2f}x the messages per second")
        replicated = analysis["ratios"][n]["cluster_over_single_p99"]
        if replicated is not None:
            rows.append(f"3-node cluster vs single node (worker in-process), N={n}: p99 {replicated:.2f}x")
    for name, t in analysis["targets"].items():
        shown = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in t.items()}
        rows.append(f"target {name}: {'MET' if t['met'] else 'NOT MET'}  {shown}")
    return "\n".join(rows)


def plot(contenders: dict[str, Any], sizes: list[int], path: Path) -> str:
    """A PNG with matplotlib if it is installed, else a hand-written SVG (path with .svg)."""
    series = [(c.get("label", k), [c.get("sizes", {}).get(str(n)) for n in sizes]) for k, c in contenders.items()
              if c.get("sizes") and not k.endswith("_slow")]  # the slow providers' runs answer another question
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return _svg(series, sizes, path.with_suffix(".svg"))
    fig, ax = plt.subplots(figsize=(10, 5.5))
    width = 0.8 / max(1, len(series))
    for i, (label, points) in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(sizes))]
        p50 = [p["p50_s"] if p else 0 for p in points]
        p99 = [p["p99_s"] if p else 0 for p in points]
        ax.bar(xs, p50, width, label=label)
        ax.errorbar(xs, p50, yerr=[[0] * len(p50), [max(0.0, b - a) for a, b in zip(p50, p99)]], fmt="none",
                    ecolor="black", capsize=3, linewidth=1)
    if 200 in sizes:
        j = sizes.index(200)
        ax.hlines(TARGET_P99_200_S, j - 0.45, j + 0.45, colors="red", linestyles="dashed", label="target p99 (200)")
    ax.set_yscale("log")
    ax.set_xticks(range(len(sizes)), [f"{n:,} recipients" for n in sizes])
    ax.set_ylabel("time to notify, seconds (bar p50, whisker p99; log scale)")
    ax.set_title("Raise -> last message accepted by the provider (local Twilio-like server + SMTP sink)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def _svg(series: list[tuple[str, list[Any]]], sizes: list[int], path: Path) -> str:
    import math

    w, h, left, bottom = 900, 420, 70, 360
    values = [p["p99_s"] for _, pts in series for p in pts if p]
    top = math.log10(max(values) * 2) if values else 1
    low = math.log10(min(values) / 2) if values else -2

    def y(v: float) -> float:
        return bottom - (math.log10(max(v, 1e-6)) - low) / (top - low) * (bottom - 30)

    colours = ["#4477aa", "#66ccee", "#228833", "#ccbb44", "#ee6677", "#aa3377"]
    group = (w - left - 20) / max(1, len(sizes))
    bar = group * 0.8 / max(1, len(series))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">']
    for j, n in enumerate(sizes):
        parts.append(f'<text x="{left + group * (j + 0.5):.0f}" y="{bottom + 18}" text-anchor="middle">{n} recipients</text>')
        for i, (_label, pts) in enumerate(series):
            p = pts[j]
            if not p:
                continue
            x = left + group * j + group * 0.1 + i * bar
            parts.append(f'<rect x="{x:.1f}" y="{y(p["p50_s"]):.1f}" width="{bar * 0.9:.1f}" '
                         f'height="{bottom - y(p["p50_s"]):.1f}" fill="{colours[i % len(colours)]}"/>')
            parts.append(f'<line x1="{x + bar * 0.45:.1f}" x2="{x + bar * 0.45:.1f}" y1="{y(p["p50_s"]):.1f}" '
                         f'y2="{y(p["p99_s"]):.1f}" stroke="black"/>')
    for i, (label, _) in enumerate(series):
        parts.append(f'<rect x="{left + 10}" y="{12 + i * 14}" width="10" height="10" fill="{colours[i % len(colours)]}"/>'
                     f'<text x="{left + 25}" y="{21 + i * 14}">{label}</text>')
    parts.append("</svg>")
    path.write_text("\n".join(parts))
    return str(path)


def main(argv: list[str] | None = None) -> None:
    stop_on_sigterm()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    from sims.logs import configure

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a few runs each (about a minute)")
    parser.add_argument("--sizes", default="10,200,2000")
    parser.add_argument("--skip-apprise", action="store_true")
    parser.add_argument("--skip-workers", action="store_true", help="no `sims worker` subprocess modes")
    parser.add_argument("--skip-cluster", action="store_true", help="no 3-node cluster mode (bench/cluster.py)")
    parser.add_argument("--skip-scale-out", action="store_true", help="no 1 vs 2 workers against slow providers")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    sizes = parse_sizes(args.sizes)
    plan = QUICK if args.quick else FULL
    modes = ["inproc"] if args.skip_workers else ["inproc", "proc1", "proc2"]
    configure("warning", json=False)
    load_before = os.getloadavg()
    started = time.monotonic()
    with run_folder() as tmp_name:
        tmp = Path(tmp_name)
        scenario = Scenario(tmp / "scenario", sizes)
        with Providers() as providers:
            contenders = event_loop.run(run_all(scenario, providers, tmp, sizes, plan, modes,
                                                not args.skip_apprise, not args.skip_cluster))
        slow_counts: dict[str, Any] = {}
        if not args.skip_workers and not args.skip_scale_out and set(SCALE_SIZES) <= set(sizes):
            with Providers(**SLOW) as slow:
                contenders.update(event_loop.run(run_scale_out(
                    scenario, slow, tmp, SCALE_RUNS["quick" if args.quick else "full"])))
            slow_counts = slow.counts
    analysis = analyse(contenders, sizes)
    text = table(contenders, analysis, sizes)
    args.out.mkdir(parents=True, exist_ok=True)
    picture = plot(contenders, sizes, args.out / "time_to_notify.png")
    elapsed = time.monotonic() - started
    expected = expected_messages(scenario, sizes, plan, [k for k, c in contenders.items()
                                                         if not c.get("skipped") and not k.endswith("_slow")])
    result = {"machine": {**machine(), "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
              "elapsed_s": elapsed, "expected_messages": expected, "sizes": sizes, "runs": plan,
              "provider_counts": providers.counts, "slow_providers": {**SLOW, "counts": slow_counts},
              "contenders": contenders, **analysis,
              "notes": {
                  "time_to_notify": "SIMS: max(accepted_at) - the raise command's result; floor: last acceptance "
                                    "- before its first publish; Apprise: last successful call - before the first",
                  "p99": "nearest rank: with 20 runs or fewer p99 is the slowest run",
                  "mix": "half the recipients SMS (Ofcom drama numbers), half email (example.org)",
                  "apprise": contenders.get("apprise", {}).get("how"),
              }}
    (args.out / "latest.json").write_text(json.dumps(result, indent=2, default=str))
    print()
    print(text)
    twilio, smtp = providers.counts.get("twilio", {}), providers.counts.get("smtp", {})
    exact = twilio.get("accepted") == expected["sms"] and smtp.get("accepted") == expected["email"]
    print(f"providers: Twilio-like accepted {twilio.get('accepted')} of {twilio.get('requests')} requests, SMTP "
          f"{smtp.get('accepted')} mails over {smtp.get('connections')} connections; expected {expected['sms']} SMS + "
          f"{expected['email']} emails: {'exact, none lost or doubled' if exact else 'MISMATCH'}")
    if slow_counts:
        runs = SCALE_RUNS["quick" if args.quick else "full"]
        want = expected_messages(scenario, SCALE_SIZES, {"proc1_slow": runs, "proc2_slow": runs},
                                 ["sims_proc1_slow", "sims_proc2_slow"])
        got = {"sms": slow_counts.get("twilio", {}).get("accepted"), "email": slow_counts.get("smtp", {}).get("accepted")}
        print(f"slow providers (Twilio-like {SLOW['twilio_delay'] * 1000:.0f} ms, SMTP {SLOW['smtp_delay'] * 1000:.0f} ms): "
              f"accepted {got['sms']} SMS + {got['email']} emails; expected {want['sms']} + {want['email']}: "
              f"{'exact, none lost or doubled' if got == want else 'MISMATCH'}")
    sims = contenders.get("sims_inproc", {}).get("sizes", {})
    for n in map(str, sizes):
        if n in sims:
            r = sims[n]
            print(f"SIMS in-process N={n} (p50s): raise->result {fmt_s(r['command_p50_s'])}, first message accepted "
                  f"{fmt_s(r['first_accepted_p50_s'])}, last work item queued {fmt_s(r['last_queued_p50_s'])} "
                  "after the result")
    print(f"machine: {result['machine']['cpus']} CPUs, Python {result['machine']['python']}, load average "
          f"{load_before[0]:.1f} before / {os.getloadavg()[0]:.1f} after; took {elapsed:.0f} s")
    print(f"wrote {args.out / 'latest.json'} and {picture}")


if __name__ == "__main__":
    main()
