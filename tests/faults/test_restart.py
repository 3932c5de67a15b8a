"""Fault: every process stops (two `sims worker`, `sims web`, then the nats-server) and everything restarts.

Afterwards SIMS holds the same incidents, tasks, fund claim and audit trail; a task timer that fell due
while everything was down fires once (two workers compete for it), and `sims audit verify` (the real
CLI, as a subprocess) passes. Run with `bash scripts/test -m faults`.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from sims import queries
from sims.adapters.commands import submit
from sims.adapters.nats_server import NatsServer, free_port
from sims.bootstrap import Runtime, connect_runtime
from sims.config import Settings
from sims.fund import EditClaim, SubmitClaim
from sims.protocol_config import DEFAULT_PROTOCOL
from tests.support.api import bearer, make_token
from tests.support.cluster import SimsProcesses, audit_verify_cli, sims_env
from tests.support.fixtures import smtp_server, twilio_server  # noqa: F401
from tests.support.smtp_server import SmtpServer
from tests.support.stack import RAISE
from tests.support.twilio_server import TwilioServer

pytestmark = pytest.mark.faults
DUE = int(os.environ.get("SIMS_FAULT_TIMER_DUE", "20"))  # seconds from the raise to the first task timer


def protocol_with_a_timer(tmp_path: Path) -> Path:
    """The demo protocol with one task whose first escalation falls due DUE seconds after the raise."""
    text = DEFAULT_PROTOCOL.read_text()
    text = text[:text.index("\nsteps:")] + f"""
steps:
  - {{id: confirm_facts, title: Confirm the facts that can be shared, kind: task, owner: police_borough_lead, due: {DUE}s, escalation: [30m, 1h]}}
  - {{id: reassurance_patrols, title: Reassurance patrols in the area, kind: reassurance, owner: neighbourhood_policing, due: 4h, escalation: [30m]}}
"""
    path = tmp_path / "protocol-timer.yaml"
    path.write_text(text)
    return path


async def snapshot(rt: Runtime) -> dict[str, Any]:
    """What must survive: incidents with their tasks, fund claims, the audit trail, delivery records."""
    incidents = {i.id: i.model_dump(mode="json") if hasattr(i, "model_dump") else repr(i)
                 for i in await queries.list_incidents(rt)}
    return {"incidents": incidents, "funds": await rt.kv.entries("sims_funds"),
            "audit": await queries.audit_records(rt),
            "deliveries": {k: v.get("status") for k, v in (await rt.kv.entries("sims_deliveries", "d.>")).items()}}


@pytest.mark.timeout(600)
async def test_full_restart_keeps_everything_and_a_timer_due_while_down_fires_once(
        nats_server: NatsServer, twilio_server: TwilioServer, smtp_server: SmtpServer,  # noqa: F811
        tmp_path: Path) -> None:
    protocol = protocol_with_a_timer(tmp_path)
    settings = Settings(data_dir=tmp_path / "data", protocol=protocol, link_secrets="k:fault-test")
    env = sims_env(nats_server.url, tmp_path / "data", twilio_server, smtp_server, free_port(),
                   SIMS_PROTOCOL=str(protocol))
    rt = await connect_runtime(settings, nats_server.url, "fault-test")
    procs = await SimsProcesses(env, tmp_path / "logs", workers=2).start()
    try:
        token = await make_token(rt)
        async with httpx.AsyncClient(base_url=procs.http_url, headers=bearer(token), timeout=60) as http:
            response = await http.post("/api/incidents", json={**RAISE, "occurred_at": datetime.now(UTC).isoformat()})
            assert response.status_code == 201, response.text
            raised = response.json()
        incident_id = raised["incident_id"]
        for command in (EditClaim(actor="duty", incident_id=incident_id, purpose="Reassure young people",
                                  planned_activity="Youth sessions", beneficiaries="About 60 young people",
                                  start_date=date(2026, 12, 5), end_date=date(2027, 1, 30),
                                  lines=({"description": "Sessions", "amount": "1500.00"},)),
                        SubmitClaim(actor="duty", incident_id=incident_id)):
            assert (await submit(rt.nc, rt.js, rt.kv, command))["ok"]

        async def settled() -> bool:
            found, _ = await queries.incident_with_timeline(rt, incident_id)
            records = await rt.notifications.deliveries(incident_id)
            return (found.state.value == "active" and bool(found.tasks) and bool(records)
                    and any(r["kind"] == "task" for r in records) and any(r["key"].endswith("fund-submit")
                                                                        or "fund" in r["key"] for r in records)
                    and all(r["status"] not in ("pending", "retrying") for r in records))
        deadline = asyncio.get_running_loop().time() + 60
        while not await settled():
            assert asyncio.get_running_loop().time() < deadline, "the raise did not settle"
            await asyncio.sleep(0.2)
        timer_key = f"t.{incident_id}.confirm_facts.1"
        timers = await rt.kv.entries("sims_timers")
        assert timer_key in timers, sorted(timers)
        due_at = datetime.fromisoformat(timers[timer_key]["due_at"])
        before = await snapshot(rt)
        task = next(t for t in before["incidents"][incident_id]["tasks"] if t["id"] == "confirm_facts")
        assert task["escalation_level"] == 0

        procs.stop()  # every SIMS process (SIGTERM: drain), then the server
        await rt.close()
        nats_server.stop()
        assert datetime.now(UTC) < due_at, f"stopped too late for the timer (SIMS_FAULT_TIMER_DUE={DUE})"
        await asyncio.sleep((due_at - datetime.now(UTC)).total_seconds() + 2)  # the timer falls due while down

        nats_server.start()
        rt = await connect_runtime(settings, nats_server.url, "fault-test")
        procs = await SimsProcesses(env, tmp_path / "logs-after", workers=2).start()

        async def escalated() -> bool:
            found, _ = await queries.incident_with_timeline(rt, incident_id)
            return next(t for t in found.tasks if t.id == "confirm_facts").escalation_level >= 1
        deadline = asyncio.get_running_loop().time() + 60
        while not await escalated():
            assert asyncio.get_running_loop().time() < deadline, "the timer did not fire after the restart"
            await asyncio.sleep(0.2)
        await asyncio.sleep(3)  # both workers' sweepers had their chances
        after = await snapshot(rt)

        assert after["audit"][:len(before["audit"])] == before["audit"]  # the trail, unchanged, then more
        assert after["funds"] == before["funds"] and before["funds"][incident_id]["state"] == "submitted"
        assert set(after["incidents"]) == set(before["incidents"])
        old, new = before["incidents"][incident_id], after["incidents"][incident_id]
        moving = ("tasks", "version", "updated_at", "restricted")  # restricted: re-sealed (fresh nonce) on each store
        assert {k: v for k, v in new.items() if k not in moving} == {k: v for k, v in old.items() if k not in moving}
        assert (new["restricted"] == old["restricted"]) or str(new["restricted"])[:10] == str(old["restricted"])[:10]
        assert [(t["id"], t["owner"], t["due_at"]) for t in new["tasks"]] == \
               [(t["id"], t["owner"], t["due_at"]) for t in old["tasks"]]
        facts = next(t for t in new["tasks"] if t["id"] == "confirm_facts")
        assert facts["escalation_level"] == 1  # once: level 2 is 30 minutes away
        fired = [r for r in after["audit"] if r["action"] == "timer.fired" and r["detail"].get("timer") == timer_key]
        assert len(fired) == 1, fired  # one worker won the claim
        assert all(after["deliveries"].get(k) for k in before["deliveries"])  # every message record kept
        assert timer_key not in await rt.kv.entries("sims_timers")
        verdict = await audit_verify_cli(env)
        assert verdict.returncode == 0, verdict.stdout + verdict.stderr
        print(f"restart: {len(before['audit'])} audit records kept, {len(after['audit'])} after; timer fired once "
              f"{(datetime.fromisoformat(fired[0]['at']) - due_at).total_seconds():.1f}s after its due time; "
              f"{verdict.stdout.strip()}")
    finally:
        procs.stop()
        await rt.close()
