"""The console board's suppliers panel in real headless Chromium: a switch to Notify shows up live."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sims.adapters.nats_server import NatsServer, free_port
from sims.directory import Channel
from sims.ports import OutgoingSms
from tests.e2e.test_console import DESKTOP, Console
from tests.support.browser import CHROMIUM, chromium, needs_chromium
from tests.support import twilio_server as tw
from tests.support.fixtures import smtp_server, twilio_server  # noqa: F401
from tests.support.notify_server import NotifyServer
from tests.support.smtp_server import SmtpServer
from tests.support.stack import start_stack
from tests.support.twilio_server import TwilioServer

pytestmark = needs_chromium

if Path(CHROMIUM).exists():
    from playwright.async_api import expect


@pytest.fixture
async def console(nats_server: NatsServer, twilio_server: TwilioServer, smtp_server: SmtpServer,  # noqa: F811
                  tmp_path: Path) -> AsyncIterator[Console]:
    port = free_port()
    async with NotifyServer(callback_url=f"http://127.0.0.1:{port}/hooks/notify/status") as notify:
        stack, stop = await start_stack(
            nats_server, twilio_server, smtp_server, tmp_path, port=port, sms_providers="twilio,notify",
            failover_failures=1, failover_cool_down=120, notify_api_key=notify.api_key,
            notify_base_url=notify.base_url, notify_sms_template_id=notify.sms_template,
            notify_callback_token=notify.callback_token)
        try:
            async with chromium() as browser:
                yield Console(stack, browser, nats_server.url, tmp_path)
        finally:
            await stop()


async def test_the_board_shows_each_supplier_and_a_switch_to_notify_live(console: Console) -> None:
    await console.add_user("duty.three", "duty_officer")
    context = await console.browser.new_context(**DESKTOP)
    page = await context.new_page()
    await console.sign_in(page, "duty.three")
    panel = page.get_by_role("region", name="Suppliers")
    twilio = panel.locator('[data-supplier="sms.twilio"]')
    notify = panel.locator('[data-supplier="sms.notify"]')
    await expect(twilio).to_have_attribute("data-state", "healthy")
    await expect(twilio).to_contain_text("in use")
    await expect(notify).to_contain_text("2. notify")

    console.stack.twilio.set_default(tw.server_error(503))
    sender = console.stack.rt.notifications.senders[Channel.SMS]
    accepted = await sender.send(OutgoingSms(key="e2e.switch", to="+447700900123", body="Test of the switch"))
    assert accepted.provider == "notify"

    # No reload: the board's event stream brings the change.
    await expect(twilio).to_have_attribute("data-state", "failing", timeout=10_000)
    await expect(twilio).to_contain_text("503")
    await expect(notify).to_contain_text("in use")
    await expect(twilio).not_to_contain_text("in use")
    await console.shot(page, "suppliers-switched")
    await context.close()
