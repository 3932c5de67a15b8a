"""A drill end to end on a real stack: started with `sims drill start`, messages marked EXERCISE through the
local Twilio-like server and aiosmtpd, acknowledgements through links, one number failing permanently; the
readiness report's figures match what happened, and live /metrics do not count the exercise."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from datetime import datetime
from pathlib import Path

import httpx

from sims import drill_report, drills
from sims.adapters.nats_server import NatsServer
from sims.messages import EventType, Transition
from sims.metrics import exposition
from tests.support import twilio_server as tw
from tests.support.api import api_client
from tests.support.fixtures import smtp_server, twilio_server  # noqa: F401
from tests.support.smtp_server import SmtpServer
from tests.support.stack import Stack, start_stack
from tests.support.twilio_server import TwilioServer

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"http://127\.0\.0\.1:\d+/l/[a-z0-9]{17}\.[A-Za-z0-9_-]{16}")
WHITFORD, NORCROSS = "police-lead-whitford", "cllr-tobi-norcross"


async def sims(nats_url: str, tmp_path: Path, *args: str) -> str:
    """The `sims` command line against the stack's NATS, as a duty officer would run it."""
    env = {**os.environ, "SIMS_NATS_URL": nats_url, "SIMS_DATA_DIR": str(tmp_path / "cli"),
           "SIMS_LINK_SECRETS": "k:test-secret-for-links"}
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "handlers.cli", *args, cwd=ROOT, env=env,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await process.communicate()
    assert process.returncode == 0, out.decode()
    return out.decode()


def sms_link(stack: Stack, number: str, words: str) -> str:
    return next(LINK.search(m.body).group(0) for m in stack.twilio.messages  # type: ignore[union-attr]
                if m.to == number and words in m.body)


def email_link(stack: Stack, address: str) -> str:
    for m in stack.smtp.handler.messages:
        if address in m.rcpt_tos and "holding" in m.message["Message-ID"]:
            found = LINK.search(m.message.get_body(("plain",)).get_content())
            assert found
            return found.group(0)
    raise AssertionError(f"no holding email to {address}")


async def test_a_drill_runs_end_to_end_and_its_readiness_report_matches_what_happened(
        nats_server: NatsServer, twilio_server: TwilioServer, smtp_server: SmtpServer,  # noqa: F811
        tmp_path: Path) -> None:
    stack, stop = await start_stack(nats_server, twilio_server, smtp_server, tmp_path, sweep=True)
    try:
        await run_drill(stack, nats_server.url, tmp_path)
    finally:
        await stop()


async def run_drill(stack: Stack, nats_url: str, tmp_path: Path) -> None:
    directory = stack.rt.directory
    whitford, norcross = directory.get(WHITFORD), directory.get(NORCROSS)
    assert whitford and whitford.mobile and norcross and norcross.mobile and norcross.email
    stack.twilio.fail_to[norcross.mobile] = tw.invalid_number()  # a number that no longer works

    out = await sims(nats_url, tmp_path, "drill", "start", "--ward", "Peckham", "--idempotency-key", "drill-0001")
    reference = re.search(r"Drill (\S+) started", out).group(1)  # type: ignore[union-attr]
    incident_id = await stack.rt.incidents.resolve(reference)

    async def sent() -> bool:  # holding notices out, the failed SMS fallen back to email, first tasks sent
        records = await stack.deliveries(incident_id)
        return (any(r["kind"] == "task" and r["contact_id"] == WHITFORD and r["status"] == "delivered" for r in records)
                and any(r["contact_id"] == NORCROSS and r["channel"] == "email" and r.get("accepted_at") for r in records)
                and any(r["contact_id"] == WHITFORD and r["kind"] == "holding" and r["status"] == "delivered"
                        for r in records))
    await stack.wait_for(sent, timeout=30)

    async with httpx.AsyncClient() as client:
        holding = sms_link(stack, whitford.mobile, "EXERCISE")
        page = await client.get(holding)
        assert page.status_code == 200 and "EXERCISE EXERCISE EXERCISE" in page.text  # the link page's banner
        assert (await client.post(holding, data={"action": "acknowledge"})).status_code == 303
        await asyncio.sleep(0.2)
        task = sms_link(stack, whitford.mobile, "Confirm the facts")
        assert (await client.post(task, data={"action": "acknowledge"})).status_code == 303
        assert (await client.post(task, data={"action": "done", "note": "Agreed with the SIO"})).status_code == 303
        by_email = email_link(stack, norcross.email)  # the SMS failed: the email reached them
        assert (await client.post(by_email, data={"action": "acknowledge"})).status_code == 303

    ended = await stack.run(Transition(actor="duty", incident=incident_id, trigger="stand_down",
                                       reason="End of the exercise"))
    assert ended["ok"], ended

    async def stood_down_sent() -> bool:
        records = await stack.deliveries(incident_id)
        told = {r["contact_id"] for r in records if r["kind"] == "holding"}
        # the whole fan-out is out: Norcross's stand-down counts once it has fallen back to email
        stood_down = {r["contact_id"] for r in records if r["kind"] == "stand_down"
                      and (r["contact_id"] != NORCROSS or r["channel"] == "email")}
        final = ("delivered", "read", "failed", "undelivered")  # every SMS's delivery report applied
        return told <= stood_down and all(r["status"] in final for r in records if r["channel"] == "sms") and all(
            r["status"] not in ("pending", "retrying") for r in records)
    await stack.twilio.drain_callbacks()
    await stack.wait_for(stood_down_sent, timeout=30)

    # Every message was marked as an exercise.
    assert stack.twilio.messages and all(m.body.startswith(("EXERCISE EXERCISE EXERCISE", "[EXERCISE]"))
                                         for m in stack.twilio.messages)
    assert all(m.message["Subject"].startswith("EXERCISE: ") for m in stack.smtp.handler.messages)

    report, points = await drills.drill_report(stack.rt, reference)
    records = await stack.deliveries(incident_id)
    _incident, _seq, events = await stack.rt.incidents.load(incident_id)
    assert report.messages == len(records) and report.ended and report.state == "stood_down"
    failed = [r for r in records if r["status"] in ("failed", "undelivered")]
    assert failed and {(r["contact_id"], r["channel"]) for r in failed} == {(NORCROSS, "sms")}
    assert report.failed == len(failed)
    assert [(s.person, s.channel, s.code) for s in report.stale] == [(NORCROSS, "sms", "21211")]

    people = {p.key: p for p in report.people}
    police = next(c for c in people[WHITFORD].channels if c.channel == "sms")
    assert people[WHITFORD].acknowledged == 2 and len(police.ack_seconds) == 2
    first = min(r["queued_at"] for r in records if r["contact_id"] == WHITFORD and r["kind"] == "holding")
    acked = next(e.at for e in events if e.type is EventType.MESSAGE_ACKNOWLEDGED and e.data["person"] == WHITFORD)
    assert (acked - datetime.fromisoformat(first)).total_seconds() in police.ack_seconds  # the holding notice
    assert police.delivered == sum(1 for r in records if r["contact_id"] == WHITFORD and r["channel"] == "sms"
                                   and r["status"] == "delivered")
    assert all(0 <= s < 60 for s in police.delivery_seconds)
    cllr = people[NORCROSS]
    assert cllr.failed_channels == ("sms",) and cllr.acknowledged == 1
    assert len(next(c for c in cllr.channels if c.channel == "email").ack_seconds) == 1  # counted on email

    outcomes = {t.id: t.outcome for t in report.tasks}
    assert outcomes["confirm_facts"] == "on_time"
    assert all(o == "never" for t, o in outcomes.items() if t != "confirm_facts")  # the drill ended
    assert report.task_counts.on_time == 1 and report.task_counts.never == len(report.tasks) - 1
    assert [p.reference for p in points] == [reference]

    # Live statistics do not count the exercise.
    text = (await exposition(stack.rt)).decode()
    assert "sims_incidents{" not in text and "sims_messages_total{" not in text
    assert "sims_time_to_acknowledge_seconds_count 0.0" in text

    # The command line lists the drill and writes the HTML report with its charts.
    listed = await sims(nats_url, tmp_path, "drill", "list")
    assert reference in listed and "stood_down" in listed
    out_file = tmp_path / "report.html"
    printed = await sims(nats_url, tmp_path, "drill", "report", reference, "--out", str(out_file))
    assert f"Stale contact: {norcross.name} ({NORCROSS}) sms" in printed
    html = out_file.read_text()
    assert html.count("<svg") == len(drill_report.CHARTS) and "EXERCISE EXERCISE EXERCISE" in html
    assert f'<dd data-figure="failed">{len(failed)}</dd>' in html
    assert norcross.mobile not in html and norcross.email not in html  # no contact address in a report

    # The API gives the same figures to a read-only token; a live incident has no readiness report.
    async with await api_client(stack.rt, stack.http_url, scopes=("read",)) as api:
        listed_api = (await api.get("/api/drills")).json()
        assert [d["reference"] for d in listed_api] == [reference] and listed_api[0]["exercise"] is True
        body = (await api.get(f"/api/drills/{reference}/report")).json()
        assert body["summary"]["failed"] == len(failed) and body["summary"]["messages"] == len(records)
        assert body["stale"] == [{"person": NORCROSS, "name": norcross.name, "channel": "sms", "code": "21211",
                                  "reason": "not a valid phone number"}]
        assert body["task_counts"]["on_time"] == 1 and body["trend"][0]["reference"] == reference
        live = await stack.raise_incident(command_id="live-incident-0001")
        assert (await api.get(f"/api/drills/{live['reference']}/report")).status_code == 404
