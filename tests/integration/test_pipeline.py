"""The pipeline on a real nats-server: intake paths, idempotency, concurrency, dead letters, restart."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sims import queries
from sims.adapters import jetstream as jsa
from sims.adapters.commands import submit
from sims.adapters.nats_server import NatsServer
from sims.bootstrap import Runtime, connect_runtime
from sims.config import Settings
from sims.messages import RaiseIncident, Transition, UpdateIncident
from sims.model import Incident
from tests.support.api import api_client

RAISE = {"actor": "duty-officer", "type": "stabbing", "level": "2", "occurred_at": "2026-11-30T21:40:00Z",
         "ward": "Peckham", "location": "Rye Lane, near the station", "outline": "A young man was stabbed",
         "restricted": "Victim: J Smith, 17", "exercise": False}
SAME_FIELDS = ("type", "level", "occurred_at", "ward", "location", "outline", "restricted", "exercise",
               "raised_by", "details", "gold")


async def nats_request(rt: Runtime, payload: bytes) -> dict[str, Any]:
    reply = await rt.nc.request(jsa.API_SUBJECT, payload, timeout=15)
    return dict(json.loads(reply.data))


async def dead_letters(rt: Runtime) -> list[dict[str, Any]]:
    return [json.loads(m.data) | {"subject": m.subject} async for m in jsa.read_subject(rt.js, jsa.DEAD, "sims.dlq.>")]


def run_cli(url: str, *args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SIMS_NATS_URL": url, "SIMS_DATA_DIR": str(data_dir)}
    return subprocess.run([sys.executable, "-m", "handlers.cli", *args], capture_output=True, text=True,
                          env=env, timeout=60)


async def test_cli_http_and_nats_request_give_the_same_incident(worker: Runtime, nats_server: NatsServer,
                                                                 tmp_path: Path) -> None:
    """All three intake paths reach the one handler: same fields, consecutive references."""
    async with await api_client(worker) as client:
        via_http = (await client.post("/api/incidents", json=RAISE)).json()
    via_nats = await nats_request(worker, json.dumps({**RAISE, "kind": "raise"}).encode())
    cli = await asyncio.to_thread(run_cli, nats_server.url, "raise", "--type", "stabbing", "--level", "2",
                                  "--ward", "Peckham", "--location", RAISE["location"], "--outline", RAISE["outline"],
                                  "--restricted", RAISE["restricted"], "--occurred-at", RAISE["occurred_at"],
                                  "--actor", "duty-officer", data_dir=tmp_path)
    assert cli.returncode == 0, cli.stderr
    assert via_http["ok"] and via_nats["ok"]
    incidents = await queries.list_incidents(worker)
    assert sorted(i.reference for i in incidents) == ["SWK-2026-0001", "SWK-2026-0002", "SWK-2026-0003"]
    shapes = [{k: v for k, v in i.model_dump(mode="json").items() if k in SAME_FIELDS} for i in incidents]
    assert shapes[0] == shapes[1] == shapes[2]
    assert shapes[0]["restricted"] == RAISE["restricted"]
    assert all(i.state in ("raised", "notifying") for i in incidents)
    assert "SWK-2026-000" in cli.stdout


async def test_the_same_raise_twice_makes_one_incident_even_after_its_result_expired(worker: Runtime) -> None:
    command = RaiseIncident.model_validate({**RAISE, "command_id": "cad-4471-20261130"})
    first = await submit(worker.nc, worker.js, worker.kv, command)
    again = await nats_request(worker, command.model_dump_json().encode())
    async with await api_client(worker) as client:
        thrice = (await client.post("/api/incidents", json={**RAISE, "command_id": "cad-4471-20261130"})).json()
    assert first == again == thrice
    kv = await worker.js.key_value("sims_results")
    await kv.delete(command.command_id)  # as if outside de-duplication window and result retention
    later = await worker.incidents.handle(command)
    assert later.incident_id == first["incident_id"] and later.reference == first["reference"]
    assert [i.reference for i in await queries.list_incidents(worker)] == ["SWK-2026-0001"]


async def test_a_refused_transition_changes_nothing_and_says_what_is_allowed(worker: Runtime) -> None:
    raised = await submit(worker.nc, worker.js, worker.kv, RaiseIncident.model_validate(RAISE))
    async with await api_client(worker) as client:
        response = await client.post(f"/api/incidents/{raised['reference']}/transitions",
                                     json={"trigger": "close", "reason": "done", "actor": "duty"})
        assert response.status_code == 409
        assert "close" not in response.json()["error"]["allowed"]
        after = (await client.get(f"/api/incidents/{raised['reference']}")).json()
    assert [t["type"] for t in after["timeline"]].count("incident.state_changed") <= 1  # only the notifier's
    assert after["state"] in ("raised", "notifying")
    assert after["restricted"] == "[restricted]"  # not over the open API


async def test_concurrent_updates_from_two_workers_lose_nothing(worker: Runtime, nats_server: NatsServer,
                                                                settings: Settings) -> None:
    from handlers.worker import build_broker

    second = await connect_runtime(settings, nats_server.url, "second")
    broker = build_broker(second, nats_server.url)
    await broker.start()
    try:
        raised = await submit(worker.nc, worker.js, worker.kv, RaiseIncident.model_validate(RAISE))
        updates = [UpdateIncident(actor=f"officer{i % 2}", incident=raised["incident_id"], add_cordons=(f"cordon {i}",))
                   for i in range(30)]
        results = await asyncio.gather(*(submit(worker.nc, worker.js, worker.kv, u) for u in updates))
        assert all(r["ok"] for r in results)
        incident, timeline = await queries.incident_with_timeline(worker, raised["incident_id"])
        assert sorted(incident.details.cordons) == sorted(f"cordon {i}" for i in range(30))
        system = sum(1 for t in timeline if t["actor"] == "sims")  # the notifier's transition and draft
        assert incident.version == 31 + system and len(timeline) == 31 + system
        stale = UpdateIncident(actor="late", incident=raised["incident_id"], outline="changed", expected_version=5)
        refused = await submit(worker.nc, worker.js, worker.kv, stale)
        assert refused["error"]["error"] == "conflict" and refused["error"]["expected_version"] == 5
        assert queries.verify_records(await queries.audit_records(worker)).ok
    finally:
        await broker.stop()
        await second.close()


async def test_bad_payloads_are_dead_lettered_with_a_reason_and_the_worker_keeps_serving(worker: Runtime) -> None:
    bad = [b"{not json", json.dumps({**RAISE, "kind": "raise", "level": "nine"}).encode(),
           json.dumps({**RAISE, "kind": "raise", "ward": "Atlantis"}).encode(),
           json.dumps({**RAISE, "kind": "raise", "outline": "x" * 70_000}).encode(),
           json.dumps({"kind": "launch"}).encode()]
    answers = [await nats_request(worker, payload) for payload in bad]
    assert [a["ok"] for a in answers] == [False] * 5
    assert answers[0]["error"]["error"] == "invalid" and "JSON" in answers[0]["error"]["message"]
    assert "level" in answers[1]["error"]["message"]
    assert "'Atlantis' is not a ward" in answers[2]["error"]["message"]
    assert answers[3]["error"]["error"] == "too_large"
    await worker.js.publish(jsa.CMD_SUBJECT, b"\xff\xfe garbage straight onto the stream")
    ok = await nats_request(worker, json.dumps({**RAISE, "kind": "raise"}).encode())
    assert ok["ok"] and ok["reference"] == "SWK-2026-0001"
    letters = await dead_letters(worker)
    reasons = [(d["subject"], d["reason"]["error"]) for d in letters]
    assert reasons.count(("sims.dlq.intake", "invalid")) == 3 and ("sims.dlq.intake", "too_large") in reasons
    assert ("sims.dlq.commands", "invalid") in reasons  # unknown ward, refused by the domain
    assert sum(1 for d in letters if "garbage" in d["payload"]) == 1


async def test_state_and_audit_are_identical_after_killing_and_restarting_nats(nats_server: NatsServer,
                                                                              settings: Settings) -> None:
    rt = await connect_runtime(settings, nats_server.url, "a")
    raised = await rt.incidents.handle(RaiseIncident.model_validate(RAISE))
    assert raised.incident_id
    await rt.incidents.handle(UpdateIncident(actor="d", incident=raised.incident_id, add_cordons=("Rye Lane",)))
    await rt.incidents.handle(Transition(actor="d", incident=raised.incident_id, trigger="start_notifying"))
    before = (await queries.incident_with_timeline(rt, raised.incident_id), await queries.audit_records(rt))
    await rt.close()
    nats_server.kill()
    nats_server.start()
    rt = await connect_runtime(settings, nats_server.url, "b")
    try:
        after = (await queries.incident_with_timeline(rt, raised.incident_id), await queries.audit_records(rt))
        assert after == before
        assert after[0][0].state == "notifying" and after[0][0].version == before[0][0].version
        stored = Incident.model_validate(await rt.kv.get("sims_incidents", raised.incident_id))
        assert (await rt.incidents.opened(stored)) == after[0][0]  # projection (details sealed) = replay
        assert queries.verify_records(after[1]).ok
        more = await rt.incidents.handle(Transition(actor="d", incident=raised.incident_id, trigger="confirm_notified"))
        assert more.ok and more.version == before[0][0].version + 1
        assert queries.verify_records(await queries.audit_records(rt)).ok
    finally:
        await rt.close()


async def test_audit_export_from_http_verifies_and_tampering_is_caught(worker: Runtime) -> None:
    raised = await submit(worker.nc, worker.js, worker.kv, RaiseIncident.model_validate(RAISE))
    await submit(worker.nc, worker.js, worker.kv, Transition(actor="d", incident=raised["reference"], trigger="escalate"))
    async with await api_client(worker) as client:
        jsonl = (await client.get(f"/api/incidents/{raised['reference']}/audit?format=jsonl")).text
        csv_text = (await client.get(f"/api/incidents/{raised['reference']}/audit?format=csv")).text
    records = queries.parse_export(jsonl)
    actions = [r["action"] for r in records]
    assert actions[0] == "command.raise" and "transition" in actions
    assert "J Smith" not in jsonl  # restricted text is kept as a hash in the audit trail
    assert queries.verify_records(records).ok and queries.verify_records(queries.parse_export(csv_text)).ok
    position = next(i for i, r in enumerate(records, 1) if r["action"] == "transition" and r["outcome"].endswith("escalated"))
    edited = jsonl.replace('-> escalated"', '-> closed"')
    assert queries.verify_records(queries.parse_export(edited)).position == position


async def test_replay_rebuilds_lost_projections_and_long_reads_show_progress(worker: Runtime, nats_server: NatsServer,
                                                                             tmp_path: Path) -> None:
    """`sims replay` rebuilds stored state from events; verify/export report progress on stderr only."""
    raised = [await submit(worker.nc, worker.js, worker.kv, RaiseIncident.model_validate({**RAISE, "ward": ward}), 10)
              for ward in ("Peckham", "Faraday")]
    assert all(r["ok"] for r in raised), raised
    before: dict[str, Any] = {}
    for _ in range(100):  # let the notifier's own commands (notify, briefing draft) settle first
        now = {i.id: i.model_dump(mode="json") for i in await queries.list_incidents(worker)}
        if now == before and len(now) == 2:
            break
        before = now
        await asyncio.sleep(1.0)
    for incident_id in before:
        await (await worker.kv.bucket("sims_incidents")).delete(incident_id)  # lost (a partial restore, say)
    assert await queries.list_incidents(worker) == []

    replayed = await asyncio.to_thread(run_cli, nats_server.url, "replay", data_dir=tmp_path)
    assert replayed.returncode == 0, replayed.stderr
    assert "Rebuilt 2 incident(s)" in replayed.stdout
    assert "Replaying incidents from their events: 2 done in" in replayed.stderr
    after = {i.id: i.model_dump(mode="json") for i in await queries.list_incidents(worker)}
    assert set(after) == set(before)
    for incident_id, state in after.items():  # the same incidents, at least as far on as before
        assert state["reference"] == before[incident_id]["reference"]
        assert state["version"] >= before[incident_id]["version"]

    verified = await asyncio.to_thread(run_cli, nats_server.url, "audit", "verify", data_dir=tmp_path)
    assert verified.returncode == 0, verified.stderr
    total = await queries.audit_size(worker)
    assert total > 0 and f"Reading the audit trail: {total} done in" in verified.stderr
    exported = await asyncio.to_thread(run_cli, nats_server.url, "audit", "export", "SWK-2026-0001", data_dir=tmp_path)
    assert exported.returncode == 0 and "Reading the audit trail of SWK-2026-0001" in exported.stderr
    assert all(json.loads(line)["chain"] for line in exported.stdout.splitlines())  # stdout: records only
