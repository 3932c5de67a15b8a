"""The duty officer's console end to end in real headless Chromium, over a whole SIMS on loopback."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sims import protocol as protocol_mod
from sims import queries
from sims.adapters.nats_server import NatsServer
from sims.model import State
from sims.ports import OutgoingSms
from tests.support.browser import CHROMIUM, chromium, needs_chromium
from tests.support.fixtures import smtp_server, twilio_server  # noqa: F401
from tests.support.smtp_server import SmtpServer
from tests.support.stack import Stack, start_stack
from tests.support.twilio_server import TwilioServer

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-artifacts"
LINK = re.compile(r"http://127\.0\.0\.1:\d+/l/[a-z0-9]{17}\.[A-Za-z0-9_-]{16}")
PASSWORD = "a long passphrase for tests"
DESKTOP: dict[str, Any] = {"viewport": {"width": 1280, "height": 900}, "locale": "en-GB",
                           "timezone_id": "Europe/London"}
pytestmark = needs_chromium

if Path(CHROMIUM).exists():
    from playwright.async_api import Browser, Page, expect


class Console:
    """The running stack, a browser on it, and helpers a test reads like a person using the console."""

    def __init__(self, stack: Stack, browser: Browser, nats_url: str, tmp_path: Path) -> None:
        self.stack, self.browser, self.nats_url, self.tmp_path = stack, browser, nats_url, tmp_path
        self.url = stack.http_url

    async def add_user(self, username: str, role: str) -> None:
        """`sims users add` as an administrator would run it, against the same NATS."""
        env = {**os.environ, "SIMS_NATS_URL": self.nats_url, "SIMS_USER_PASSWORD": PASSWORD,
               "SIMS_DATA_DIR": str(self.tmp_path / "cli"), "SIMS_LINK_SECRETS": "k:test-secret-for-links"}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "handlers.cli", "users", "add", username, "--role", role, cwd=ROOT, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await process.communicate()
        assert process.returncode == 0, out.decode()

    async def sign_in(self, page: Page, username: str, password: str = PASSWORD) -> None:
        await page.goto(f"{self.url}/console/sign-in")
        await page.get_by_label("Username").fill(username)
        await page.get_by_label("Password").fill(password)
        await page.get_by_role("button", name="Sign in").click()

    async def shot(self, page: Page, name: str) -> None:
        SHOTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(SHOTS / f"console-{name}.png"), full_page=True)


@pytest.fixture
async def console(nats_server: NatsServer, twilio_server: TwilioServer, smtp_server: SmtpServer,  # noqa: F811
                  tmp_path: Path) -> AsyncIterator[Console]:
    stack, stop = await start_stack(nats_server, twilio_server, smtp_server, tmp_path, sweep=True)
    try:
        async with chromium() as browser:
            yield Console(stack, browser, nats_server.url, tmp_path)
    finally:
        await stop()


def task_links(stack: Stack, number: str) -> list[str]:
    return [LINK.search(m.body).group(0) for m in stack.twilio.messages  # type: ignore[union-attr]
            if m.to == number and "Task for you" in m.body and LINK.search(m.body)]


async def test_raise_from_the_form_see_it_live_and_a_partner_acknowledges_on_a_phone(
        console: Console) -> None:
    stack = console.stack
    await console.add_user("duty.one", "duty_officer")
    context = await console.browser.new_context(**DESKTOP)
    board = await context.new_page()
    navigations: list[str] = []
    board.on("framenavigated",
             lambda frame: navigations.append(frame.url) if frame == board.main_frame else None)

    # Signed out, the board sends you to sign in; the form works from the keyboard alone.
    await board.goto(f"{console.url}/console")
    assert board.url.startswith(f"{console.url}/console/sign-in")
    await console.shot(board, "sign-in")
    await board.keyboard.press("Tab")
    assert await board.evaluate("document.activeElement.textContent") == "Skip to main content"
    await board.keyboard.press("Tab")
    await board.keyboard.type("duty.one")
    await board.keyboard.press("Tab")
    await board.keyboard.type(PASSWORD)
    await board.keyboard.press("Enter")
    await expect(board.get_by_role("heading", name="Open incidents")).to_be_visible()
    cookie = next(c for c in await context.cookies() if c["name"] == "sims_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and not cookie["secure"]  # http on loopback
    await board.evaluate("window.sameDocument = true")
    navigations.clear()

    # Raise from the form in a second tab: errors first, then check, preview and confirm.
    form = await context.new_page()
    await form.goto(f"{console.url}/console/raise")
    await form.get_by_role("button", name="Continue").click()
    summary = form.locator(".error-summary")
    await expect(summary).to_contain_text("Select the type of incident")
    await expect(summary).to_contain_text("Enter where it happened")
    assert await form.evaluate("document.activeElement.classList.contains('error-summary')")
    assert (await form.title()).startswith("Error:")
    await console.shot(form, "raise-errors")
    await form.get_by_label("Stabbing").check()
    await form.get_by_label("Level 2 (borough)").check()
    await form.get_by_label("Ward").select_option("Peckham")
    await form.get_by_label("Where it happened").fill("Rye Lane, near the station")
    await form.get_by_label("What happened, in outline").fill("A young man was stabbed")
    await form.get_by_label("Restricted details (optional)").fill("Victim: Jordan Smith, 17")
    await form.get_by_label("This is an exercise, not a real incident").check()
    await form.get_by_role("button", name="Continue").click()
    await expect(form.get_by_role("heading", name="Check before you raise it")).to_be_visible()
    police = stack.rt.directory.get("police-lead-whitford")
    assert police is not None and police.mobile
    await expect(form.locator("[data-recipients]")).to_contain_text(police.name)
    await expect(form.locator(".banner.exercise")).to_contain_text("EXERCISE")
    await console.shot(form, "raise-confirm")
    assert not await queries.list_incidents(stack.rt)  # nothing raised before the confirm step
    await form.get_by_role("button", name=re.compile(r"^Raise the incident and notify \d+ people$")).click()
    await expect(form.locator(".notice")).to_contain_text("The incident was raised")
    reference = form.url.split("/console/incidents/")[1].split("?")[0]
    assert re.fullmatch(r"SWK-\d{4}-\d{4}", reference)
    incident = (await queries.list_incidents(stack.rt))[0]
    assert incident.exercise and incident.raised_by == "duty.one" and incident.level == "2"

    # The board, untouched, shows it (server-sent events): no reload, same document.
    row = board.locator(f'tr[data-reference="{reference}"]')
    await expect(row).to_contain_text("Exercise", timeout=15_000)
    tasks_acknowledged = row.locator('[data-count="tasks-acknowledged"]')
    await expect(tasks_acknowledged).to_have_text("0", timeout=15_000)
    await console.shot(board, "board-live")

    # The partner opens the link from the text message actually sent, on a phone, and acknowledges.
    await stack.wait_for(lambda: task_links(stack, police.mobile))  # type: ignore[arg-type]
    link = task_links(stack, police.mobile)[0]  # type: ignore[arg-type]
    phone = await console.browser.new_context(**{**DESKTOP, "viewport": {"width": 390, "height": 844}},
                                              is_mobile=True, has_touch=True)
    partner = await phone.new_page()
    await partner.goto(link)
    task_title = await partner.locator("h1").inner_text()
    await console.shot(partner, "partner-link-phone")
    button = partner.get_by_role("button", name="I've seen this - acknowledge")
    box = await button.bounding_box()
    assert box is not None and box["width"] <= 390 and box["height"] >= 44  # fits, and big enough to tap
    await button.tap()
    await expect(partner.locator(".notice")).to_contain_text("Thank you - recorded.")
    await console.shot(partner, "partner-acknowledged-phone")

    # ...and the board's count changes by itself.
    await expect(tasks_acknowledged).to_have_text("1", timeout=15_000)
    assert await board.evaluate("window.sameDocument") is True and navigations == []
    await console.shot(board, "board-acknowledged")

    # The incident page: deliveries, tasks, only the protocol's next legal moves, the briefing, the audit trail.
    await form.goto(f"{console.url}/console/incidents/{reference}")
    await expect(form.locator("[data-deliveries]")).to_contain_text(police.name)
    await expect(form.locator("tr[data-task]", has_text=task_title)).to_contain_text("acknowledged")
    state = State(await form.locator("[data-state]").get_attribute("data-state"))
    offered = [await b.get_attribute("data-trigger") for b in await form.locator("[data-trigger]").all()]
    assert offered == [t.value for t in protocol_mod.allowed_triggers(state)] and offered
    assert "Jordan" not in await form.locator("[data-preview-sms]").inner_text()
    await console.shot(form, "incident")
    talking_points = form.get_by_label("What members may say to the community")
    await talking_points.fill("Police are in Rye Lane. Please stay calm.")
    await form.get_by_role("button", name="Save as a new version").click()
    await expect(form.locator(".notice")).to_contain_text("A new version of the briefing was saved")
    await expect(form.get_by_role("button", name="Approve version 2 and send to members")).to_be_visible()
    async with form.expect_download() as download_info:
        await form.get_by_role("link", name="Download the audit trail (CSV)").click()
    download = await download_info.value
    audit_csv = Path(await download.path()).read_text()  # type: ignore[arg-type]
    assert audit_csv.startswith("chain,index,at,actor") and "duty.one" in audit_csv
    assert download.suggested_filename == f"audit-{reference}.csv"

    # The outbox viewer shows what the embedded default wrote, with the link clickable.
    from sims.adapters.outbox import OutboxSender

    await OutboxSender.for_sms(stack.rt.settings.data_dir).send(OutgoingSms(
        key="demo.1", to="+447700900123", body=f"SIMS: open {link} to see your task"))
    await form.goto(f"{console.url}/console/outbox")
    await expect(form.locator(f'a[href="{link}"]')).to_be_visible()
    await console.shot(form, "outbox")

    records = await queries.audit_records(stack.rt)
    assert any(r["action"] == "signin.succeeded" and r["actor"] == "duty.one" for r in records)
    assert any(r["action"] == "command.raise" and r["actor"] == "duty.one" for r in records)
    await phone.close()
    await context.close()
    feed = stack.rt.extras["console"].feed  # type: ignore[attr-defined]
    await stack.wait_for(lambda: feed._listeners == 0 and feed._task is None)  # the closed tab's stream ended


async def test_wrong_password_missing_csrf_token_and_a_viewer_raising_are_refused(console: Console) -> None:
    stack = console.stack
    await console.add_user("duty.two", "duty_officer")
    await console.add_user("view.one", "viewer")
    context = await console.browser.new_context(**DESKTOP)
    page = await context.new_page()

    # Wrong password and unknown user: the same clear message, nobody signed in.
    for username in ("duty.two", "nobody.here"):
        await console.sign_in(page, username, "not the password")
        await expect(page.locator(".error-summary")).to_contain_text("Enter a correct username and password")
        assert page.url.endswith("/console/sign-in")
    await console.shot(page, "wrong-password")
    assert not [c for c in await context.cookies() if c["name"] == "sims_session"]
    failed = [r for r in await queries.audit_records(stack.rt) if r["action"] == "signin.failed"]
    assert {r["actor"] for r in failed} == {"duty.two", "nobody.here"}

    # A form without its CSRF token (or with another's) is refused, and nothing is raised.
    await console.sign_in(page, "duty.two")
    await page.goto(f"{console.url}/console/raise")
    await page.locator('form[action="/console/raise"] input[name=csrf_token]').evaluate("input => input.remove()")
    await page.get_by_role("button", name="Continue").click()
    await expect(page.get_by_role("heading", name="The form has expired")).to_be_visible()
    await console.shot(page, "csrf-refused")
    statuses = await page.evaluate("""async () => {
        const post = (token) => fetch('/console/raise', {method: 'POST', body: new URLSearchParams({
            csrf_token: token, step: 'confirm', type: 'stabbing', level: '1', ward: 'Peckham',
            occurred_at: '2026-01-01T10:00', location: 'Rye Lane', outline: 'Outline'})}).then(r => r.status);
        return [await post(''), await post('forged-token')];
    }""")
    assert statuses == [403, 403]
    assert not await queries.list_incidents(stack.rt)

    # A viewer sees the board but cannot raise: no link to it, 403 for the page and for a proper POST.
    viewer = await (await console.browser.new_context(**DESKTOP)).new_page()
    await console.sign_in(viewer, "view.one")
    await expect(viewer.get_by_role("heading", name="Open incidents")).to_be_visible()
    assert await viewer.get_by_role("link", name="Raise an incident").count() == 0
    response = await viewer.goto(f"{console.url}/console/raise")
    assert response is not None and response.status == 403
    await expect(viewer.get_by_role("heading", name="You cannot do that")).to_be_visible()
    await console.shot(viewer, "viewer-refused")
    token = await viewer.locator("input[name=csrf_token]").first.get_attribute("value")
    status = await viewer.evaluate("""async (token) => (await fetch('/console/raise', {method: 'POST',
        body: new URLSearchParams({csrf_token: token, step: 'preview'})})).status""", token)
    assert status == 403
    assert not await queries.list_incidents(stack.rt)
    refused = [r for r in await queries.audit_records(stack.rt) if r["action"] == "console.refused"]
    assert {r["outcome"] for r in refused} == {"csrf", "forbidden"}

    # Signed out or not signed in: the board and its event stream need a session.
    await viewer.get_by_role("button", name="Sign out").click()
    await expect(viewer.locator(".notice")).to_contain_text("You have signed out")
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{console.url}/console/events")).status_code == 401
        assert (await client.get(f"{console.url}/console")).headers["location"].startswith("/console/sign-in")


async def test_repeated_wrong_passwords_lock_that_username_from_that_address(console: Console) -> None:
    await console.add_user("duty.three", "duty_officer")
    async with httpx.AsyncClient(base_url=console.url) as client:
        async def attempt(password: str) -> httpx.Response:
            form = (await client.get("/console/sign-in")).text
            token = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)  # type: ignore[union-attr]
            return await client.post("/console/sign-in", data={"csrf_token": token, "username": "duty.three",
                                                                 "password": password})
        assert (await attempt("wrong")).status_code == 401
        for _ in range(4):
            await attempt("wrong")
        locked = await attempt(PASSWORD)
        assert locked.status_code == 429 and "Too many failed attempts" in locked.text
        no_token = await client.post("/console/sign-in",
                                     data={"username": "duty.three", "password": PASSWORD})
        assert no_token.status_code == 403
    records = await queries.audit_records(console.stack.rt)
    outcomes = [r["outcome"] for r in records if r["action"].startswith("signin")]
    assert outcomes.count("bad_credentials") == 5 and "rate_limited" in outcomes


async def test_only_an_admin_adds_users_and_the_new_user_can_sign_in(console: Console) -> None:
    await console.add_user("admin.one", "admin")
    await console.add_user("duty.four", "duty_officer")
    officer = await (await console.browser.new_context(**DESKTOP)).new_page()
    await console.sign_in(officer, "duty.four")
    assert (await officer.goto(f"{console.url}/console/users")).status == 403  # type: ignore[union-attr]
    admin = await (await console.browser.new_context(**DESKTOP)).new_page()
    await console.sign_in(admin, "admin.one")
    await admin.get_by_role("link", name="Users").click()
    await admin.get_by_label("Username").fill("view.two")
    await admin.get_by_label("Role").select_option("viewer")
    await admin.get_by_label("Password").fill("short")
    await admin.get_by_role("button", name="Add user").click()
    await expect(admin.locator(".error-summary")).to_contain_text("at least 12 characters")
    await admin.get_by_label("Password").fill(PASSWORD)
    await admin.get_by_role("button", name="Add user").click()
    await expect(admin.locator(".notice")).to_contain_text("User view.two added")
    await console.shot(admin, "users")
    newcomer = await (await console.browser.new_context(**DESKTOP)).new_page()
    await console.sign_in(newcomer, "view.two")
    await expect(newcomer.locator(".who")).to_contain_text("view.two (viewer)")
    added = [r for r in await queries.audit_records(console.stack.rt) if r["action"] == "user.added"]
    assert [(r["actor"], r["detail"]["username"]) for r in added][-1] == ("admin.one", "view.two")
