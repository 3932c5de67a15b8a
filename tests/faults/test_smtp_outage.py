"""Fault: the SMTP server is down for SIMS_FAULT_OUTAGE seconds (default 60), then comes back.

Two incidents are raised during the outage. The first one's emails retry on a quick schedule so they
exhaust their attempts while the server is still down: each is dead-lettered and falls back, as the
protocol's contact rules say, to the person's next channel (SMS/WhatsApp) or their deputy, and that
message goes out. The second one's emails retry on the production schedule (1 s doubling, full jitter):
they wait, and once the server is back the backlog drains, each email once. Nothing is lost and
nothing silently dropped. Run with `bash scripts/test -m faults`; SIMS_FAULT_SEED repeats the jitter.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from sims import queries
from sims.adapters import jetstream as jsa
from sims.adapters.nats_server import NatsServer
from sims.notifications import MAX_ATTEMPTS
from tests.integration.test_notifications import expected
from tests.support.fixtures import smtp_server, twilio_server  # noqa: F401
from tests.support.smtp_server import SmtpServer
from tests.support.stack import Stack, protocol_without_steps, start_stack
from tests.support.twilio_server import TwilioServer

pytestmark = pytest.mark.faults
OUTAGE = float(os.environ.get("SIMS_FAULT_OUTAGE", "60"))
SEED = int(os.environ.get("SIMS_FAULT_SEED", "20261130"))
TOOK = {"accepted", "queued", "sending", "sent", "delivered", "read"}


async def audit_of(stack: Stack, incident_id: str) -> list[dict[str, Any]]:
    return [r async for r in stack.rt.audit.records(incident_id)]


@pytest.mark.timeout(int(OUTAGE) + 900)
async def test_smtp_outage_emails_wait_or_fall_back_and_the_backlog_drains(
        nats_server: NatsServer, twilio_server: TwilioServer, smtp_server: SmtpServer,  # noqa: F811
        tmp_path: Path) -> None:
    random.seed(SEED)  # the backoff's jitter (the worker runs in this process)
    stack, stop = await start_stack(nats_server, twilio_server, smtp_server, tmp_path,
                                    protocol=protocol_without_steps(tmp_path))
    try:
        await smtp_server.stop()  # down: connections refused
        down_at = time.monotonic()
        # Incident A: a retry schedule that runs out well inside the outage (8 attempts, full jitter).
        stack.rt.notifications.retry_base = OUTAGE / 400
        a = await stack.raise_incident(level="2", location="Rye Lane (first)")
        want = expected(stack.rt, level="2")
        emailed = {cid for cid, (ch, _) in want.items() if ch == "email"}
        assert emailed, "the demo protocol emails someone first at level 2"

        async def a_fell_back() -> bool:
            records = {r["key"]: r for r in await stack.deliveries(a["incident_id"])}
            firsts = [r for r in records.values() if r["channel"] == "email" and r["contact_id"] in emailed
                      and r["kind"] == "holding"]
            if len(firsts) < len(emailed) or any(r["status"] != "failed" for r in firsts):
                return False
            trail = await audit_of(stack, a["incident_id"])
            moved = {r["detail"]["from"] for r in trail if r["action"] == "message.fallback"}
            moved |= {r["detail"]["key"] for r in trail if r["action"] == "message.unreachable"}
            return {r["key"] for r in firsts} <= moved
        await stack.wait_for(a_fell_back, timeout=OUTAGE)
        assert time.monotonic() - down_at < OUTAGE, "A's emails should exhaust while the server is down"

        # Incident B: production backoff; its emails must wait for the server.
        stack.rt.notifications.retry_base = 1.0
        b = await stack.raise_incident(level="2", location="Rye Lane (second)")
        await asyncio.sleep(max(0.0, OUTAGE - (time.monotonic() - down_at)))
        b_during = [r for r in await stack.deliveries(b["incident_id"]) if r["channel"] == "email"]
        assert b_during and all(r["status"] in ("pending", "retrying") for r in b_during), b_during
        assert smtp_server.handler.messages == []
        await smtp_server.start()  # back, on the same port
        up_at = time.monotonic()

        async def b_drained() -> bool:
            firsts = [r for r in await stack.deliveries(b["incident_id"]) if r["contact_id"] in emailed]
            return len(firsts) >= len(emailed) and all(r["status"] not in ("pending", "retrying") for r in firsts)
        await stack.wait_for(b_drained, timeout=600)
        drained_after = time.monotonic() - up_at

        # A: every exhausted email was dead-lettered, and its fallback message went out.
        a_records = {r["key"]: r for r in await stack.deliveries(a["incident_id"])}
        a_audit = await audit_of(stack, a["incident_id"])
        a_emails = [r for r in a_records.values() if r["channel"] == "email" and r["contact_id"] in emailed]
        assert all(r["status"] == "failed" and int(r["attempts"]) == MAX_ATTEMPTS for r in a_emails)
        letters = [json.loads(m.data) async for m in jsa.read_subject(stack.rt.js, jsa.DEAD, "sims.dlq.outbox")]
        lettered = {json.loads(letter["payload"])["key"] for letter in letters}
        assert {r["key"] for r in a_emails} <= lettered
        fallbacks = {r["detail"]["from"]: r["detail"]["to"] for r in a_audit if r["action"] == "message.fallback"}
        unreachable = {r["detail"]["key"] for r in a_audit if r["action"] == "message.unreachable"}
        by_sms = 0
        for r in a_emails:
            if r["key"] in unreachable:
                continue  # no channel or deputy left: audited and dead-lettered, the duty officer sees it
            replacement = fallbacks[r["key"]]

            async def took(key: str = replacement) -> bool:
                rec = await stack.rt.kv.get("sims_deliveries", f"d.{key}")
                return bool(rec and rec["status"] in TOOK)
            await stack.wait_for(took, timeout=120)
            rec = await stack.rt.kv.get("sims_deliveries", f"d.{replacement}")
            if rec["channel"] in ("sms", "whatsapp"):
                by_sms += 1
                assert any(m.to.removeprefix("whatsapp:") == rec["to"] and a["reference"] in m.body
                           for m in twilio_server.messages)
        assert by_sms >= 1  # the protocol's [email, sms] people got their SMS

        # B: every email waited (retried) and went once the server was back; none fell back.
        b_records = await stack.deliveries(b["incident_id"])
        b_emails = [r for r in b_records if r["channel"] == "email" and r["contact_id"] in emailed]
        assert len(b_emails) == len(emailed)
        assert all(r["status"] in TOOK and int(r["attempts"]) > 1 for r in b_emails), b_emails
        per_id = Counter(str(m.message["Message-ID"]).strip("<> ") for m in smtp_server.handler.messages)
        assert all(per_id[f"{r['key']}@sims"] == 1 for r in b_emails)  # each exactly once
        assert max(per_id.values()) == 1
        for r in await stack.deliveries(a["incident_id"]) + b_records:  # nothing left hanging
            assert r["status"] in TOOK or (r["status"] == "failed" and r["key"] in lettered), r
        verdict = queries.verify_records(await queries.audit_records(stack.rt))
        assert verdict.ok, verdict.describe()
        print(f"outage {OUTAGE:.0f}s, seed {SEED}: A {len(a_emails)} emails exhausted -> {by_sms} by SMS/WhatsApp, "
              f"{len(unreachable)} unreachable; B {len(b_emails)} emails waited (max attempts "
              f"{max(int(r['attempts']) for r in b_emails)}) and drained {drained_after:.1f}s after recovery")
    finally:
        if smtp_server._server is None:
            await smtp_server.start()
        await stop()
