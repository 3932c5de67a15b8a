"""(b) A popular general notification library, Apprise, sending the same messages to the same local servers.

    .venv/bin/python -m bench.apprise_bench [--quick] [--sizes 10,200,2000]

How Apprise is pointed at the local servers (say so wherever its figures are shown):
  * email: its own `mailto://127.0.0.1:PORT?to=...&from=...&mode=insecure` URL (supported configuration).
    Apprise sends one single-part text email per call and opens a new SMTP connection for each.
  * SMS: Apprise's Twilio plugin has no setting for the API base; it hard-codes
    https://api.twilio.com/... in `NotifyTwilio.notify_sms_url`. We override that one class attribute to
    http://127.0.0.1:PORT/2010-04-01/Accounts/{sid}/Messages.json, so the real plugin code (form body,
    basic auth, `requests`) runs against the local Twilio-like server.
One Apprise object with one URL per recipient (messages are personal), built before the clock starts;
all N `async_notify()` calls are started together (Apprise runs its blocking plugins on its thread pool).
Time-to-notify = when the last call returned successfully minus the moment before the first call.
Nothing is queued or recorded: Apprise has no queue, audit or retry of its own across restarts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any
from urllib.parse import quote

from bench.common import (
    TWILIO_FROM,
    Providers,
    Scenario,
    fmt_s,
    render_messages,
    run_alone,
    summarise,
)

FULL_RUNS = {10: 20, 200: 10, 2000: 3}
QUICK_RUNS = {10: 3, 200: 2, 2000: 1}
HOW = ("Apprise 'twilio://' plugin with its hard-coded api.twilio.com URL overridden to the local server "
       "(no supported setting exists); email via its own mailto:// URL to the local SMTP sink")


def available() -> str | None:
    try:
        import apprise
    except ImportError:
        return None
    return str(getattr(apprise, "__version__", "?"))


def build(messages: list[dict[str, str]], providers: Providers) -> list[tuple[Any, dict[str, Any]]]:
    """One Apprise object per recipient (built before the clock starts; a single object holding all N URLs
    and called with tag=... scans every URL per call: quadratic, 160 s for 2,000 here)."""
    import apprise
    from apprise.plugins.twilio import NotifyTwilio

    NotifyTwilio.notify_sms_url = providers.twilio_url + "/2010-04-01/Accounts/{sid}/Messages.json"
    asset = apprise.AppriseAsset()
    calls = []
    for i, m in enumerate(messages):
        tag = f"p{i}"
        if m["channel"] == "sms":
            url = f"twilio://{providers.account_sid}:{providers.auth_token}@{TWILIO_FROM}/{m['to']}"
            call = {"body": m["body"], "title": "", "tag": tag}
        else:
            url = (f"mailto://127.0.0.1:{providers.smtp_port}?to={quote(m['to'])}&from=sims%40example.org"
                   "&mode=insecure&format=text")
            call = {"body": m["body"], "title": m["subject"], "tag": tag}
        ap = apprise.Apprise(asset=asset)
        if not ap.add(url, tag=tag):
            raise RuntimeError(f"Apprise refused URL for {m['channel']} {m['to']}")
        calls.append((ap, call))
    return calls


async def one_run(calls: list[tuple[Any, dict[str, Any]]], timeout: float) -> float:
    done: list[float] = []

    async def send(ap: Any, call: dict[str, Any]) -> None:
        result = await ap.async_notify(**call)
        if not result:
            raise RuntimeError(f"Apprise failed to send to {call['tag']}: {result}")
        done.append(time.time())

    t0 = time.time()
    await asyncio.wait_for(asyncio.gather(*(send(ap, c) for ap, c in calls)), timeout)
    return max(done) - t0


async def bench_apprise(scenario: Scenario, providers: Providers, sizes: list[int], quick: bool,
                        say: Any = print) -> dict[str, Any]:
    version = available()
    out: dict[str, Any] = {"label": f"Apprise {version}", "how": HOW, "sizes": {}}
    if version is None:
        say("Apprise is not installed (pip install -r bench/requirements.txt): skipped")
        out["skipped"] = "apprise not installed"
        return out
    logging.getLogger("apprise").setLevel(logging.ERROR)
    runs = QUICK_RUNS if quick else FULL_RUNS
    say(f"Apprise {version} ({HOW}):")
    await one_run(build(render_messages(scenario, min(sizes)), providers), 60)  # warm-up: imports, thread pool
    for n in sizes:
        samples = []
        for _ in range(runs.get(n, 1)):
            calls = build(render_messages(scenario, n), providers)  # fresh URLs: no per-URL throttle carry-over
            samples.append(await one_run(calls, 60 + n * 0.5))
        sms, email = scenario.mix(n)
        r = out["sizes"][str(n)] = summarise(n, samples, {"sms": sms, "email": email})
        say(f"  apprise n={n:<5} p50 {fmt_s(r['p50_s']):>8}  p99 {fmt_s(r['p99_s']):>8}  "
            f"{r['msgs_per_s_p50']:.0f} msg/s  (runs {r['runs']})")
    return out


def main(argv: list[str] | None = None) -> None:
    run_alone(__doc__, lambda scenario, providers, _tmp, sizes, quick: bench_apprise(scenario, providers, sizes, quick),
              argv)


if __name__ == "__main__":
    main()
