"""The console's drill pages in real headless Chromium: the list, a drill's readiness report with its three
charts drawn (in colour, under the console's CSP) and the trend against the earlier drill, and the download."""

from __future__ import annotations

import io
from pathlib import Path

from sims.messages import Transition
from tests.e2e.test_console import CHROMIUM, DESKTOP, Console, console  # noqa: F401
from tests.support.fixtures import smtp_server, twilio_server  # noqa: F401
from tests.support.stack import Stack

if Path(CHROMIUM).exists():
    from playwright.async_api import expect
from tests.e2e.test_console import pytestmark  # noqa: F401 - skipped without Chromium


async def drill(stack: Stack, key: str) -> str:
    raised = await stack.raise_incident(exercise=True, command_id=key)

    async def told() -> bool:
        records = await stack.deliveries(raised["incident_id"])
        return any(r["kind"] == "task" for r in records) and all(r["status"] not in ("pending", "retrying")
                                                                 for r in records)
    await stack.wait_for(told, timeout=30)
    return str(raised["reference"])


async def test_the_drill_page_shows_the_readiness_report_and_its_charts(console: Console) -> None:  # noqa: F811
    stack = console.stack
    first = await drill(stack, "drill-first-0001")
    assert (await stack.run(Transition(actor="duty", incident=first, trigger="stand_down",
                                       reason="End of the exercise")))["ok"]
    second = await drill(stack, "drill-second-0002")
    await console.add_user("view.drills", "viewer")
    context = await console.browser.new_context(**DESKTOP)
    page = await context.new_page()
    blocked: list[str] = []
    page.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)
    await console.sign_in(page, "view.drills")

    await page.get_by_role("link", name="Drills").click()
    await expect(page.get_by_role("heading", name="Drills")).to_be_visible()
    rows = page.locator('[data-table="drills"] tbody tr')
    await expect(rows).to_have_count(2)
    await expect(rows.first).to_contain_text(second)  # newest first
    await page.get_by_role("link", name=second).click()

    await expect(page.get_by_role("heading", name=f"Readiness report: {second}")).to_be_visible()
    await expect(page.locator(".banner.exercise")).to_contain_text("EXERCISE")
    images = page.locator("img.chart-image")
    await expect(images).to_have_count(3)
    for image in await images.all():
        await expect(image).to_have_js_property("complete", True)
        assert await image.evaluate("i => i.naturalWidth > 100 && i.naturalHeight > 50")
    trend = page.locator('[data-table="trend"] tbody tr')
    await expect(trend).to_have_count(2)
    await expect(trend.first).to_contain_text(first)
    await expect(page.locator("[data-change]")).to_contain_text("Median time to delivery")
    await expect(page.locator('[data-table="tasks"]')).to_contain_text("Confirm the facts")
    await expect(page.locator('[data-figure="messages"]')).not_to_have_text("0")

    # The SVG's own styles apply (its CSP allows them): the trend is drawn in colour, not all black.
    from PIL import Image

    shot = Image.open(io.BytesIO(await page.locator('[data-chart="trend"] img').screenshot())).convert("RGB")
    colours = {shot.getpixel((x, y)) for x in range(shot.width) for y in range(shot.height)}
    assert any(abs(r - 0xd4) < 16 and abs(g - 0x35) < 16 and abs(b - 0x1c) < 16 for r, g, b in colours)  # never
    assert any(abs(r - 0x1d) < 16 and abs(g - 0x70) < 16 and abs(b - 0xb8) < 16 for r, g, b in colours)  # delivery
    svg = await page.request.get(f"{console.url}/console/drills/{second}/charts/trend.svg")
    assert svg.status == 200 and svg.headers["content-type"].startswith("image/svg+xml")
    assert first in await svg.text()
    assert blocked == []
    await console.shot(page, "drill-report")

    async with page.expect_download() as download_info:
        await page.get_by_role("link", name="Download the report (HTML)").click()
    download = await download_info.value
    html = Path(await download.path()).read_text()  # type: ignore[arg-type]
    assert html.count("<svg") == 3 and f"Readiness report: {second}" in html
    assert download.suggested_filename == f"drill-{second}.html"

    missing = await page.request.get(f"{console.url}/console/drills/SWK-2099-9999")
    assert missing.status == 404

    # From the drill's incident page, its banner leads to the report.
    await page.goto(f"{console.url}/console/incidents/{first}")
    await page.get_by_role("link", name="Readiness report of this drill").click()
    await expect(page.get_by_role("heading", name=f"Readiness report: {first}")).to_be_visible()
    await expect(page.locator('[data-table="trend"] tbody tr')).to_have_count(1)  # nothing before the first
