"""A redelivered SMS is looked up at Twilio before it is sent again; the local server lists messages as Twilio does.

The real `twilio` client against tests.support.twilio_server; the service's send over a real nats-server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest_asyncio
from twilio.rest import Client  # type: ignore[import-untyped]

from sims.adapters.nats_server import NatsServer
from sims.adapters.twilio_sms import TwilioSmsSender, _HttpClient
from sims.directory import Channel
from sims.notify import Delivery, Kind, Status
from sims.ports import OutgoingSms
from tests.support.fixtures import smtp_server, twilio_server  # noqa: F401
from tests.support.smtp_server import SmtpServer
from tests.support.twilio_server import TwilioServer

FROM = "+15005550006"


@pytest_asyncio.fixture
async def sender(twilio_server: TwilioServer) -> AsyncIterator[TwilioSmsSender]:  # noqa: F811
    s = TwilioSmsSender(twilio_server.account_sid, twilio_server.auth_token, from_=FROM,
                        api_base=twilio_server.base_url, timeout=2)
    yield s
    await s.close()


async def test_the_list_endpoint_filters_by_to_from_and_date_sent_and_pages_newest_first(
        twilio_server: TwilioServer, sender: TwilioSmsSender) -> None:  # noqa: F811
    """GET Messages.json as Twilio: To/From filters, DateSent>= a day or an instant, pages of PageSize."""
    for i in range(7):
        await sender.send(OutgoingSms(key=f"k{i}", to="+447700900001", body=f"message {i}"))
    await sender.send(OutgoingSms(key="other", to="+447700900002", body="someone else"))
    http = _HttpClient(api_base=twilio_server.base_url, timeout=2)
    client = Client(twilio_server.account_sid, twilio_server.auth_token, http_client=http,
                    environment={"TWILIO_UNUSED": ""})
    try:
        listed = await client.messages.list_async(to="+447700900001", page_size=3)  # three pages
        assert [m.body for m in listed] == [f"message {i}" for i in reversed(range(7))]
        assert {m.to for m in listed} == {"+447700900001"} and {m.from_ for m in listed} == {FROM}
        page = await client.messages.page_async(to="+447700900001", page_size=3)
        assert len(list(page)) == 3 and page.next_page_url is not None
        today = datetime.now(UTC)
        assert len(await client.messages.list_async(date_sent_after=today - timedelta(minutes=5))) == 8
        assert await client.messages.list_async(date_sent_after=today + timedelta(minutes=5)) == []
        assert await client.messages.list_async(from_="+15005550000") == []
    finally:
        await http.close()


async def test_find_accepted_matches_to_and_body_and_ignores_older_or_other_messages(
        twilio_server: TwilioServer, sender: TwilioSmsSender) -> None:  # noqa: F811
    """The same To and body since the cut-off is found (with its SID); another body or an earlier cut-off is not."""
    sms = OutgoingSms(key="k", to="+447700900003", body="SIMS: holding notice http://x/l/abc")
    accepted = await sender.send(sms)
    found = await sender.find_accepted(sms, datetime.now(UTC) - timedelta(minutes=5))
    assert found is not None and found.provider_id == accepted.provider_id
    other = OutgoingSms(key="k2", to=sms.to, body="SIMS: holding notice http://x/l/xyz")
    assert await sender.find_accepted(other, datetime.now(UTC) - timedelta(minutes=5)) is None
    assert await sender.find_accepted(sms, datetime.now(UTC) + timedelta(minutes=5)) is None


async def test_a_redelivered_work_item_already_taken_by_twilio_is_recorded_not_sent_again(
        nats_server: NatsServer, twilio_server: TwilioServer, smtp_server: SmtpServer,  # noqa: F811
        tmp_path: Path) -> None:
    """As if a worker died after Twilio accepted the SMS but before its record: the redelivery records that SID."""
    from tests.support.stack import protocol_without_steps, start_stack

    stack, stop = await start_stack(nats_server, twilio_server, smtp_server, tmp_path,
                                    protocol=protocol_without_steps(tmp_path))
    try:
        service = stack.rt.notifications
        delivery = Delivery(key="inc0.holding.someone.sms.1", incident_id="inc0", reference="SWK-2026-0000",
                            kind=Kind.HOLDING, contact_id="someone", channel=Channel.SMS, to="+447700900004",
                            body="SIMS: holding notice http://x/l/only-theirs", created_at=datetime.now(UTC))
        sms_sender = service.senders[Channel.SMS]
        taken = await sms_sender.send(OutgoingSms(key=delivery.key, to=delivery.to, body=delivery.body))
        assert await service.send(delivery, attempt=2) is Status.ACCEPTED
        assert len(twilio_server.messages) == 1  # not sent again
        [record] = await service.deliveries("inc0")
        assert record["provider_id"] == taken.provider_id and record["status"] == "accepted"
        audit = [r async for r in stack.rt.audit.records("inc0") if r["action"] == "message.accepted"]
        assert audit and audit[0]["detail"]["found_at_provider"] is True
        assert await service.send(delivery, attempt=3) is Status.ACCEPTED and len(twilio_server.messages) == 1

        fresh = delivery.model_copy(update={"key": "inc0.holding.other.sms.1", "contact_id": "other",
                                            "to": "+447700900005", "body": "SIMS: http://x/l/another"})
        assert await service.send(fresh, attempt=2) is Status.ACCEPTED  # nothing at Twilio: sent now
        assert [m.to for m in twilio_server.messages] == ["+447700900004", "+447700900005"]
    finally:
        await stop()
