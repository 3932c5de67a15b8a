"""Lost Twilio status callbacks: the records are settled by looking the messages up at Twilio."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from sims import queries
from sims.adapters.nats_server import NatsServer
from sims.adapters.twilio_sms import TwilioSmsSender
from sims.notifications.reconcile import StatusReconciler, StatusSource, status_source
from sims.ports import DeliveryFailed
from tests.support import twilio_server as tw
from tests.support.fixtures import smtp_server, twilio_server  # noqa: F401
from tests.support.smtp_server import SmtpServer
from tests.support.stack import Stack, protocol_without_steps, stack, start_stack  # noqa: F401
from tests.support.twilio_server import SentMessage, TwilioServer


def reconciler(stack: Stack, source: StatusSource | None = None) -> StatusReconciler:
    source = source or status_source(stack.rt.notifications.senders.values())
    assert source is not None
    return StatusReconciler(stack.rt.notifications, source, stack.rt.notifications.clock,
                            after=timedelta(0), every=timedelta(0))


async def settled(stack: Stack, incident_id: str) -> list[dict[str, Any]]:
    """Every message the notifier planned for the raise, each handed to a provider."""
    async def told() -> dict[str, list[str]] | None:
        found: dict[str, list[str]] | None = await stack.rt.kv.get("sims_deliveries", f"told.{incident_id}")
        return found
    await stack.wait_for(told)
    planned = sum(len(keys) for keys in (await told() or {}).values())
    return await stack.settled(incident_id, planned)


async def sent_silently(stack: Stack) -> tuple[str, list[dict[str, Any]]]:
    """Raise an incident whose SMS Twilio takes but never reports on; its settled records."""
    stack.twilio.send_callbacks = False
    raised = await stack.raise_incident()
    incident_id = raised["incident_id"]
    records = await settled(stack, incident_id)
    assert [r for r in records if r["channel"] in ("sms", "whatsapp")], "the protocol sends no SMS"
    assert not stack.twilio.callbacks
    return incident_id, records


def message_of(stack: Stack, record: dict[str, Any]) -> SentMessage:
    return next(m for m in stack.twilio.messages if m.sid == record["provider_id"])


async def record_of(stack: Stack, incident_id: str, key: str) -> dict[str, Any]:
    return next(r for r in await stack.deliveries(incident_id) if r["key"] == key)


async def status_audits(stack: Stack, incident_id: str, key: str) -> list[dict[str, Any]]:
    return [r for r in await queries.audit_records(stack.rt, incident_id)
            if r["action"] == "message.status" and r["detail"]["key"] == key]


async def test_a_delivered_message_whose_callbacks_were_lost_is_recorded_delivered(stack: Stack) -> None:  # noqa: F811
    incident_id, records = await sent_silently(stack)
    sms = [r for r in records if r["channel"] == "sms"]
    first, rest = sms[0], sms[1:]
    assert first["status"] == "accepted"
    stack.twilio.set_status(first["provider_id"], "delivered")
    incidents = await queries.list_incidents(stack.rt, reveal=False)

    moved = await reconciler(stack).run(incidents)

    assert moved == len(sms)  # the others: Twilio says queued, one step past accepted
    settled = await record_of(stack, incident_id, first["key"])
    assert settled["status"] == "delivered"
    assert [h["status"] for h in settled["history"]] == ["delivered"]
    for other in rest:
        assert (await record_of(stack, incident_id, other["key"]))["status"] == "queued"
    [audit] = await status_audits(stack, incident_id, first["key"])
    assert audit["outcome"] == "delivered -> delivered" and audit["detail"]["provider_id"] == first["provider_id"]

    moved = await reconciler(stack).run(incidents)  # asked again: nothing new, so no report and no audit
    assert moved == 0
    assert len(await status_audits(stack, incident_id, first["key"])) == 1


async def test_an_undelivered_message_found_by_lookup_falls_back_like_a_callback(stack: Stack) -> None:  # noqa: F811
    incident_id, records = await sent_silently(stack)
    directory = stack.rt.directory
    failing = next(r for r in records if r["channel"] == "sms" and directory.get(r["contact_id"]).email)
    stack.twilio.set_status(failing["provider_id"], "undelivered", 30003)
    email = directory.get(failing["contact_id"]).email

    await reconciler(stack).run(await queries.list_incidents(stack.rt, reveal=False))

    settled = await record_of(stack, incident_id, failing["key"])
    assert settled["status"] == "undelivered" and settled["history"][-1]["error_code"] == "30003"
    [audit] = await status_audits(stack, incident_id, failing["key"])
    assert audit["outcome"] == "undelivered -> undelivered" and audit["detail"]["error_code"] == "30003"
    await stack.wait_for(lambda: any(email in m.rcpt_tos for m in stack.smtp.handler.messages))
    fallbacks = [r for r in await queries.audit_records(stack.rt, incident_id) if r["action"] == "message.fallback"]
    assert [f["detail"]["from"] for f in fallbacks] == [failing["key"]]


class CallbackFirst:
    """Twilio's lookup, but the (late) delivered callback lands while the lookup is on its way."""

    def __init__(self, stack: Stack, inner: StatusSource, incident_id: str) -> None:
        self.stack, self.inner, self.incident_id = stack, inner, incident_id
        self.asked: list[str] = []

    async def fetch_status(self, provider_id: str) -> tuple[str, str | None] | None:
        self.asked.append(provider_id)
        record = next(r for r in await self.stack.deliveries(self.incident_id) if r["provider_id"] == provider_id)
        message = message_of(self.stack, record)
        assert message.status_callback
        await self.stack.twilio.post_signed(message.status_callback,
                                            self.stack.twilio.callback_params(message, "delivered"))

        async def delivered() -> bool:
            return (await record_of(self.stack, self.incident_id, record["key"]))["status"] == "delivered"
        await self.stack.wait_for(delivered)
        return await self.inner.fetch_status(provider_id)


async def test_a_final_status_already_recorded_is_never_overwritten_by_a_lookup(stack: Stack) -> None:  # noqa: F811
    incident_id, records = await sent_silently(stack)
    sms = [r for r in records if r["channel"] == "sms"]
    raced, done = sms[0], sms[1] if len(sms) > 1 else None
    twilio = status_source(stack.rt.notifications.senders.values())
    assert twilio is not None
    # Twilio's answer is older than (raced) or contradicts (done) what the callbacks already said.
    stack.twilio.set_status(raced["provider_id"], "undelivered", 30005)
    source = CallbackFirst(stack, twilio, incident_id)
    incidents = await queries.list_incidents(stack.rt, reveal=False)
    rec = reconciler(stack, source)
    rec.checked = {r["key"]: stack.rt.notifications.clock.now() for r in sms if r is not raced}
    rec.every = timedelta(hours=1)  # only `raced` is due in this pass

    await rec.run(incidents)

    assert source.asked == [raced["provider_id"]]
    settled = await record_of(stack, incident_id, raced["key"])
    assert settled["status"] == "delivered"  # the undelivered answer came after: applied, not moved back
    assert [h["status"] for h in settled["history"]] == ["delivered", "undelivered"]
    assert [a["outcome"] for a in await status_audits(stack, incident_id, raced["key"])] == [
        "delivered -> delivered", "undelivered -> delivered"]
    audit = await queries.audit_records(stack.rt, incident_id)
    assert not [r for r in audit if r["action"] == "message.fallback"]  # no fallback for a delivered message

    if done is not None:  # a record already final is not even looked up
        assert message_of(stack, done).status_callback
        await stack.twilio.post_signed(str(message_of(stack, done).status_callback),
                                       stack.twilio.callback_params(message_of(stack, done), "delivered"))

        async def delivered() -> bool:
            return (await record_of(stack, incident_id, done["key"]))["status"] == "delivered"
        await stack.wait_for(delivered)
        stack.twilio.set_status(done["provider_id"], "sent")
        again = reconciler(stack, source)
        source.asked.clear()
        await again.run(incidents)
        assert done["provider_id"] not in source.asked and raced["provider_id"] not in source.asked
        assert (await record_of(stack, incident_id, done["key"]))["status"] == "delivered"


async def test_a_lookup_that_fails_leaves_the_record_and_the_others_go_on(stack: Stack) -> None:  # noqa: F811
    incident_id, records = await sent_silently(stack)
    sms = [r for r in records if r["channel"] == "sms"]
    assert len(sms) >= 3, "needs three SMS recipients"
    busy, unknown, fine = sms[:3]
    stack.twilio.fail_fetch[busy["provider_id"]] = tw.server_error(503)
    stack.twilio.fail_fetch[unknown["provider_id"]] = tw.error(404, 20404, "The requested resource was not found")
    stack.twilio.set_status(fine["provider_id"], "delivered")
    incidents = await queries.list_incidents(stack.rt, reveal=False)
    rec = reconciler(stack)

    await rec.run(incidents)

    for left in (busy, unknown):
        record = await record_of(stack, incident_id, left["key"])
        assert record["status"] == "accepted" and "history" not in record
        assert await status_audits(stack, incident_id, left["key"]) == []
    assert (await record_of(stack, incident_id, fine["key"]))["status"] == "delivered"

    stack.twilio.fail_fetch.clear()  # Twilio answers again: the next pass settles them
    stack.twilio.set_status(busy["provider_id"], "delivered")
    await rec.run(incidents)
    assert (await record_of(stack, incident_id, busy["key"]))["status"] == "delivered"
    assert (await record_of(stack, incident_id, unknown["key"]))["status"] == "queued"


async def test_fetch_status_answers_status_and_error_code_none_when_unknown_and_raises_when_busy(
        twilio_server: TwilioServer) -> None:  # noqa: F811
    sender = TwilioSmsSender(twilio_server.account_sid, twilio_server.auth_token, from_="+447700900999",
                             api_base=twilio_server.base_url)
    try:
        from sims.ports import OutgoingSms

        accepted = await sender.send(OutgoingSms(key="k1", to="+447700900123", body="hello"))
        sid = accepted.provider_id
        assert await sender.fetch_status(sid) == ("delivered", None)  # where its (default) callbacks end
        twilio_server.set_status(sid, "undelivered", 30003)
        assert await sender.fetch_status(sid) == ("undelivered", "30003")
        assert await sender.fetch_status("SM" + "0" * 32) is None
        twilio_server.fail_fetch[sid] = tw.server_error(503)
        with pytest.raises(DeliveryFailed) as failed:
            await sender.fetch_status(sid)
        assert failed.value.transient
        twilio_server.fail_fetch[sid] = tw.too_many_requests()
        with pytest.raises(DeliveryFailed) as limited:
            await sender.fetch_status(sid)
        assert limited.value.transient and limited.value.code == "20429"
    finally:
        await sender.close()


async def test_the_workers_sweeper_reconciles_with_the_configured_timings(
        nats_server: NatsServer, twilio_server: TwilioServer, smtp_server: SmtpServer,  # noqa: F811
        tmp_path: Path) -> None:
    twilio_server.send_callbacks = False
    stack, stop = await start_stack(nats_server, twilio_server, smtp_server, tmp_path,
                                    protocol=protocol_without_steps(tmp_path), sweep=True,
                                    status_reconcile_after=0.3, status_reconcile_every=0.2)
    try:
        assert stack.rt.settings.status_reconcile_after == 0.3
        raised = await stack.raise_incident()
        incident_id = raised["incident_id"]
        records = await settled(stack, incident_id)
        sms = [r for r in records if r["channel"] in ("sms", "whatsapp")]
        for record in sms:
            twilio_server.set_status(record["provider_id"], "delivered")

        async def all_delivered() -> bool:
            found = {r["key"]: r["status"] for r in await stack.deliveries(incident_id)}
            return all(found[r["key"]] == "delivered" for r in sms)
        await stack.wait_for(all_delivered, timeout=20)
    finally:
        await stop()


async def test_with_two_workers_one_runs_each_pass(stack: Stack) -> None:  # noqa: F811
    """Each worker has its reconciler; the lease record lets one of them look the messages up per pass."""
    from sims.notifications.reconcile import LEASE_BUCKET, LEASE_KEY, lease_for

    incident_id, records = await sent_silently(stack)
    sms = [r for r in records if r["channel"] == "sms"]
    for record in sms:
        stack.twilio.set_status(record["provider_id"], "delivered")
    every = timedelta(minutes=5)
    source = status_source(stack.rt.notifications.senders.values())
    assert source is not None
    workers = [StatusReconciler(stack.rt.notifications, source, stack.rt.notifications.clock, after=timedelta(0),
                                every=every, lease=lease_for(stack.rt.kv, LEASE_BUCKET, LEASE_KEY, every))
               for _ in range(2)]
    incidents = await queries.list_incidents(stack.rt, reveal=False)
    fetches = stack.twilio.fetches

    moved = await asyncio.gather(*(w.run(incidents) for w in workers))

    assert sorted(moved) == [0, len(sms)]  # one worker settled them all, the other skipped the pass
    assert stack.twilio.fetches - fetches == len(sms)  # each message looked up once
    for record in sms:
        assert (await record_of(stack, incident_id, record["key"]))["status"] == "delivered"
        assert len(await status_audits(stack, incident_id, record["key"])) == 1
    lease = await stack.rt.kv.get(LEASE_BUCKET, LEASE_KEY)
    assert lease and lease["until"] > stack.rt.notifications.clock.now().isoformat()
