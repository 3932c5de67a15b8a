"""Pan-London: Southwark and Lambeth as two NATS accounts on one real nats-server, a VRU account, each
borough with its own worker, web, protocol, contacts, Twilio-like server and SMTP server.

Nothing of one borough reaches the other (streams, buckets, audit, messages, HTTP), except a
boundary notice of shareable fields, from which the neighbour raises its own linked incident; the
VRU's overview lists every borough's incidents."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
import uvicorn
from nats.aio.client import Client as NATS

from handlers.auth import UserStore
from handlers.http import create_app
from handlers.pan_london import overview, setup_borough, setup_vru
from handlers.worker import build_broker
from sims import queries
from sims.adapters import jetstream as jsa
from sims.adapters.nats_accounts import VRU, accounts_config, ensure_account_seeds
from sims.adapters.nats_auth import NatsAccess, ensure_seeds, public_key, seeds_folder
from sims.adapters.nats_server import NatsServer, free_port
from sims.bootstrap import connect_runtime
from sims.config import ROOT, Settings
from sims.messages import RaiseIncident, Transition
from tests.support.api import api_client
from tests.support.smtp_server import SmtpServer
from tests.support.stack import Stack
from tests.support.twilio_server import TwilioServer

SECRET = "Victim: Jordan Smith, 17, of 12 Acacia Road"
SECRET_WORDS = ("Jordan", "Smith", "Acacia")
PASSWORD = "a long passphrase for tests"
BOROUGHS = {"SWK": ("southwark.yaml", ROOT / "contacts"),
            "LAM": ("lambeth.yaml", ROOT / "boroughs" / "lambeth" / "contacts")}


def without_steps(source: Path, target: Path) -> Path:
    """A protocol with its notices but no tasks (fewer messages to wait for)."""
    text = source.read_text()
    target.write_text(text[:text.index("\nsteps:")] + "\nsteps: []\n")
    return target


@dataclass
class Borough:
    code: str
    stack: Stack
    worker: Any
    twilio: TwilioServer
    smtp: SmtpServer
    seeds: Path

    @property
    def rt(self) -> Any:
        return self.stack.rt

    async def raise_incident(self, ward: str, **extra: Any) -> dict[str, Any]:
        command = RaiseIncident(actor="duty-officer", type="stabbing", level="1", occurred_at="2026-11-30T21:40:00Z",
                                ward=ward, location="Near the station", outline="A young man was stabbed",
                                restricted=SECRET, **extra)
        result = await self.stack.run(command)
        assert result["ok"], result
        return result

    async def incidents(self) -> list[Any]:
        return await queries.list_incidents(self.rt)

    def mobiles(self) -> set[str]:
        return {c.mobile for c in self.rt.directory.all() if c.mobile}

    def emails(self) -> set[str]:
        return {c.email.lower() for c in self.rt.directory.all() if c.email}


@dataclass
class London:
    server: NatsServer
    boroughs: dict[str, Borough]
    vru_seeds: dict[str, Path]

    async def connect(self, seed: Path, errors: list[str] | None = None) -> NATS:
        async def on_error(exc: Exception) -> None:
            if errors is not None:
                errors.append(str(exc))
        return await nats.connect(self.server.url, nkeys_seed=str(seed), error_cb=on_error, allow_reconnect=False)


async def start_borough(code: str, url: str, tmp: Path, twilio: TwilioServer, smtp: SmtpServer) -> tuple[Borough, Any]:
    protocol_file, contacts = BOROUGHS[code]
    port = free_port()
    settings = Settings(
        data_dir=tmp / code / "data", public_base_url=f"http://127.0.0.1:{port}", http_port=port,
        twilio_account_sid=twilio.account_sid, twilio_auth_token=twilio.auth_token, twilio_from="+447700900999",
        twilio_api_base=twilio.base_url, smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_tls="none",
        smtp_from=f"sims@{code.lower()}.example.org", link_secrets=f"k:{code}-link-secret",
        protocol=without_steps(ROOT / "protocols" / protocol_file, tmp / f"{code}.yaml"), contacts_dir=contacts,
        pan_london=True)
    await setup_borough(settings, url)
    worker = await connect_runtime(settings, url, f"{code}-worker", role="worker", setup=False)
    web = await connect_runtime(settings, url, f"{code}-web", role="web", setup=False)
    worker.notifications.retry_base = 0.05
    broker = build_broker(worker, url)
    await broker.start()
    http = uvicorn.Server(uvicorn.Config(create_app(web), host="127.0.0.1", port=port, log_level="warning",
                                         lifespan="off", timeout_graceful_shutdown=3))
    task = asyncio.create_task(http.serve())
    while not http.started:
        await asyncio.sleep(0.02)

    async def stop() -> None:
        http.should_exit = True
        await task
        await broker.stop()
        await worker.close()
        await web.close()

    stack = Stack(web, twilio, smtp, f"http://127.0.0.1:{port}")
    return Borough(code, stack, worker, twilio, smtp, seeds_folder(settings.data_dir)), stop


@pytest.fixture
async def london(tmp_path: Path) -> AsyncIterator[London]:
    seeds = {code: ensure_seeds(seeds_folder(tmp_path / code / "data")) for code in BOROUGHS}
    vru_seeds = ensure_account_seeds(tmp_path / "accounts", [])[VRU]
    keys = {code: {role: public_key(p.read_bytes()) for role, p in roles.items()} for code, roles in seeds.items()}
    config = accounts_config(keys, {role: public_key(p.read_bytes()) for role, p in vru_seeds.items()},
                             links=[("SWK", "LAM"), ("LAM", "SWK")])
    server = NatsServer(store_dir=tmp_path / "nats", extra_config=config).start()
    stops = []
    try:
        await setup_vru(server.url, NatsAccess(creds=vru_seeds["admin"]))
        async with TwilioServer(seed=1) as swk_twilio, TwilioServer(seed=2) as lam_twilio, \
                SmtpServer() as swk_smtp, SmtpServer() as lam_smtp:
            boroughs = {}
            for code, twilio, smtp in (("SWK", swk_twilio, swk_smtp), ("LAM", lam_twilio, lam_smtp)):
                boroughs[code], stop = await start_borough(code, server.url, tmp_path, twilio, smtp)
                stops.append(stop)
            yield London(server, boroughs, vru_seeds)
            for stop in reversed(stops):
                await stop()
            stops.clear()
    finally:
        for stop in reversed(stops):
            await stop()
        server.stop()


async def settled(borough: Borough, incident_id: str) -> list[dict[str, Any]]:
    async def done() -> bool:
        found = await borough.stack.deliveries(incident_id)
        return bool(found) and all(d["status"] not in ("pending", "retrying") for d in found)
    await borough.stack.wait_for(done, timeout=30)
    await asyncio.sleep(0.3)  # a straggler would show up now
    return await borough.stack.deliveries(incident_id)


async def linked_in(borough: Borough, reference: str) -> Any:
    found: list[Any] = []

    async def arrived() -> bool:
        found[:] = [i for i in await borough.incidents() if i.linked_from == reference]
        return bool(found)
    await borough.stack.wait_for(arrived, timeout=20)
    assert len(found) == 1, found
    return found[0]


async def sign_in(browser: httpx.AsyncClient, username: str) -> int:
    """Sign in to a borough's console as a person would (the form's CSRF token and cookie); the status."""
    form = (await browser.get("/console/sign-in")).text
    token = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert token, form
    answer = await browser.post("/console/sign-in", data={"username": username, "password": PASSWORD,
                                                          "csrf_token": token.group(1), "next": "/console"})
    return answer.status_code


def everything_sent(borough: Borough) -> str:
    sms = [f"{m.to} {m.body}" for m in borough.twilio.messages]
    mail = [f"{' '.join(m.rcpt_tos)} {m.raw.decode('utf-8', 'replace')}" for m in borough.smtp.handler.messages]
    return "\n".join(sms + mail)


async def test_each_borough_keeps_to_itself(london: London) -> None:
    """Incidents raised away from the boundary stay in their borough's account: streams, buckets, audit,
    messages and HTTP of one never hold the other's; the other account's subjects are unreachable."""
    swk, lam = london.boroughs["SWK"], london.boroughs["LAM"]
    swk_raised = await swk.raise_incident("Peckham")
    lam_raised = await lam.raise_incident("Brixton North")
    assert swk_raised["reference"].startswith("SWK-") and lam_raised["reference"].startswith("LAM-")
    swk_sent = await settled(swk, swk_raised["incident_id"])
    lam_sent = await settled(lam, lam_raised["incident_id"])
    assert swk_sent and lam_sent

    # Each borough's Twilio-like server and SMTP server received only its own people's messages.
    assert swk.twilio.messages and lam.twilio.messages
    assert {m.to for m in swk.twilio.messages} <= swk.mobiles()
    assert {m.to for m in lam.twilio.messages} <= lam.mobiles()
    assert not {m.to for m in swk.twilio.messages} & lam.mobiles()
    assert not {m.to for m in lam.twilio.messages} & swk.mobiles()
    assert {r.lower() for m in swk.smtp.handler.messages for r in m.rcpt_tos} <= swk.emails()
    assert {r.lower() for m in lam.smtp.handler.messages for r in m.rcpt_tos} <= lam.emails()
    assert lam_raised["reference"] not in everything_sent(swk)
    assert swk_raised["reference"] not in everything_sent(lam)

    # Stores: each account's incidents bucket and audit trail hold only its own incident.
    assert [i.reference for i in await swk.incidents()] == [swk_raised["reference"]]
    assert [i.reference for i in await lam.incidents()] == [lam_raised["reference"]]
    swk_audit = json.dumps(await queries.audit_records(swk.rt))
    lam_audit = json.dumps(await queries.audit_records(lam.rt))
    assert lam_raised["incident_id"] not in swk_audit and lam_raised["reference"] not in swk_audit
    assert swk_raised["incident_id"] not in lam_audit and swk_raised["reference"] not in lam_audit

    # The SWK admin (allowed everything in its own account) sees none of LAM: the same stream names are
    # SWK's own, LAM's events are not there, and a subscription to every subject hears nothing of LAM.
    admin = await london.connect(swk.seeds / "admin.nk")
    heard: list[str] = []

    async def hear(msg: Any) -> None:
        heard.append(msg.subject + " " + msg.data.decode("utf-8", "replace"))
    everything = await admin.subscribe(">", cb=hear)
    js = admin.jetstream(timeout=5)
    with pytest.raises(nats.js.errors.NotFoundError):
        await js.get_last_msg(jsa.EVENTS, jsa.evt_subject(lam_raised["incident_id"]))
    assert (await js.get_last_msg(jsa.EVENTS, jsa.evt_subject(swk_raised["incident_id"]))).data
    kv = await js.key_value("sims_incidents")
    assert set(await kv.keys()) == {swk_raised["incident_id"]}
    with pytest.raises(nats.js.errors.NotFoundError):
        await js.stream_info("VRU_FEED")  # the VRU's stream is not in a borough's account either
    second = await lam.raise_incident("Stockwell East")
    await settled(lam, second["incident_id"])
    await asyncio.sleep(0.3)
    await everything.unsubscribe()
    assert not [h for h in heard if second["incident_id"] in h or "LAM-" in h or "Stockwell" in h]

    # A SWK worker's credentials are refused LAM-looking subjects and other accounts' streams alike: it may
    # not subscribe to events at all, and its account has no LAM bucket to read.
    errors: list[str] = []
    worker = await london.connect(swk.seeds / "worker.nk", errors)
    await worker.subscribe("sims.evt.>")
    await worker.subscribe("vru.in.>")
    await worker.flush()
    await asyncio.sleep(0.3)
    assert sum("permissions violation" in e.lower() for e in errors) >= 2, errors
    with pytest.raises(nats.js.errors.NotFoundError):
        await worker.jetstream(timeout=5).get_last_msg(jsa.EVENTS, jsa.evt_subject(lam_raised["incident_id"]))
    await worker.close()
    await admin.close()

    # HTTP: SWK's web lists and exports only SWK's incident; LAM's reference is unknown there.
    async with await api_client(swk.rt, swk.stack.http_url) as client:
        listing = (await client.get("/api/incidents")).text
        assert swk_raised["reference"] in listing and "LAM-" not in listing
        assert (await client.get(f"/api/incidents/{lam_raised['reference']}")).status_code == 404
        assert (await client.get(f"/api/incidents/{lam_raised['incident_id']}/audit")).status_code == 404
        export = (await client.get(f"/api/incidents/{swk_raised['reference']}/audit?format=csv")).text
        assert swk_raised["incident_id"] in export and lam_raised["incident_id"] not in export
    async with await api_client(lam.rt, lam.stack.http_url) as client:
        listing = (await client.get("/api/incidents")).text
        assert lam_raised["reference"] in listing and "SWK-" not in listing
        assert (await client.get(f"/api/incidents/{swk_raised['reference']}")).status_code == 404

    # The console: SWK's duty officer sees SWK's board and incident only, and cannot sign in to LAM's.
    await UserStore(swk.rt.js).add("swk-officer", "duty_officer", PASSWORD, by="tests")
    async with httpx.AsyncClient(base_url=swk.stack.http_url) as browser:
        assert await sign_in(browser, "swk-officer") == 303
        board = (await browser.get("/console")).text
        assert swk_raised["reference"] in board and "LAM-" not in board and "Brixton" not in board
        assert (await browser.get(f"/console/incidents/{lam_raised['reference']}")).status_code == 404
        page = (await browser.get(f"/console/incidents/{swk_raised['reference']}/audit.csv")).text
        assert swk_raised["incident_id"] in page and lam_raised["incident_id"] not in page
    async with httpx.AsyncClient(base_url=lam.stack.http_url) as browser:
        assert await sign_in(browser, "swk-officer") == 401

    # The VRU sees both boroughs' incidents (shareable fields only), and nothing restricted.
    viewer = await london.connect(london.vru_seeds["viewer"])
    seen: dict[str, Any] = {}

    async def all_three() -> bool:
        seen.update({s.reference: s for s in await overview(viewer.jetstream(timeout=5))})
        return {swk_raised["reference"], lam_raised["reference"], second["reference"]} <= set(seen)
    await swk.stack.wait_for(all_three)
    assert {s.borough for s in seen.values()} == {"SWK", "LAM"}
    assert seen[swk_raised["reference"]].ward == "Peckham"
    assert not any(word in s.model_dump_json() for s in seen.values() for word in SECRET_WORDS)
    await viewer.close()


async def test_boundary_incident_notifies_the_neighbour(london: London) -> None:
    """An incident in a ward on the boundary (or naming the neighbour) makes the neighbour raise a linked
    incident under its own protocol: its own reference and ward, its own people told, nothing restricted."""
    swk, lam = london.boroughs["SWK"], london.boroughs["LAM"]
    raised = await swk.raise_incident("Camberwell Green")
    linked = await linked_in(lam, raised["reference"])
    assert linked.reference.startswith("LAM-") and linked.ward == "Myatt's Fields"
    assert raised["reference"] in linked.outline
    assert linked.raised_by == "boundary:SWK" and linked.restricted.reveal() == ""

    lam_sent = await settled(lam, linked.id)
    await settled(swk, raised["incident_id"])
    # LAM's people, under LAM's protocol: the ward councillors of Myatt's Fields among them; no SWK person.
    told = {d["contact_id"] for d in lam_sent}
    myatts = {c.id for c in lam.rt.directory.all() if "Myatt's Fields" in c.wards}
    assert myatts and myatts <= told
    assert {m.to for m in lam.twilio.messages} <= lam.mobiles()
    assert not {m.to for m in lam.twilio.messages} & swk.mobiles()
    assert any(linked.reference in m.body for m in lam.twilio.messages)
    # Nothing restricted crossed: not in LAM's messages, events, audit trail or boundary inbox.
    lam_everything = everything_sent(lam) + json.dumps(await queries.audit_records(lam.rt))
    admin = await london.connect(lam.seeds / "admin.nk")
    js = admin.jetstream(timeout=5)
    notice = await js.get_last_msg("SIMS_BOUNDARY", "sims.boundary.in.SWK")
    events = await js.get_last_msg(jsa.EVENTS, jsa.evt_subject(linked.id))
    lam_everything += (notice.data or b"").decode() + (events.data or b"").decode()
    assert not [w for w in SECRET_WORDS if w in lam_everything]
    assert json.loads(notice.data or b"{}")["reference"] == raised["reference"]
    await admin.close()
    # The sending borough's audit trail says what went where.
    records = await queries.audit_records(swk.rt, raised["reference"])
    notified = [r for r in records if r["action"] == "boundary.notified"]
    assert len(notified) == 1 and notified[0]["outcome"] == "sent" and notified[0]["detail"]["to"] == "LAM"

    # The sender stands down: the neighbour's people who were told hear that, and not the reason given.
    sent_before = len(lam.twilio.messages)
    stood = await swk.stack.run(Transition(actor="duty-officer", incident=raised["reference"], trigger="stand_down",
                                           reason="Police confirm Jordan Smith was not hurt"))
    assert stood["ok"], stood
    said = f"Southwark has stood down {raised['reference']}"

    async def lam_told() -> bool:
        return any(said in m.body for m in lam.twilio.messages[sent_before:])
    await lam.stack.wait_for(lam_told, timeout=20)
    await settled(lam, linked.id)
    told_of_update = {m.to for m in lam.twilio.messages[sent_before:] if said in m.body}
    assert told_of_update <= lam.mobiles() and len(told_of_update) >= 3
    assert not [w for w in SECRET_WORDS if w in everything_sent(lam)]
    linked_now, _ = await queries.incident_with_timeline(lam.rt, linked.reference)
    assert linked_now.updates_sent == 1 and linked_now.state.value != "stood_down"  # LAM decides its own state

    # Named on the raise (ward away from the boundary): told as well; the linked incident, itself on the
    # boundary, is not sent back again.
    named = await swk.raise_incident("Peckham", also_affects=("LAM",))
    second = await linked_in(lam, named["reference"])
    assert second.ward == "Waterloo & South Bank" and "named on the raise" in second.outline
    await settled(lam, second.id)
    await asyncio.sleep(1.0)
    assert sorted(i.reference for i in await swk.incidents()) == sorted([raised["reference"], named["reference"]])

    # The VRU sees all four, the linked ones pointing back.
    viewer = await london.connect(london.vru_seeds["viewer"])
    seen: dict[str, Any] = {}

    async def all_four() -> bool:
        seen.update({s.reference: s for s in await overview(viewer.jetstream(timeout=5))})
        return len(seen) == 4
    await swk.stack.wait_for(all_four)
    assert seen[linked.reference].linked_from == raised["reference"]
    assert seen[raised["reference"]].concerns == ("LAM",)
    # The VRU's viewer may read, never write into the feed.
    errors: list[str] = []
    await viewer.close()
    viewer = await london.connect(london.vru_seeds["viewer"], errors)
    await viewer.publish("vru.in.SWK.forged", b"{}")
    await viewer.flush()
    await asyncio.sleep(0.3)
    assert any("permissions violation" in e.lower() for e in errors), errors
    await viewer.close()


async def test_a_forged_notice_is_refused(london: London) -> None:
    """A borough cannot speak for another: a notice whose body claims another sender is dead-lettered."""
    swk, lam = london.boroughs["SWK"], london.boroughs["LAM"]
    admin = await london.connect(swk.seeds / "admin.nk")
    forged = {"from_code": "LAM", "from_borough": "Lambeth", "to_code": "LAM", "incident_id": "f" * 32,
              "reference": "LAM-2026-0999", "type": "stabbing", "level": "1", "occurred_at": "2026-11-30T21:40:00Z",
              "ward": "Vauxhall", "their_wards": ["Vauxhall"], "location": "x", "outline": "x", "why": "x"}
    ack = await admin.jetstream(timeout=5).publish("sims.boundary.out.LAM", json.dumps(forged).encode())
    assert ack.stream == "SIMS_BOUNDARY"  # accepted into LAM's inbox as coming from SWK ...
    await admin.close()
    lam_admin = await london.connect(lam.seeds / "admin.nk")
    js = lam_admin.jetstream(timeout=5)

    async def dead_lettered() -> bool:
        try:
            msg = await js.get_last_msg(jsa.DEAD, jsa.DLQ_INTAKE)
        except nats.js.errors.NotFoundError:
            return False
        return "claims to come from LAM to LAM" in (msg.data or b"").decode()
    await lam.stack.wait_for(dead_lettered)  # ... and refused there: SWK cannot speak as LAM
    assert await lam.incidents() == []

    # A change for an incident LAM was never told of (e.g. raised before pan-London) is ignored, not applied.
    admin = await london.connect(swk.seeds / "admin.nk")
    change = {**forged, "from_code": "SWK", "from_borough": "Southwark", "reference": "SWK-2026-0999",
              "kind": "changed", "state": "closed", "version": 7}
    await admin.jetstream(timeout=5).publish("sims.boundary.out.LAM", json.dumps(change).encode())
    await admin.close()
    await asyncio.sleep(1.5)
    info = await js.consumer_info("SIMS_BOUNDARY", "boundary-intake")
    assert info.num_pending == 0 and info.num_ack_pending == 0  # handled
    assert await lam.incidents() == []
    with pytest.raises(nats.js.errors.NotFoundError):
        await js.get_last_msg(jsa.DEAD, jsa.DLQ_COMMANDS)
    await lam_admin.close()


def test_the_cli_sets_up_a_deployment_that_the_vru_can_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`sims london accounts` writes seeds and an accounts block a real nats-server runs with; `sims london
    setup` makes each borough's streams and boundary inbox and the VRU's stream; a borough's worker seed
    can feed the VRU, and `sims london incidents` (the VRU's viewer) lists what it sent."""
    from datetime import datetime, timezone

    from typer.testing import CliRunner

    from handlers.cli import app
    from sims.boroughs import vru_summary
    from sims.model import Incident
    from sims.protocol_config import load_protocol

    runner = CliRunner()
    seeds = tmp_path / "seeds"
    protocols = [str(ROOT / "protocols" / "southwark.yaml"), str(ROOT / "protocols" / "lambeth.yaml")]
    result = runner.invoke(app, ["london", "accounts", *protocols, "--seeds", str(seeds)])
    assert result.exit_code == 0, result.output
    assert "boundary notices SWK -> LAM" in result.output and "boundary notices LAM -> SWK" in result.output
    assert sorted(p.name for p in (seeds / "SWK").iterdir()) == ["admin.nk", "web.nk", "worker.nk"]
    conf = (seeds / "accounts.conf").read_text()
    assert not [seed for seed in seeds.rglob("*.nk") if seed.read_text().strip() in conf]  # public keys only
    server = NatsServer(store_dir=tmp_path / "nats", extra_config=(seeds / "accounts.conf").read_text()).start()
    try:
        monkeypatch.setenv("SIMS_NATS_URL", server.url)
        result = runner.invoke(app, ["london", "setup", *protocols, "--seeds", str(seeds)])
        assert result.exit_code == 0, result.output
        assert "SWK: streams, buckets and boundary inbox ready" in result.output and "VRU: overview" in result.output

        at = datetime(2026, 11, 30, 21, 40, tzinfo=timezone.utc)
        incident = Incident(id="b" * 32, reference="SWK-2026-0042", type="stabbing", level="1", occurred_at=at,
                            raised_at=at, updated_at=at, ward="Peckham", location="x", outline="x",
                            restricted="Victim: Jordan Smith", raised_by="duty-officer")

        async def feed_and_look() -> tuple[set[str], set[str]]:
            worker = await nats.connect(server.url, nkeys_seed=str(seeds / "SWK" / "worker.nk"))
            ack = await worker.jetstream(timeout=5).publish(
                "sims.vru." + incident.id, vru_summary(incident, load_protocol(Path(protocols[0]))).model_dump_json().encode())
            assert ack.stream == "VRU_FEED"
            await worker.close()
            names = {}
            for code in ("SWK", "LAM"):
                admin = await nats.connect(server.url, nkeys_seed=str(seeds / code / "admin.nk"))
                names[code] = {info.config.name for info in await admin.jetstream(timeout=5).streams_info()}
                await admin.close()
            return names["SWK"], names["LAM"]

        swk_streams, lam_streams = asyncio.run(feed_and_look())
        assert {"SIMS_EVENTS", "SIMS_AUDIT", "SIMS_BOUNDARY"} <= swk_streams and swk_streams == lam_streams
        assert "VRU_FEED" not in swk_streams

        monkeypatch.setenv("SIMS_NATS_CREDS", str(seeds / "VRU" / "viewer.nk"))
        result = runner.invoke(app, ["london", "incidents"])
        assert result.exit_code == 0, result.output
        assert "Southwark" in result.output and "SWK-2026-0042" in result.output and "Jordan" not in result.output
        rows = [json.loads(line) for line in runner.invoke(app, ["london", "incidents", "--json"]).output.splitlines()]
        assert rows == [dict(rows[0], borough="Southwark", reference="SWK-2026-0042", ward="Peckham")]
    finally:
        server.stop()


async def test_a_pan_london_worker_needs_the_london_setup(tmp_path: Path) -> None:
    """Without `sims london setup` a borough's worker stops at once with what to do, not a bare 404."""
    from handlers.pan_london import check_ready
    from handlers.serve import prepare_nats

    seeds = ensure_seeds(seeds_folder(tmp_path / "SWK" / "data"))
    config = accounts_config({"SWK": {role: public_key(p.read_bytes()) for role, p in seeds.items()}}, {}, [])
    server = NatsServer(store_dir=tmp_path / "nats", extra_config=config).start()
    try:
        settings = Settings(data_dir=tmp_path / "SWK" / "data", pan_london=True, link_secrets="k:x")
        await prepare_nats(settings, server.url, embedded=True)  # SIMS's own streams, not the boundary inbox
        with pytest.raises(SystemExit, match="run `sims london setup`"):
            await check_ready(settings, server.url)
        await setup_borough(settings, server.url)
        await check_ready(settings, server.url)
    finally:
        server.stop()
