"""The review pack button on the incident page, in real headless Chromium: it downloads the pack."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader

from handlers.auth import UserStore
from sims.adapters.nats_server import NatsServer
from tests.support.browser import CHROMIUM, chromium, needs_chromium
from tests.support.fixtures import smtp_server, twilio_server  # noqa: F401
from tests.support.smtp_server import SmtpServer
from tests.support.stack import SECRET_WORDS, Stack, protocol_without_steps, start_stack
from tests.support.twilio_server import TwilioServer

PASSWORD = "a long passphrase for tests"
pytestmark = needs_chromium

if Path(CHROMIUM).exists():
    from playwright.async_api import Browser, Page


@pytest.fixture
async def running(nats_server: NatsServer, twilio_server: TwilioServer, smtp_server: SmtpServer,  # noqa: F811
                  tmp_path: Path) -> AsyncIterator[tuple[Stack, Browser]]:
    stack, stop = await start_stack(nats_server, twilio_server, smtp_server, tmp_path,
                                    protocol=protocol_without_steps(tmp_path))
    try:
        async with chromium() as browser:
            yield stack, browser
    finally:
        await stop()


async def sign_in(stack: Stack, browser: Browser, username: str, role: str) -> Page:
    await UserStore(stack.rt.js).add(username, role, PASSWORD, by="test")
    context = await browser.new_context(accept_downloads=True, locale="en-GB", timezone_id="Europe/London")
    page = await context.new_page()
    await page.goto(f"{stack.http_url}/console/sign-in")
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{stack.http_url}/console")
    return page


async def download(page: Page) -> Any:
    async with page.expect_download() as info:
        await page.get_by_role("button", name="Download the review pack").click()
    return await info.value


async def test_the_button_downloads_the_pack_and_restricted_details_only_for_those_allowed(
        running: tuple[Stack, Browser]) -> None:
    stack, browser = running
    raised = await stack.raise_incident()
    ref = raised["reference"]
    await stack.settled(raised["incident_id"], 1)

    duty = await sign_in(stack, browser, "duty.one", "duty_officer")
    await duty.goto(f"{stack.http_url}/console/incidents/{ref}")
    await duty.get_by_text("Show restricted details").click()  # the page itself: a duty officer may look
    shown = await duty.locator("main").inner_text()
    assert all(word in shown for word in SECRET_WORDS)
    await duty.get_by_label("Who it is for").select_option("csp")
    got = await download(duty)
    assert got.suggested_filename == f"review-pack-{ref}-csp.html"
    html = Path(await got.path()).read_text()
    assert "Community Safety Partnership board review pack" in html and ref in html
    assert 'data-audit-ok="yes"' in html and not any(word in html for word in SECRET_WORDS)

    await duty.get_by_label("Who it is for").select_option("owhr")
    await duty.get_by_label("Format").select_option("pdf")
    await duty.get_by_label("Include restricted details").check()
    got = await download(duty)
    assert got.suggested_filename == f"review-pack-{ref}-owhr.pdf"
    pdf = Path(await got.path()).read_bytes()
    assert pdf.startswith(b"%PDF-")
    text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages)
    assert "Offensive Weapons Homicide Review pack" in text and all(word in text for word in SECRET_WORDS)

    viewer = await sign_in(stack, browser, "view.one", "viewer")
    await viewer.goto(f"{stack.http_url}/console/incidents/{ref}")
    assert await viewer.get_by_label("Include restricted details").count() == 0
    page_html = await viewer.content()  # nor does the incident page show a viewer the restricted details
    assert not any(word in page_html for word in SECRET_WORDS)
    assert "shown only to duty officers and admins" in page_html
    got = await download(viewer)
    html = Path(await got.path()).read_text()
    assert "Gold group review pack" in html and not any(word in html for word in SECRET_WORDS)
    assert ">view.one<" in html  # the version block names who made it

    made = [r async for r in stack.rt.audit.records("system") if r["action"] == "pack.produced"]
    assert [(r["actor"], r["detail"]["audience"], r["detail"]["restricted"]) for r in made] == [
        ("duty.one", "csp", False), ("duty.one", "owhr", True), ("view.one", "gold", False)]
