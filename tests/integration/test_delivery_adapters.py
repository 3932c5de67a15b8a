"""Delivery adapters against real clients: twilio's async client on a local Twilio-like server,
aiosmtplib on aiosmtpd, and the file outbox."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from twilio.request_validator import RequestValidator

from sims.adapters.outbox import OutboxSender, read_outbox
from sims.adapters.smtp_email import SmtpEmailSender
from sims.adapters.twilio_sms import TwilioSmsSender
from sims.ports import Accepted, DeliveryFailed, OutgoingEmail, OutgoingSms

from tests.support import twilio_server as tw
from tests.support.fixtures import smtp_server, twilio_server, webhook_receiver  # noqa: F401
from tests.support.smtp_server import SmtpServer
from tests.support.twilio_server import TwilioServer, WebhookReceiver

FROM = "+15005550006"
TO = "+447700900123"


def sms(to: str = TO, body: str = "Major incident declared: report to Gold.", key: str = "INC-1:raise:c1:sms:1",
        status_callback: str | None = None) -> OutgoingSms:
    return OutgoingSms(key=key, to=to, body=body, status_callback=status_callback)


def mail(key: str = "INC-1:raise:c1:email:1", to: str = "duty.officer@example.org") -> OutgoingEmail:
    return OutgoingEmail(key=key, to=to, subject="INC-1: major incident declared",
                         text="Report to Gold command.\n", html="<p>Report to <b>Gold</b> command.</p>",
                         message_id=f"<{key.replace(':', '.')}@sims.example.org>",
                         headers={"X-SIMS-Incident": "INC-1"})


@pytest_asyncio.fixture
async def sender(twilio_server: TwilioServer) -> AsyncIterator[TwilioSmsSender]:  # noqa: F811
    s = TwilioSmsSender(twilio_server.account_sid, twilio_server.auth_token, from_=FROM,
                        api_base=twilio_server.base_url, timeout=2)
    yield s
    await s.close()


@pytest_asyncio.fixture
async def mailer(smtp_server: SmtpServer) -> AsyncIterator[SmtpEmailSender]:  # noqa: F811
    s = SmtpEmailSender("127.0.0.1", smtp_server.port, "none", from_addr="SIMS <sims@example.org>", timeout=2)
    yield s
    await s.close()


# -- Twilio ----------------------------------------------------------------------------------------

async def test_sms_is_accepted_with_exact_fields(sender: TwilioSmsSender, twilio_server: TwilioServer) -> None:  # noqa: F811
    """A sent SMS reaches Twilio with the exact To, From and Body; its SID comes back as provider_id."""
    accepted = await sender.send(sms())
    [message] = twilio_server.messages
    assert (message.to, message.from_, message.body) == (TO, FROM, "Major incident declared: report to Gold.")
    assert accepted.provider == "twilio" and accepted.provider_id == message.sid
    assert message.sid.startswith("SM") and len(message.sid) == 34
    assert accepted.status == "queued"


async def test_invalid_number_is_permanent(sender: TwilioSmsSender, twilio_server: TwilioServer) -> None:  # noqa: F811
    """Twilio's 21211 (invalid To) is a permanent failure that keeps the Twilio code."""
    twilio_server.fail_to["+4400"] = tw.invalid_number()
    with pytest.raises(DeliveryFailed) as caught:
        await sender.send(sms(to="+4400"))
    assert (caught.value.transient, caught.value.code) == (False, "21211")
    assert "not a valid phone number" in caught.value.message
    await sender.send(sms())  # other numbers still go
    assert [m.to for m in twilio_server.messages] == [TO]


@pytest.mark.parametrize("reply", [tw.unsubscribed(), tw.not_mobile(), tw.region_not_enabled(),
                                   tw.error(400, 21602, "Message body is required.")])
async def test_other_client_errors_are_permanent(sender: TwilioSmsSender, twilio_server: TwilioServer,  # noqa: F811
                                                 reply: tw.Reply) -> None:
    """21610 (unsubscribed), 21614, 21408 and any other 4xx will not pass on retry."""
    twilio_server.script(reply)
    with pytest.raises(DeliveryFailed) as caught:
        await sender.send(sms())
    assert (caught.value.transient, caught.value.code) == (False, str(reply.code))


async def test_too_many_requests_is_transient_with_retry_after(sender: TwilioSmsSender,
                                                               twilio_server: TwilioServer) -> None:  # noqa: F811
    """A 429 (20429) is transient and carries Twilio's Retry-After; the next try succeeds."""
    twilio_server.script(tw.too_many_requests(retry_after=3))
    with pytest.raises(DeliveryFailed) as caught:
        await sender.send(sms())
    assert (caught.value.transient, caught.value.code, caught.value.retry_after) == (True, "20429", 3.0)
    await sender.send(sms())
    assert twilio_server.requests == 2 and len(twilio_server.messages) == 1


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_are_transient_and_not_retried_by_the_library(
        sender: TwilioSmsSender, twilio_server: TwilioServer, status: int) -> None:  # noqa: F811
    """5xx is transient, and the twilio client makes exactly one request: backoff is the caller's."""
    twilio_server.script(tw.server_error(status))
    with pytest.raises(DeliveryFailed) as caught:
        await sender.send(sms())
    assert caught.value.transient and caught.value.code == str(20000 + status)
    assert twilio_server.requests == 1


async def test_slow_answer_beyond_timeout_is_transient(twilio_server: TwilioServer) -> None:  # noqa: F811
    """No answer within the client timeout is a transient failure, raised on time."""
    s = TwilioSmsSender(twilio_server.account_sid, twilio_server.auth_token, from_=FROM,
                        api_base=twilio_server.base_url, timeout=0.3)
    twilio_server.script(tw.slow(2.0))
    started = time.monotonic()
    try:
        with pytest.raises(DeliveryFailed) as caught:
            await s.send(sms())
        assert caught.value.transient and caught.value.code == "timeout"
        assert time.monotonic() - started < 1.5
        await s.send(sms())  # the client is still usable
    finally:
        await s.close()


async def test_unreachable_api_is_transient() -> None:
    """A refused connection to the API is transient."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    s = TwilioSmsSender(tw.DEFAULT_ACCOUNT_SID, tw.DEFAULT_AUTH_TOKEN, from_=FROM,
                        api_base=f"http://127.0.0.1:{port}", timeout=1)
    try:
        with pytest.raises(DeliveryFailed) as caught:
            await s.send(sms())
        assert caught.value.transient and caught.value.code == "connection"
    finally:
        await s.close()


async def test_wrong_credentials_are_refused(twilio_server: TwilioServer) -> None:  # noqa: F811
    """The server checks basic auth; Twilio's 401 (20003) is an account problem, so transient."""
    s = TwilioSmsSender(twilio_server.account_sid, "wrong-token", from_=FROM, api_base=twilio_server.base_url)
    try:
        with pytest.raises(DeliveryFailed) as caught:
            await s.send(sms())
        assert (caught.value.transient, caught.value.code) == (True, "20003")
        assert twilio_server.messages == []
    finally:
        await s.close()


async def test_whatsapp_addressing(sender: TwilioSmsSender, twilio_server: TwilioServer) -> None:  # noqa: F811
    """A `whatsapp:` recipient is sent from `whatsapp:<from>`."""
    await sender.send(sms(to=f"whatsapp:{TO}"))
    [message] = twilio_server.messages
    assert (message.to, message.from_) == (f"whatsapp:{TO}", f"whatsapp:{FROM}")


async def test_messaging_service_sid_is_sent(twilio_server: TwilioServer) -> None:  # noqa: F811
    """With only a Messaging Service SID, the message goes out through the service."""
    s = TwilioSmsSender(twilio_server.account_sid, twilio_server.auth_token, messaging_service_sid="MG" + "1" * 32,
                        api_base=twilio_server.base_url)
    try:
        accepted = await s.send(sms())
    finally:
        await s.close()
    [message] = twilio_server.messages
    assert (message.from_, message.messaging_service_sid, accepted.status) == (None, "MG" + "1" * 32, "accepted")


async def test_status_callbacks_are_signed_like_twilio(sender: TwilioSmsSender, twilio_server: TwilioServer,  # noqa: F811
                                                       webhook_receiver: WebhookReceiver) -> None:  # noqa: F811
    """StatusCallback is passed on; callbacks queued->sent->delivered validate with RequestValidator."""
    url = webhook_receiver.url("/twilio/status?incident=INC-1")
    accepted = await sender.send(sms(status_callback=url))
    assert twilio_server.messages[0].status_callback == url
    received = await webhook_receiver.wait_for(3)
    validator = RequestValidator(twilio_server.auth_token)
    assert [r.params["MessageStatus"] for r in received] == ["queued", "sent", "delivered"]
    for r in received:
        assert r.url == url and r.params["MessageSid"] == accepted.provider_id
        assert r.params["AccountSid"] == twilio_server.account_sid and r.params["To"] == TO
        assert validator.validate(r.url, r.params, r.signature)
        assert not RequestValidator("another-token").validate(r.url, r.params, r.signature)


async def test_failed_callbacks_out_of_order_and_duplicated(twilio_server: TwilioServer,  # noqa: F811
                                                            webhook_receiver: WebhookReceiver) -> None:  # noqa: F811
    """The server can report `undelivered` with ErrorCode, shuffled and with duplicates."""
    twilio_server.callbacks_shuffled = twilio_server.callbacks_duplicated = True
    twilio_server.fail_to[TO] = tw.undelivered(30003)
    s = TwilioSmsSender(twilio_server.account_sid, twilio_server.auth_token, from_=FROM,
                        api_base=twilio_server.base_url)
    try:
        await s.send(sms(status_callback=webhook_receiver.url()))
    finally:
        await s.close()
    await twilio_server.drain_callbacks()
    received = webhook_receiver.received
    statuses = [r.params["MessageStatus"] for r in received]
    assert len(statuses) > 3 and set(statuses) == {"queued", "sent", "undelivered"}
    assert all(r.params.get("ErrorCode") == "30003" for r in received if r.params["MessageStatus"] == "undelivered")
    validator = RequestValidator(twilio_server.auth_token)
    assert all(validator.validate(r.url, r.params, r.signature) for r in received)


async def test_concurrent_sends_share_one_client(sender: TwilioSmsSender, twilio_server: TwilioServer) -> None:  # noqa: F811
    """Many concurrent sends each get their own SID; a 429 among them keeps its own retry_after."""
    twilio_server.fail_to["+447700900999"] = tw.too_many_requests(retry_after=7)
    results = await asyncio.gather(*(sender.send(sms(to=f"+4477009{i:05d}", key=f"k{i}")) for i in range(50)),
                                   sender.send(sms(to="+447700900999")), return_exceptions=True)
    sids = {r.provider_id for r in results[:50] if not isinstance(r, BaseException)}
    assert len(sids) == 50
    failure = results[50]
    assert isinstance(failure, DeliveryFailed) and failure.retry_after == 7.0


# -- SMTP ------------------------------------------------------------------------------------------

async def test_email_is_multipart_with_message_id(mailer: SmtpEmailSender, smtp_server: SmtpServer) -> None:  # noqa: F811
    """An email arrives as multipart/alternative text+HTML with the given Message-ID and headers."""
    accepted = await mailer.send(mail())
    [received] = smtp_server.handler.messages
    msg = received.message
    assert received.rcpt_tos == ("duty.officer@example.org",) and received.mail_from == "sims@example.org"
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert msg.get_body(("plain",)).get_content() == "Report to Gold command.\n"  # type: ignore[union-attr]
    assert "<b>Gold</b>" in msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert msg["Subject"] == "INC-1: major incident declared"
    assert msg["Message-ID"] == "<INC-1.raise.c1.email.1@sims.example.org>" == accepted.provider_id
    assert msg["X-SIMS-Incident"] == "INC-1" and accepted.provider == "smtp"


async def test_one_connection_is_reused(mailer: SmtpEmailSender, smtp_server: SmtpServer) -> None:  # noqa: F811
    """Sequential and concurrent sends go over one connection."""
    for i in range(3):
        await mailer.send(mail(key=f"k{i}"))
    await asyncio.gather(*(mailer.send(mail(key=f"c{i}")) for i in range(10)))
    assert len(smtp_server.handler.messages) == 13 and smtp_server.connections_made == 1


async def _no_record(accepted: Accepted) -> None:
    return None


@pytest.mark.parametrize("committed", [False, True], ids=["sendmail", "recorded on commit"])
async def test_committed_send_writes_the_same_message(mailer: SmtpEmailSender, smtp_server: SmtpServer,  # noqa: F811
                                                      committed: bool) -> None:
    """Lines starting with a dot, bare line ends and non-ASCII text arrive intact either way."""
    text = ".starts with a dot\n..two dots\rbare CR\nZoë Ağaoğlu\n."
    email = OutgoingEmail(key="dots", to="duty.officer@example.org", subject="Dots", text=text,
                          html="<p>.dot</p>\n.<b>x</b>", message_id="<dots@sims>")
    await mailer.send(email, recorded=_no_record if committed else None)
    [received] = smtp_server.handler.messages
    body = received.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert body == text.replace("\r", "\n") + "\n"
    assert received.message.get_body(("html",)).get_content() == "<p>.dot</p>\n.<b>x</b>\n"  # type: ignore[union-attr]


@pytest.mark.parametrize("in_doubt", [1, 3])
async def test_with_many_connections_at_most_in_doubt_emails_are_taken_and_not_recorded(
        smtp_server: SmtpServer, in_doubt: int) -> None:  # noqa: F811
    """A worker killed at any moment can have sent at most `in_doubt` emails whose record is missing
    (one by default); with more allowed, slow end-of-data answers overlap."""
    s = SmtpEmailSender("127.0.0.1", smtp_server.port, "none", from_addr="sims@example.org", connections=4,
                        in_doubt=in_doubt)
    smtp_server.handler.delay = 0.05  # a relay that takes its time to answer the end of data
    unrecorded: list[int] = []
    done: list[str] = []

    async def recorded(accepted: Accepted) -> None:
        unrecorded.append(len(smtp_server.handler.messages) - len(done))  # taken by the server, not recorded
        await asyncio.sleep(0.02)  # a slow record write: other connections must not commit meanwhile
        done.append(accepted.provider_id)

    try:
        await asyncio.gather(*(s.send(mail(key=f"m{i}"), recorded=recorded) for i in range(16)))
    finally:
        await s.close()
    assert len(done) == 16 == len(smtp_server.handler.messages) and smtp_server.connections_made == 4
    assert max(unrecorded) == in_doubt and min(unrecorded) >= 1  # never more in doubt than allowed
    assert smtp_server.handler.most_in_data == in_doubt  # ends of data answered at once: as many as allowed


async def test_a_failed_record_is_the_callers_error_and_the_connection_stays(
        mailer: SmtpEmailSender, smtp_server: SmtpServer) -> None:  # noqa: F811
    class StoreDown(Exception):
        pass

    async def broken(accepted: Accepted) -> None:
        raise StoreDown("NATS unavailable")

    with pytest.raises(StoreDown):  # not a DeliveryFailed: the server took it
        await mailer.send(mail(), recorded=broken)
    await mailer.send(mail(key="next"), recorded=_no_record)
    assert len(smtp_server.handler.messages) == 2 and smtp_server.connections_made == 1


@pytest.mark.parametrize("committed", [False, True], ids=["sendmail", "recorded on commit"])
@pytest.mark.parametrize(("where", "reply", "transient", "code"), [
    ("mail", "451 4.3.0 Sender busy", True, "451"),
    ("mail", "553 5.1.8 Sender rejected", False, "553"),
    ("data", "451 4.3.0 Try again later", True, "451"),
    ("data", "550 5.7.1 Rejected as spam", False, "550"),
    ("rcpt", "450 4.2.1 Mailbox busy", True, "450"),
    ("rcpt", "550 5.1.1 No such user", False, "550"),
])
async def test_smtp_refusals_are_classified(mailer: SmtpEmailSender, smtp_server: SmtpServer,  # noqa: F811
                                            where: str, reply: str, transient: bool, code: str,
                                            committed: bool) -> None:
    """4xx answers are transient, 5xx permanent; the connection stays usable afterwards."""
    recorded = _no_record if committed else None
    setattr(smtp_server.handler, f"{where}_response", reply)
    with pytest.raises(DeliveryFailed) as caught:
        await mailer.send(mail(), recorded=recorded)
    assert (caught.value.transient, caught.value.code) == (transient, code)
    setattr(smtp_server.handler, f"{where}_response", None)
    await mailer.send(mail(), recorded=recorded)
    assert len(smtp_server.handler.messages) == 1 and smtp_server.connections_made == 1


async def test_server_down_is_transient_then_recovers() -> None:
    """Connection refused is transient; the same sender delivers once the server is back."""
    server = await SmtpServer().start()
    port = server.port
    await server.stop()
    s = SmtpEmailSender("127.0.0.1", port, "none", from_addr="sims@example.org", timeout=1)
    try:
        with pytest.raises(DeliveryFailed) as caught:
            await s.send(mail())
        assert caught.value.transient
        server = await SmtpServer(port=port).start()
        await s.send(mail())
        assert len(server.handler.messages) == 1
        server.drop_connections()  # the server drops the idle connection: the next send reconnects
        await asyncio.sleep(0.05)
        await s.send(mail(key="again"))
        assert len(server.handler.messages) == 2 and server.connections_made == 2
    finally:
        await s.close()
        await server.stop()


async def test_slow_smtp_server_is_transient(smtp_server: SmtpServer) -> None:  # noqa: F811
    """A server that does not answer DATA in time gives a transient failure."""
    smtp_server.handler.delay = 1.0
    s = SmtpEmailSender("127.0.0.1", smtp_server.port, "none", from_addr="sims@example.org", timeout=0.3)
    try:
        with pytest.raises(DeliveryFailed) as caught:
            await s.send(mail())
        assert caught.value.transient
    finally:
        await s.close()


# -- Outbox ----------------------------------------------------------------------------------------

async def test_outbox_writes_lines_and_files_once_per_key(tmp_path: Path) -> None:
    """Each message is one JSON line plus readable files; the same key again is a no-op."""
    sms_box, email_box = OutboxSender.for_sms(tmp_path), OutboxSender.for_email(tmp_path)
    assert (sms_box.name, email_box.name) == ("outbox-sms", "outbox-email")
    first = await sms_box.send(sms())
    assert await sms_box.send(sms()) == first
    assert await OutboxSender.for_sms(tmp_path).send(sms()) == first
    sent_mail = await email_box.send(mail())
    assert await email_box.send(mail()) == sent_mail
    await sms_box.send(sms(to=f"whatsapp:{TO}", key="INC-1:raise:c1:whatsapp:1"))

    lines = (tmp_path / "outbox" / "messages.jsonl").read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    assert [e["channel"] for e in entries] == ["sms", "email", "whatsapp"]
    assert entries[0]["to"] == TO and entries[0]["body"].startswith("Major incident")
    assert entries[1]["subject"] == "INC-1: major incident declared"
    txt = (tmp_path / entries[0]["file"]).read_text()
    assert TO in txt and "Major incident declared" in txt
    assert "<b>Gold</b>" in (tmp_path / entries[1]["html"]).read_text()
    assert read_outbox(tmp_path, limit=2) == entries[1:]
    assert read_outbox(tmp_path / "nothing-here", limit=5) == []
