"""The review pack end to end: a real incident, its messages, acks, reassurance and fund claim, then the pack
from the real CLI (a subprocess) and from the console's download, compared with `sims audit verify`."""

from __future__ import annotations

import asyncio
import io
import os
import re
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from pypdf import PdfReader

from handlers.auth import UserStore
from sims.adapters.nats_server import NatsServer
from sims.fund import ApproveClaim, EditClaim, SubmitClaim
from sims.messages import ActOnTask
from tests.support.console import PASSWORD, signed_in
from tests.support.fixtures import smtp_server, twilio_server  # noqa: F401
from tests.support.stack import SECRET_WORDS, Stack, full_stack  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"http://127\.0\.0\.1:\d+/l/[a-z0-9]{17}\.[A-Za-z0-9_-]{16}")
EVIDENCE = "Patrols 22:00-02:00 on Rye Lane, 14 stops, leaflets to 40 homes"


async def cli(nats: NatsServer, tmp_path: Path, *args: str) -> tuple[int, str]:
    env = {**os.environ, "SIMS_NATS_URL": nats.url,
           "SIMS_DATA_DIR": str(tmp_path / "cli"), "SIMS_LINK_SECRETS": "k:test-secret-for-links", "USER": "tester"}
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "handlers.cli", *args, cwd=ROOT, env=env,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await process.communicate()
    return process.returncode or 0, out.decode()


def attr(html: str, name: str) -> str:
    found = re.search(rf"{name}[^>]*>([^<]*)<", html)
    assert found, name
    return found.group(1).strip()


async def played_out(stack: Stack) -> dict[str, Any]:
    """Raise, notify, acknowledge through links, record a reassurance step and a fund claim the VRU approves."""
    raised = await stack.raise_incident()
    ref, incident_id = raised["reference"], raised["incident_id"]

    async def task_messages_sent() -> bool:
        return any(r["kind"] == "task" and r["status"] not in ("pending", "retrying")
                   for r in await stack.deliveries(incident_id))
    await stack.wait_for(task_messages_sent)
    police = stack.rt.directory.get("police-lead-whitford")
    assert police and police.mobile
    await stack.wait_for(lambda: [m for m in stack.twilio.messages if m.to == police.mobile and "Task for you" in m.body])
    task_link = next(LINK.search(m.body).group(0) for m in stack.twilio.messages  # type: ignore[union-attr]
                     if m.to == police.mobile and "Task for you" in m.body)
    holding = next(m for m in stack.twilio.messages if "Task for you" not in m.body and LINK.search(m.body))
    async with httpx.AsyncClient() as client:  # people acknowledge on their phones
        assert (await client.post(LINK.search(holding.body).group(0), data={"action": "acknowledge"})).status_code == 303  # type: ignore[union-attr]
        assert (await client.post(task_link, data={"action": "acknowledge"})).status_code == 303
        assert (await client.post(task_link, data={"action": "done", "note": "Facts agreed with the SIO"})).status_code == 303
    assert (await stack.run(ActOnTask(actor="duty-officer", incident=ref, task="reassurance_patrols", action="done",
                                      note=EVIDENCE, via="console")))["ok"]
    assert (await stack.run(EditClaim(actor="duty-officer", incident_id=incident_id, purpose="Reassure young people",
                                      planned_activity="Six evening youth sessions", beneficiaries="About 60 young people",
                                      start_date="2026-12-05", end_date="2027-01-30",
                                      lines=[{"description": "Youth sessions", "amount": "3000.00"}])))["ok"]
    assert (await stack.run(SubmitClaim(actor="duty-officer", incident_id=incident_id)))["ok"]
    vru = stack.rt.directory.by_role("vru_lead")[0]
    assert (await stack.run(ApproveClaim(actor=vru.id, actor_role="-", incident_id=incident_id, amount="2500.00")))["ok"]

    async def quiet() -> bool:  # every message handed over and its reports in: the trail stops growing
        records = await stack.deliveries(incident_id)
        return bool(records) and all(r["status"] in ("accepted", "delivered", "failed", "undelivered") for r in records)
    await stack.wait_for(quiet, timeout=30)
    await stack.twilio.drain_callbacks()
    await asyncio.sleep(1.0)
    return {"ref": ref, "id": incident_id, "holding_to": holding.to, "vru": vru.id}


@pytest.mark.timeout(300)  # five CLI processes on a busy machine
async def test_the_cli_and_the_console_make_the_same_pack_with_the_verified_last_hash(
        full_stack: Stack, nats_server: NatsServer, tmp_path: Path) -> None:
    stack, nats = full_stack, nats_server
    case = await played_out(stack)
    ref = case["ref"]
    html_path, pdf_path = tmp_path / "pack.html", tmp_path / "pack.pdf"
    restricted_path = tmp_path / "restricted.html"
    trail = tmp_path / "trail.jsonl"
    made, nameless, named, exported = await asyncio.gather(  # separate processes side by side (start-up is slow)
        cli(nats, tmp_path, "pack", ref, "--audience", "gold", "--out", str(html_path), "--pdf", str(pdf_path)),
        cli(nats, tmp_path, "pack", ref, "--audience", "owhr", "--out", str(tmp_path / "r.html"), "--restricted"),
        cli(nats, tmp_path, "pack", ref, "--audience", "owhr", "--out", str(restricted_path), "--restricted",
            "--by", "Dana Cole"),
        cli(nats, tmp_path, "audit", "export", ref, "-o", str(trail)))
    assert made[0] == 0, made[1]
    html = html_path.read_text()

    # The trail verified independently, from an export, ends at the hash the pack shows.
    assert exported[0] == 0, exported[1]
    code, verified = await cli(nats, tmp_path, "audit", "verify", str(trail))
    assert code == 0 and verified.startswith("OK:"), verified
    last_hash = re.search(r"last hash ([0-9a-f]{64})", verified).group(1)  # type: ignore[union-attr]
    assert attr(html, "data-audit-last-hash") == last_hash
    assert 'data-audit-ok="yes"' in html

    # What the pack holds.
    assert "Gold group review pack" in html and ref in html
    assert "Raised (stabbing, level 1) in Peckham" in html  # the timeline
    police = stack.rt.directory.get("police-lead-whitford")
    assert police and police.name in html and "Task: Confirm the facts that can be shared" in html  # who was told what
    assert "twilio" in html and "smtp" in html and "delivered" in html
    assert "the holding" in html and "task: Confirm the facts that can be shared" in html  # acknowledgements
    assert EVIDENCE in html  # reassurance evidence
    assert "£3,000.00" in html and "£2,500.00" in html and "approve" in html  # the fund claim and its decisions
    for word in SECRET_WORDS:
        assert word not in html
    assert "Withheld: restricted details" in html and 'data-restricted="no"' in html
    assert attr(html, "data-generated-by") == "cli:tester"

    # The PDF is a real PDF with pages, holding the same hashes.
    pdf = pdf_path.read_bytes()
    assert pdf.startswith(b"%PDF-")
    reader = PdfReader(io.BytesIO(pdf))
    text = "".join(page.extract_text() for page in reader.pages).replace("\n", "")
    assert len(reader.pages) >= 2 and last_hash in text and attr(html, "data-content-sha256") in text
    assert not any(word in text for word in SECRET_WORDS)

    # Restricted details need a name, and are then in the pack and in the audit trail's note of it.
    assert nameless[0] == 2 and "--by" in nameless[1] and not (tmp_path / "r.html").exists()
    assert named[0] == 0, named[1]
    restricted = restricted_path.read_text()
    assert all(word in restricted for word in SECRET_WORDS) and 'data-restricted="yes"' in restricted
    assert "Offensive Weapons Homicide Review pack" in restricted

    # The console's button: same content hash as the CLI's pack for the same audience; restricted by role.
    users = UserStore(stack.rt.js)
    await users.add("duty.one", "duty_officer", PASSWORD, by="test")
    await users.add("view.one", "viewer", PASSWORD, by="test")
    url = f"{stack.http_url}/console/incidents/{ref}/pack"
    async with signed_in(stack, "duty.one") as duty:
        answer = await duty.get(url, params={"audience": "gold"})
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
        assert f'filename="review-pack-{ref}-gold.html"' in answer.headers["content-disposition"]
        assert attr(answer.text, "data-content-sha256") == attr(html, "data-content-sha256")
        assert attr(answer.text, "data-audit-last-hash") == last_hash
        assert attr(answer.text, "data-generated-by") == "duty.one"
        with_restricted = await duty.get(url, params={"audience": "csp", "restricted": "yes"})
        assert all(word in with_restricted.text for word in SECRET_WORDS)
        as_pdf = await duty.get(url, params={"audience": "csp", "format": "pdf"})
        assert as_pdf.headers["content-type"] == "application/pdf" and as_pdf.content.startswith(b"%PDF-")
        assert len(PdfReader(io.BytesIO(as_pdf.content)).pages) >= 2
        page = await duty.get(f"{stack.http_url}/console/incidents/{ref}")
        assert "Download the review pack" in page.text and 'name="restricted"' in page.text
    async with signed_in(stack, "view.one") as viewer:
        refused = await viewer.get(url, params={"audience": "gold", "restricted": "yes"})
        assert refused.status_code == 403 and not any(word in refused.text for word in SECRET_WORDS)
        allowed = await viewer.get(url, params={"audience": "gold"})
        assert allowed.status_code == 200 and not any(word in allowed.text for word in SECRET_WORDS)
        page = await viewer.get(f"{stack.http_url}/console/incidents/{ref}")
        assert "Download the review pack" in page.text and 'name="restricted"' not in page.text
    async with httpx.AsyncClient() as anonymous:
        assert (await anonymous.get(url, follow_redirects=False)).status_code == 303  # to sign in

    # Every pack made is in the audit trail: who, audience, restricted or not, and the content hash.
    produced = [r async for r in stack.rt.audit.records("system") if r["action"] == "pack.produced"]
    assert sorted((r["actor"], r["detail"]["audience"], r["detail"]["restricted"], r["detail"]["via"]) for r in produced) == [
        ("cli:Dana Cole", "owhr", True, "cli"), ("cli:tester", "gold", False, "cli"),
        ("duty.one", "csp", False, "console"), ("duty.one", "csp", True, "console"),
        ("duty.one", "gold", False, "console"), ("view.one", "gold", False, "console")]
    gold_by_cli = next(r for r in produced if r["actor"] == "cli:tester")
    assert gold_by_cli["detail"]["content_sha256"] == attr(html, "data-content-sha256")
    assert all(r["incident_id"] == case["id"] for r in produced)
    refusals = [r async for r in stack.rt.audit.records("system") if r["action"] == "console.refused"]
    assert any(r["actor"] == "view.one" and "restricted" in r["detail"].get("what", "") for r in refusals)
