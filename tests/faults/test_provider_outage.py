"""Fault: the Twilio-like server answers 429 for a minute, then 500 for a minute, then recovers.

No message is lost, retries back off with jitter (no storm), and what exhausts its retries is
dead-lettered where the duty officer sees it and falls back to the person's next channel.
Run with `bash scripts/test -m faults`; SIMS_FAULT_OUTAGE=seconds shortens each phase.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from pathlib import Path

import pytest

from sims.adapters import jetstream as jsa
from sims.adapters.nats_server import NatsServer
from tests.integration.test_notifications import expected
from tests.support import twilio_server as tw
from tests.support.fixtures import smtp_server, twilio_server  # noqa: F401
from tests.support.smtp_server import SmtpServer
from tests.support.stack import protocol_without_steps, start_stack
from tests.support.twilio_server import TwilioServer

pytestmark = pytest.mark.faults
PHASE = float(os.environ.get("SIMS_FAULT_OUTAGE", "60"))


@pytest.mark.timeout(900)
async def test_429_then_500_then_recovery_loses_nothing_and_does_not_storm(
        nats_server: NatsServer, twilio_server: TwilioServer, smtp_server: SmtpServer,  # noqa: F811
        tmp_path: Path) -> None:
    started = time.monotonic()
    requests: list[tuple[float, str]] = []

    def decide(form: dict[str, str]) -> tw.Reply | None:
        elapsed = time.monotonic() - started
        requests.append((elapsed, form.get("To", "")))
        if elapsed < PHASE:
            return tw.too_many_requests(1)
        if elapsed < 2 * PHASE:
            return tw.server_error(500)
        return None  # recovered: the default, accepted

    twilio_server.set_decide(decide)
    stack, stop = await start_stack(nats_server, twilio_server, smtp_server, tmp_path,
                                    protocol=protocol_without_steps(tmp_path))
    stack.rt.notifications.retry_base = 1.0  # production backoff: 1 s doubling, full jitter, capped at 300 s
    try:
        raised = await stack.raise_incident(level="2")
        want = expected(stack.rt, level="2")
        sms_people = {p for p, (ch, _) in want.items() if ch in ("sms", "whatsapp")}

        async def settled() -> bool:  # every first SMS/WhatsApp, and any fallback it led to, at an end
            recs = await stack.deliveries(raised["incident_id"])
            first = {r["contact_id"] for r in recs
                     if r["contact_id"] in sms_people and r["channel"] == want[r["contact_id"]][0]}
            return first == sms_people and all(r["status"] not in ("pending", "retrying") for r in recs)
        await stack.wait_for(settled, timeout=2 * PHASE + 400)
        await asyncio.sleep(2)
        records = await stack.deliveries(raised["incident_id"])
        reached = {r["contact_id"] for r in records if r.get("accepted_at")}
        assert set(want) <= reached  # everyone reached: by SMS after recovery, or by their next channel
        per_number = Counter(to for _, to in requests)
        from sims.notifications import MAX_ATTEMPTS
        assert max(per_number.values()) <= MAX_ATTEMPTS  # bounded retries per message: no storm
        during = [t for t, _ in requests if t < 2 * PHASE]
        assert len(during) <= len(sms_people) * MAX_ATTEMPTS
        retry_gaps = sorted(round(t, 1) for t, _ in requests if 1 < t < PHASE)
        assert len(set(retry_gaps)) > len(retry_gaps) // 2  # jitter: retries do not fire in lockstep
        failed = [r for r in records if r["status"] == "failed"]
        letters = [json.loads(m.data) async for m in jsa.read_subject(stack.rt.js, jsa.DEAD, "sims.dlq.outbox")]
        assert len(letters) == sum(1 for r in failed if int(r.get("attempts") or 0) >= MAX_ATTEMPTS)
        print(f"phase {PHASE}s: {len(requests)} Twilio requests for {len(sms_people)} SMS; "
              f"{len(failed)} exhausted their retries and fell back; {len(letters)} dead letters")
    finally:
        await stop()
