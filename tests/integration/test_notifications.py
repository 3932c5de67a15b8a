"""Notifications end to end: real NATS, the real twilio client on a local Twilio-like server, aiosmtpd."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from handlers.http import create_app
from handlers.worker import build_broker
from sims import queries
from sims.adapters.commands import submit
from sims.adapters.nats_server import NatsServer, free_port
from sims.bootstrap import Runtime, connect_runtime
from sims.config import Settings
from sims.gsm import segments
from sims.messages import RaiseIncident, Transition
from sims.model import Incident
from sims.routing import recipients_for
from tests.support import twilio_server as tw
from tests.support.fixtures import smtp_server, twilio_server  # noqa: F401
from tests.support.smtp_server import SmtpServer
from tests.support.stack import RAISE, SECRET_WORDS, Stack, stack  # noqa: F401
from tests.support.twilio_server import TwilioServer

def expected(rt: Runtime, **overrides: Any) -> dict[str, tuple[str, str]]:
    data = {**RAISE, **overrides}
    probe = Incident(id="x", reference="x", raised_at=data["occurred_at"], updated_at=data["occurred_at"],
                     raised_by="d", **{k: v for k, v in data.items() if k != "actor"})
    people = recipients_for(probe, rt.directory, rt.protocol)
    return {p.contact.id: (p.channels[0].value, p.contact.address(p.channels[0])) for p in people}


async def test_a_raise_notifies_exactly_the_protocols_people_on_their_first_channel(stack: Stack) -> None:
    raised = await stack.raise_incident()
    want = expected(stack.rt)
    records = await stack.settled(raised["incident_id"], len(want))
    assert {r["contact_id"]: (r["channel"], r["to"]) for r in records} == want
    took = ("accepted", "queued", "sent", "delivered")
    assert [(r["contact_id"], r["status"], r.get("error")) for r in records if r["status"] not in took] == []
    sms_to = sorted(m.to.removeprefix("whatsapp:") for m in stack.twilio.messages)
    assert sms_to == sorted(addr for ch, addr in want.values() if ch in ("sms", "whatsapp"))
    assert sorted(r for m in stack.smtp.handler.messages for r in m.rcpt_tos) == sorted(
        addr for ch, addr in want.values() if ch == "email")
    for m in stack.twilio.messages:
        assert raised["reference"] in m.body and f"{stack.http_url}/l/" in m.body
        assert segments(m.body).segments <= 2
        assert not any(word in m.body for word in SECRET_WORDS)
    for mail in stack.smtp.handler.messages:
        text = mail.message.get_body(("plain",)).get_content()
        assert mail.message["Subject"].startswith(raised["reference"]) or raised["reference"] in mail.message["Subject"]
        assert "OFFICIAL-SENSITIVE" in text and not any(w in text + mail.message["Subject"] for w in SECRET_WORDS)
        assert mail.message["Message-ID"].strip().startswith(f"<{raised['incident_id']}.holding.")
    await stack.wait_for(lambda: queries.incident_with_timeline(stack.rt, raised["incident_id"]))
    async def active() -> bool:
        incident, _ = await queries.incident_with_timeline(stack.rt, raised["incident_id"])
        return incident.state == "active"
    await stack.rt.notifications.sweep(await queries.list_incidents(stack.rt))
    await stack.wait_for(active)


async def test_a_redelivered_work_item_is_not_sent_twice(stack: Stack) -> None:
    raised = await stack.raise_incident()
    want = expected(stack.rt)
    await stack.settled(raised["incident_id"], len(want))
    sent = len(stack.twilio.messages)
    incident, _ = await queries.incident_with_timeline(stack.rt, raised["incident_id"])
    event = (await stack.rt.incidents.load(incident.id))[2][0]
    replanned = await stack.rt.notifications.on_event(event)  # as if the notifier saw the event again
    assert replanned == []  # everyone was told already
    first = next(d for d in await stack.deliveries(incident.id) if d["channel"] == "sms")
    from sims.notify import Delivery
    item = Delivery(key=first["key"], incident_id=incident.id, reference=incident.reference, kind="holding",
                    contact_id=first["contact_id"], channel="sms", to=first["to"], body="again",
                    created_at=incident.raised_at)
    await stack.rt.js.publish("sims.send.sms", item.model_dump_json().encode())  # a new Nats-Msg-Id
    await asyncio.sleep(1.0)
    assert len(stack.twilio.messages) == sent


async def test_invalid_number_fails_over_to_email_and_it_is_audited(stack: Stack) -> None:
    want = expected(stack.rt)
    sms_person = next(cid for cid, (ch, _) in want.items() if ch == "sms" and stack.rt.directory.get(cid).email)
    number = want[sms_person][1]
    stack.twilio.fail_to[number] = tw.invalid_number()
    raised = await stack.raise_incident()
    records = await stack.settled(raised["incident_id"], len(want) + 1)
    failed = next(r for r in records if r["contact_id"] == sms_person and r["channel"] == "sms")
    assert failed["status"] == "failed" and failed["error"].startswith("21211")
    email = stack.rt.directory.get(sms_person).email
    assert any(email in m.rcpt_tos for m in stack.smtp.handler.messages)
    actions = [r["action"] for r in await queries.audit_records(stack.rt, raised["incident_id"])]
    assert "message.failed" in actions and "message.fallback" in actions


async def test_rate_limits_and_server_errors_are_retried_with_nothing_lost_or_doubled(stack: Stack) -> None:
    stack.twilio.script(tw.too_many_requests(0.05), tw.server_error(500), tw.server_error(503))
    stack.smtp.handler.data_response = "451 4.3.0 Try again later"
    raised = await stack.raise_incident()
    want = expected(stack.rt)
    await asyncio.sleep(0.5)
    stack.smtp.handler.data_response = None
    records = await stack.settled(raised["incident_id"], len(want))
    assert all(r["status"] in ("accepted", "queued", "sent", "delivered") for r in records)
    assert max(r["attempts"] for r in records) >= 2
    sms_count = sum(1 for ch, _ in want.values() if ch in ("sms", "whatsapp"))
    assert len(stack.twilio.messages) == sms_count  # every SMS once, none twice
    emails = sorted(r for m in stack.smtp.handler.messages for r in m.rcpt_tos)
    assert emails == sorted(a for ch, a in want.values() if ch == "email")
    actions = [r["action"] for r in await queries.audit_records(stack.rt, raised["incident_id"])]
    assert actions.count("message.retrying") >= 3


async def test_smtp_refusal_falls_back_to_sms(stack: Stack) -> None:
    stack.smtp.handler.rcpt_response = "550 5.1.1 No such user"
    raised = await stack.raise_incident()
    want = expected(stack.rt)
    email_people = [cid for cid, (ch, _) in want.items() if ch == "email"]
    records = await stack.settled(raised["incident_id"], len(want) + len(email_people))
    for cid in email_people:
        mine = {r["channel"]: r["status"] for r in records if r["contact_id"] == cid}
        took = ("accepted", "queued", "sent", "delivered")
        assert mine["email"] == "failed" and any(s in took for ch, s in mine.items() if ch != "email")


async def test_status_callbacks_out_of_order_and_twice_never_go_backwards(stack: Stack) -> None:
    raised = await stack.raise_incident()
    want = expected(stack.rt)
    await stack.settled(raised["incident_id"], len(want))
    message, other = stack.twilio.messages[0], stack.twilio.messages[1]
    url = message.status_callback  # as given to Twilio: it carries the message key, and Twilio signs it all
    assert url and "?k=" in url
    for status in ("delivered", "sent", "delivered", "queued", "undelivered"):
        attempt = await stack.twilio.post_signed(url, stack.twilio.callback_params(message, status))
        assert attempt.response_status == 204
    params = stack.twilio.callback_params(message, "failed")
    async with httpx.AsyncClient() as client:
        forged = await client.post(url, data=params, headers={"X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"})
        signed = stack.twilio.signature(url, params)  # a genuine signature, moved to another message's key
        moved = await client.post(str(other.status_callback), data=params, headers={"X-Twilio-Signature": signed})
    assert forged.status_code == 403 and moved.status_code == 403

    async def delivered() -> bool:
        recs = await stack.deliveries(raised["incident_id"])
        rec = next(r for r in recs if r.get("provider_id") == message.sid)
        return rec["status"] == "delivered" and len(rec.get("history", [])) >= 3
    await stack.wait_for(delivered)
    await asyncio.sleep(0.5)
    rec = next(r for r in await stack.deliveries(raised["incident_id"]) if r.get("provider_id") == message.sid)
    assert rec["status"] == "delivered"


async def test_stand_down_tells_everyone_who_was_told(stack: Stack) -> None:
    raised = await stack.raise_incident(exercise=True)
    want = expected(stack.rt)
    await stack.settled(raised["incident_id"], len(want))
    result = await submit(stack.rt.nc, stack.rt.js, stack.rt.kv, Transition(
        actor="duty", incident=raised["incident_id"], trigger="stand_down", reason="Police confirm no injuries"))
    assert result["ok"]
    records = await stack.settled(raised["incident_id"], 2 * len(want))
    stand_downs = {r["contact_id"] for r in records if r["kind"] == "stand_down"}
    assert stand_downs == set(want)
    bodies = [m.body for m in stack.twilio.messages]
    assert all(b.startswith(("EXERCISE EXERCISE EXERCISE", "[EXERCISE]")) for b in bodies)
    assert all(m.message["Subject"].startswith("EXERCISE") for m in stack.smtp.handler.messages)


async def test_members_briefing_is_drafted_edited_approved_and_sent_to_members_by_sms_and_email(stack: Stack) -> None:
    from sims.messages import ApproveBriefing, DraftBriefing

    raised = await stack.raise_incident()
    want = expected(stack.rt)
    await stack.settled(raised["incident_id"], len(want))

    async def drafted() -> bool:
        incident, _ = await queries.incident_with_timeline(stack.rt, raised["incident_id"])
        return len(incident.briefings) == 1
    await stack.wait_for(drafted)
    incident, _ = await queries.incident_with_timeline(stack.rt, raised["incident_id"])
    assert "my thoughts are with everyone affected" in incident.briefings[0]  # drafted from the template
    lines = "Please say: we are working with the police; a community meeting is on Thursday at the library."
    edit = await submit(stack.rt.nc, stack.rt.js, stack.rt.kv, DraftBriefing(actor="duty", incident=raised["reference"],
                                                                            talking_points=lines))
    assert edit["ok"]
    approve = ApproveBriefing(actor="duty", incident=raised["reference"], briefing_version=2)
    assert (await submit(stack.rt.nc, stack.rt.js, stack.rt.kv, approve))["ok"]
    members = {p for p in want if set(stack.rt.directory.get(p).roles) & set(stack.rt.protocol.member_roles)}
    assert members >= {"cllr-rhys-ekwueme"}
    expected_pairs = {(p, ch.value) for p in members for ch in stack.rt.directory.get(p).channels if ch.value != "whatsapp"}
    records = await stack.settled(raised["incident_id"], len(want) + len(expected_pairs))
    briefings = {(r["contact_id"], r["channel"]) for r in records if r["kind"] == "briefing"}
    assert briefings == expected_pairs
    assert all(r["key"].endswith(".2") for r in records if r["kind"] == "briefing")
    member_emails = [m for m in stack.smtp.handler.messages if "briefing" in m.message["Message-ID"]]
    assert member_emails and all(lines in m.message.get_body(("plain",)).get_content() for m in member_emails)
    assert all(not any(w in m.message.as_string() for w in SECRET_WORDS) for m in member_emails)
    audit = await queries.audit_records(stack.rt, raised["incident_id"])
    assert [r["detail"]["talking_points"] for r in audit if r["action"] == "briefing.drafted"][1] == lines
    again = await submit(stack.rt.nc, stack.rt.js, stack.rt.kv, ApproveBriefing(
        actor="duty", incident=raised["reference"], briefing_version=2))
    assert again["ok"] is False and "sent already" in again["error"]["message"]


async def test_an_update_goes_to_everyone_told(stack: Stack) -> None:
    from sims.messages import SendUpdate

    raised = await stack.raise_incident()
    want = expected(stack.rt)
    await stack.settled(raised["incident_id"], len(want))
    text = "Police have made an arrest. The cordon on Rye Lane has been lifted."
    assert (await submit(stack.rt.nc, stack.rt.js, stack.rt.kv, SendUpdate(actor="duty", incident=raised["reference"],
                                                                          text=text)))["ok"]
    records = await stack.settled(raised["incident_id"], 2 * len(want))
    assert {r["contact_id"] for r in records if r["kind"] == "update"} == set(want)
    assert any("arrest" in m.body for m in stack.twilio.messages)


async def test_unacknowledged_notices_follow_up_on_the_next_channel_and_acknowledged_ones_do_not(
        nats_server: NatsServer, twilio_server: TwilioServer, smtp_server: SmtpServer, tmp_path: Path) -> None:
    from sims.messages import Acknowledge
    from tests.support.stack import protocol_without_steps, start_stack

    protocol = protocol_without_steps(tmp_path)
    protocol.write_text(protocol.read_text().replace("follow_up: 30m", "follow_up: 2s"))
    stack, stop = await start_stack(nats_server, twilio_server, smtp_server, tmp_path, protocol=protocol, sweep=True)
    try:
        raised = await stack.raise_incident()
        want = expected(stack.rt)
        await stack.settled(raised["incident_id"], len(want))
        acked = "cllr-rhys-ekwueme"
        assert (await stack.run(Acknowledge(actor=acked, person=acked, incident=raised["incident_id"],
                                            message_kind="holding", via="link")))["ok"]
        two_channels = {p for p in want if len(stack.rt.directory.get(p).channels) > 1}
        assert acked in two_channels
        records = await stack.settled(raised["incident_id"], len(want) + len(two_channels) - 1)
        followed = {r["contact_id"]: r["channel"] for r in records if r["key"].endswith(".1f")}
        assert set(followed) == two_channels - {acked}
        for person, channel in followed.items():
            assert channel == stack.rt.directory.get(person).channels[1].value
        await asyncio.sleep(1.0)
        assert len(await stack.deliveries(raised["incident_id"])) == len(want) + len(two_channels) - 1
    finally:
        await stop()


async def test_a_slow_sms_rate_limit_does_not_hold_up_email(
        nats_server: NatsServer, twilio_server: TwilioServer, smtp_server: SmtpServer, tmp_path: Path) -> None:
    from tests.support.stack import protocol_without_steps, start_stack

    stack, stop = await start_stack(nats_server, twilio_server, smtp_server, tmp_path,
                                    protocol=protocol_without_steps(tmp_path), sms_rate=4.0)
    try:
        raised = await stack.raise_incident(level="2")
        want = expected(stack.rt, level="2")
        records = await stack.settled(raised["incident_id"], len(want))
        # When each SMS reached the provider (what the limit governs; its answer can take longer for one).
        sms = sorted(m.date_created for m in twilio_server.messages if raised["incident_id"] in str(m.status_callback))
        email = sorted(datetime.fromisoformat(r["accepted_at"]) for r in records if r["channel"] == "email")
        assert len(sms) >= 8 and len(sms) == len([r for r in records if r["channel"] in ("sms", "whatsapp")]) and email
        # 4 a second: sends start 0.25 s apart; a busy event loop can delay one start's request until
        # just before the next, so pairs may bunch, but any three span at least one interval.
        spans = [(c - a).total_seconds() for a, c in zip(sms, sms[2:])]
        assert min(spans) >= 0.25
        assert (sms[-1] - sms[0]).total_seconds() >= 0.25 * (len(sms) - 2)  # the first request also connects
        assert email[-1] < sms[-1]  # the email went while SMS waited its turn
    finally:
        await stop()
