"""GOV.UK Notify as a second supplier, and failover: real NATS, the real notifications-python-client on a
local Notify-like server, the real twilio client on a local Twilio-like server, aiosmtpd."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from sims import queries
from sims.adapters.govuk_notify import NotifyApi, NotifySmsSender
from sims.adapters.nats_server import NatsServer, free_port
from sims.ports import DeliveryFailed, OutgoingSms
from tests.integration.test_notifications import expected
from tests.support import twilio_server as tw
from tests.support.fixtures import smtp_server, twilio_server  # noqa: F401
from tests.support.notify_server import NotifyServer
from tests.support.smtp_server import SmtpServer
from tests.support.stack import Stack, protocol_without_steps, start_stack
from tests.support.twilio_server import TwilioServer

TOOK = ("accepted", "queued", "sending", "sent", "delivered")
Start = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def notify() -> AsyncIterator[NotifyServer]:
    async with NotifyServer(callback_token="receipt-token-for-tests") as server:
        yield server


@pytest.fixture
async def start(nats_server: NatsServer, twilio_server: TwilioServer, smtp_server: SmtpServer,  # noqa: F811
                notify: NotifyServer, tmp_path: Path) -> AsyncIterator[Start]:
    """Start SIMS with Notify configured and the given settings; stopped after the test."""
    stops: list[Any] = []

    async def go(**overrides: Any) -> Stack:
        port = free_port()
        notify.callback_url = f"http://127.0.0.1:{port}/hooks/notify/status"
        settings = {"notify_api_key": notify.api_key, "notify_base_url": notify.base_url,
                    "notify_sms_template_id": notify.sms_template, "notify_email_template_id": notify.email_template,
                    "notify_callback_token": notify.callback_token, **overrides}
        stack, stop = await start_stack(nats_server, twilio_server, smtp_server, tmp_path,
                                        protocol=protocol_without_steps(tmp_path), port=port, **settings)
        stops.append(stop)
        return stack

    yield go
    for stop in stops:
        await stop()


async def sms_records(stack: Stack, incident_id: str) -> list[dict[str, Any]]:
    return [r for r in await stack.deliveries(incident_id) if r["channel"] == "sms"]


async def system_actions(stack: Stack) -> list[dict[str, Any]]:
    return [r for r in await queries.audit_records(stack.rt) if r.get("chain") == "system"
            or str(r.get("action", "")).startswith("supplier.")]


async def supplier_state(stack: Stack, channel: str, supplier: str) -> str:
    record = await stack.rt.kv.get("sims_deliveries", f"supplier.{channel}.{supplier}")
    return str(record["state"]) if record else "?"


async def test_sms_through_notify_end_to_end_and_receipts_update_each_persons_status(
        start: Start, notify: NotifyServer) -> None:
    stack = await start(sms_providers="notify")
    want = expected(stack.rt)
    raised = await stack.raise_incident()
    await stack.settled(raised["incident_id"], len(want))
    sms = await sms_records(stack, raised["incident_id"])
    assert sorted(r["to"] for r in sms) == sorted(a for ch, a in want.values() if ch == "sms")
    assert sms and all(r["provider"] == "notify" for r in sms)
    assert sorted(n.to for n in notify.sent) == sorted(r["to"] for r in sms)
    assert {n.reference for n in notify.sent} == {r["key"] for r in sms}  # our key travels as Notify's reference
    assert all(raised["reference"] in n.personalisation["body"] for n in notify.sent)
    assert all(n.template_id == notify.sms_template for n in notify.sent)
    assert all(m.to.startswith("whatsapp:") for m in stack.twilio.messages)  # WhatsApp stays on Twilio

    async def all_delivered() -> bool:
        return all(r["status"] == "delivered" for r in await sms_records(stack, raised["incident_id"]))
    await stack.wait_for(all_delivered)
    assert len(notify.receipts) == len(sms) and all(rec.status == 204 for rec in notify.receipts)
    reports = [r for r in await queries.audit_records(stack.rt, raised["incident_id"]) if r["action"] == "message.status"]
    assert reports and {r["actor"] for r in reports if r["detail"]["key"] in {s["key"] for s in sms}} == {"notify"}


async def test_a_notify_failure_receipt_marks_the_message_undelivered_and_falls_back(
        start: Start, notify: NotifyServer) -> None:
    stack = await start(sms_providers="notify")
    want = expected(stack.rt)
    sms_numbers = [addr for ch, addr in want.values() if ch == "sms"]
    notify.outcome_for[sms_numbers[0]] = "permanent-failure"
    raised = await stack.raise_incident()

    async def failed_and_fell_back() -> bool:
        records = await stack.deliveries(raised["incident_id"])
        bad = [r for r in records if r["to"] == sms_numbers[0] and r["channel"] == "sms"]
        return bool(bad) and bad[0]["status"] == "undelivered" and len(records) > len(want)
    await stack.wait_for(failed_and_fell_back)
    actions = [r["action"] for r in await queries.audit_records(stack.rt, raised["incident_id"])]
    assert "message.status" in actions and "message.fallback" in actions


async def test_receipts_need_notifys_bearer_token_and_healthz_checks_notify(start: Start) -> None:
    stack = await start(sms_providers="notify")
    async with httpx.AsyncClient(base_url=stack.http_url) as client:
        health = (await client.get("/healthz")).json()
    assert health["providers"]["notify"]["reachable"] is True
    body = {"id": "0b9f5c3e-1b1a-4a52-9d36-0f2f1f7d3c11", "reference": "x", "status": "delivered"}
    async with httpx.AsyncClient(base_url=stack.http_url) as client:
        assert (await client.post("/hooks/notify/status", json=body)).status_code == 403
        wrong = {"Authorization": "Bearer not-the-token"}
        assert (await client.post("/hooks/notify/status", json=body, headers=wrong)).status_code == 403
        right = {"Authorization": "Bearer receipt-token-for-tests"}
        assert (await client.post("/hooks/notify/status", json={"id": "nope", "status": "x"},
                                  headers=right)).status_code == 422


async def test_twilio_failing_hands_sms_to_notify_audited_shown_and_switches_back_on_recovery(
        start: Start, notify: NotifyServer, twilio_server: TwilioServer) -> None:  # noqa: F811
    stack = await start(sms_providers="twilio,notify", failover_failures=1, failover_cool_down=0.3)
    twilio_server.set_default(tw.too_many_requests(0.1))
    raised = await stack.raise_incident()
    await stack.settled(raised["incident_id"], len(expected(stack.rt)))
    sms = await sms_records(stack, raised["incident_id"])
    assert sms and all(r["provider"] == "notify" and r["status"] in TOOK for r in sms)
    assert [m for m in twilio_server.messages if not m.to.startswith("whatsapp:")] == []
    assert sorted(n.to for n in notify.sent) == sorted(r["to"] for r in sms)  # each once: none lost, none twice
    assert await supplier_state(stack, "sms", "twilio") in ("failing", "probing")
    failing = [r for r in await system_actions(stack) if r["action"] == "supplier.failing"]
    assert failing and failing[0]["detail"]["supplier"] == "twilio" and failing[0]["detail"]["active"] == "notify"
    async with httpx.AsyncClient(base_url=stack.http_url) as client:
        metrics = (await client.get("/metrics")).text
    assert 'sims_supplier_up{channel="sms",supplier="twilio"} 0.0' in metrics
    assert 'sims_supplier_active{channel="sms",supplier="notify"} 1.0' in metrics
    board = await _board(stack)
    assert 'data-supplier="sms.twilio" data-state="failing"' in board or \
        'data-supplier="sms.twilio" data-state="probing"' in board

    twilio_server.set_default(tw.ok())  # Twilio recovers: after the cool-down a probe goes through it
    record = await stack.rt.kv.get("sims_deliveries", "supplier.sms.twilio")
    wait = (datetime.fromisoformat(record["until"]) - datetime.now(UTC)).total_seconds()
    await asyncio.sleep(max(0.0, wait) + 0.1)
    update = await stack.run(_update(raised["incident_id"]))
    assert update["ok"], update

    async def back_on_twilio() -> bool:
        return await supplier_state(stack, "sms", "twilio") == "healthy"
    await stack.wait_for(back_on_twilio)
    recovered = [r for r in await system_actions(stack) if r["action"] == "supplier.recovered"]
    assert recovered and recovered[0]["detail"]["supplier"] == "twilio"
    assert "sms now goes through twilio" in recovered[0]["outcome"]
    assert 'data-supplier="sms.twilio" data-state="healthy"' in await _board(stack)


async def test_notify_rate_limiting_hands_sms_to_twilio(start: Start, notify: NotifyServer,
                                                        twilio_server: TwilioServer) -> None:  # noqa: F811
    notify.per_minute = 3  # Notify's 3,000 a minute, scaled down
    stack = await start(sms_providers="notify,twilio")
    want = expected(stack.rt)
    raised = await stack.raise_incident()
    await stack.settled(raised["incident_id"], len(want))
    sms = await sms_records(stack, raised["incident_id"])
    by = {p: sorted(r["to"] for r in sms if r["provider"] == p) for p in ("notify", "twilio")}
    assert len(by["notify"]) == 3 and len(by["twilio"]) == len(sms) - 3 > 0
    assert all(r["status"] in TOOK for r in sms)
    assert sorted(n.to for n in notify.sent) == by["notify"]
    assert sorted(m.to for m in twilio_server.messages if not m.to.startswith("whatsapp:")) == by["twilio"]
    assert 429 in notify.refused
    failing = [r for r in await system_actions(stack) if r["action"] == "supplier.failing"]
    assert failing and failing[0]["detail"]["supplier"] == "notify" and "RateLimitError" in failing[0]["detail"]["reason"]
    assert failing[0]["detail"]["active"] == "twilio"


async def test_smtp_down_hands_email_to_notify(start: Start, notify: NotifyServer,
                                                smtp_server: SmtpServer) -> None:  # noqa: F811
    await smtp_server.stop()  # nothing listens on its port now
    stack = await start(email_providers="smtp,notify", failover_failures=1)
    want = expected(stack.rt)
    raised = await stack.raise_incident()
    await stack.settled(raised["incident_id"], len(want))
    emails = [r for r in await stack.deliveries(raised["incident_id"]) if r["channel"] == "email"]
    assert emails and all(r["provider"] == "notify" and r["status"] in TOOK for r in emails)
    mails = [n for n in notify.sent if n.type == "email"]
    assert sorted(n.to for n in mails) == sorted(r["to"] for r in emails)
    assert all(raised["reference"] in n.personalisation["subject"] + n.personalisation["body"] for n in mails)
    assert all("OFFICIAL-SENSITIVE" in n.personalisation["body"] for n in mails)
    assert await supplier_state(stack, "email", "smtp") in ("failing", "probing")
    assert any(r["detail"].get("supplier") == "smtp" for r in await system_actions(stack)
               if r["action"] == "supplier.failing")


async def test_an_identical_text_flood_to_one_number_is_held_below_the_network_limit(
        start: Start, notify: NotifyServer) -> None:
    stack = await start(sms_providers="twilio,notify")
    sender = stack.rt.notifications.senders[_sms()]
    sent, held = 0, 0
    for i in range(25):
        try:
            await sender.send(OutgoingSms(key=f"flood.{i}", to="+447700900123", body="Same words every time"))
            sent += 1
        except DeliveryFailed as failure:
            assert failure.code == "identical-limit" and failure.transient and failure.retry_after
            held += 1
    assert (sent, held) == (20, 5)
    assert len([m for m in stack.twilio.messages if m.to == "+447700900123"]) == 20
    assert notify.sent == []  # held, not pushed through another supplier: the network would block it too
    await sender.send(OutgoingSms(key="flood.other", to="+447700900123", body="Different words"))
    held_records = [r for r in await system_actions(stack) if r["action"] == "message.held"]
    assert len(held_records) == 5 and held_records[0]["detail"]["key"] == "flood.20"


async def test_notify_errors_map_to_the_same_outcomes_as_twilios(notify: NotifyServer) -> None:
    api = NotifyApi(notify.api_key, notify.base_url, per_minute=3)
    sender = NotifySmsSender(api, notify.sms_template)
    sms = OutgoingSms(key="k.1", to="+447700900123", body="Hello")
    assert (await sender.send(sms)).provider == "notify"
    notify.script(500, 429)
    with pytest.raises(DeliveryFailed) as server_error:
        await sender.send(sms)
    assert server_error.value.transient and server_error.value.code == "500"
    with pytest.raises(DeliveryFailed) as limited:
        await sender.send(sms)
    assert limited.value.code == "429" and limited.value.retry_after
    with pytest.raises(DeliveryFailed) as local:  # the fourth request in the minute never leaves SIMS
        await sender.send(sms)
    assert local.value.code == "429" and "counted locally" in local.value.message and notify.requests == 3
    wrong = NotifySmsSender(NotifyApi(f"sims-{notify.service_id}-{'0' * 36}", notify.base_url), notify.sms_template)
    with pytest.raises(DeliveryFailed) as refused:
        await wrong.send(sms)
    assert refused.value.code == "403" and refused.value.transient  # our key: another supplier can carry on
    bad = NotifySmsSender(NotifyApi(notify.api_key, notify.base_url), "not-the-template")
    with pytest.raises(DeliveryFailed) as invalid:
        await bad.send(sms)
    assert invalid.value.code == "400" and not invalid.value.transient
    down = NotifySmsSender(NotifyApi(notify.api_key, f"http://127.0.0.1:{free_port()}"), notify.sms_template)
    with pytest.raises(DeliveryFailed) as unreachable:
        await down.send(sms)
    assert unreachable.value.code == "connection" and unreachable.value.transient
    for s in (sender, wrong, bad, down):
        await s.close()


async def test_notify_server_rate_limits_each_key_at_its_limit(notify: NotifyServer) -> None:
    notify.per_minute = 2
    sender = NotifySmsSender(NotifyApi(notify.api_key, notify.base_url), notify.sms_template)
    sms = OutgoingSms(key="k.2", to="+447700900123", body="Hello")
    await sender.send(sms)
    await sender.send(sms)
    with pytest.raises(DeliveryFailed) as limited:
        await sender.send(sms)
    assert limited.value.code == "429" and "RateLimitError" in limited.value.message
    await sender.close()


def _sms() -> Any:
    from sims.directory import Channel

    return Channel.SMS


def _update(incident_id: str) -> Any:
    from sims.messages import SendUpdate

    return SendUpdate(incident=incident_id, text="Police cordon lifted at " + datetime.now(UTC).strftime("%H:%M"),
                      actor="duty-officer")


async def _board(stack: Stack) -> str:
    from handlers.console import Console

    return await Console(stack.rt).live_html()
