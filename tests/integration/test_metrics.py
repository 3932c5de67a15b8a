"""GET /metrics: incidents by state, messages by channel and provider, lag, dead letters, histograms."""

from __future__ import annotations

import httpx

from sims.metrics import exposition
from tests.support.fixtures import smtp_server, twilio_server  # noqa: F401
from tests.support.stack import Stack, stack  # noqa: F401
from tests.integration.test_notifications import expected


async def test_metrics_report_what_happened(stack: Stack) -> None:
    raised = await stack.raise_incident()
    want = expected(stack.rt)
    await stack.settled(raised["incident_id"], len(want))
    await stack.raise_incident(exercise=True, command_id="exercise-0001")  # kept out of live figures
    text = (await exposition(stack.rt)).decode()
    sms = sum(1 for ch, _ in want.values() if ch == "sms")
    email = sum(1 for ch, _ in want.values() if ch == "email")
    assert f'sims_messages_total{{channel="sms",outcome="sent",provider="twilio"}} {float(sms)}' in text
    assert f'sims_messages_total{{channel="email",outcome="sent",provider="smtp"}} {float(email)}' in text
    assert "sims_time_to_notify_seconds_count 1.0" in text
    assert 'sims_consumer_pending{consumer="incident-commands",stream="SIMS_COMMANDS"}' in text
    assert "sims_dead_letters 0.0" in text
    states = [line for line in text.splitlines() if line.startswith("sims_incidents{")]
    assert len(states) == 1 and states[0].endswith(" 1.0")  # the exercise is not counted
    async with httpx.AsyncClient() as client:
        served = await client.get(f"{stack.http_url}/metrics")
    assert served.status_code == 200 and served.headers["content-type"].startswith("text/plain")
    assert "sims_time_to_acknowledge_seconds_bucket" in served.text and "sims_incidents{" in served.text


async def test_healthz_says_whether_nats_jetstream_and_each_provider_are_reachable(stack: Stack) -> None:
    async with httpx.AsyncClient() as client:
        healthy = (await client.get(f"{stack.http_url}/healthz")).json()
        assert healthy["ok"] and healthy["nats"] and healthy["jetstream"]
        assert healthy["providers"]["twilio"]["reachable"] and healthy["providers"]["smtp"]["reachable"]
        await stack.smtp.stop()  # the SMTP server goes away
        down = await client.get(f"{stack.http_url}/healthz")
    assert down.status_code == 503
    body = down.json()
    assert body["ok"] is False and body["providers"]["smtp"]["reachable"] is False
    assert "unreachable" in body["providers"]["smtp"]["detail"] and body["providers"]["twilio"]["reachable"]
