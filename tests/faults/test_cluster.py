"""Fault: on a 3-node JetStream cluster, the leader of the outbox stream dies (kill -9, then restarted)
or stalls (SIGSTOP for 10 s, then SIGCONT) while an incident notifies 200 people and more incidents
are raised over HTTP. Nothing acknowledged is lost: every raise that was answered exists, every
message reached its provider (counted per key at the Twilio-like server and the SMTP server), every
accepted message has its audit record, and `sims audit verify` passes. `sims worker` and `sims web`
run as child processes and survive the leader election.

Run with `bash scripts/test -m faults`; SIMS_FAULT_SEED repeats a run (when the fault strikes, how
long the node stays down).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from bench.common import RAISE, TYPE_FOR_SIZE, Scenario
from sims.adapters import jetstream as jsa
from sims.adapters.commands import submit
from sims.adapters.nats_server import LocalCluster, free_port
from sims.bootstrap import Runtime, connect_runtime
from sims.config import Settings
from sims.messages import RaiseIncident
from tests.support.api import bearer, make_token
from tests.support.cluster import SimsProcesses, audit_verify_cli, leader_of, sent_per_key, sims_env
from tests.support.fixtures import smtp_server, twilio_server  # noqa: F401
from tests.support.smtp_server import SmtpServer
from tests.support.twilio_server import TwilioServer

pytestmark = pytest.mark.faults
SEED = int(os.environ.get("SIMS_FAULT_SEED", "20261130"))
N, SMALL = 200, 10  # the big fan-out, and the incidents raised over HTTP around the fault
STREAMS = (jsa.COMMANDS, jsa.EVENTS, jsa.AUDIT, jsa.DEAD, jsa.OUTBOX)
TOOK = {"accepted", "queued", "sending", "sent", "delivered", "read"}
FINAL = {"delivered", "read", "undelivered", "failed"}


async def wait_until(check, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, f"{what}: not within {timeout:.0f}s"
        await asyncio.sleep(0.25)


async def all_accepted(rt: Runtime, incident_id: str, count: int) -> list[dict[str, object]]:
    async def done() -> bool:
        records = await rt.notifications.deliveries(incident_id)
        return len(records) >= count and all(r.get("accepted_at") for r in records)
    await wait_until(done, 240, f"{count} messages of {incident_id} accepted")
    return await rt.notifications.deliveries(incident_id)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("fault", ["kill-9", "sigstop"])
async def test_stream_leader_fault_during_fan_out_loses_nothing(
        fault: str, twilio_server: TwilioServer, smtp_server: SmtpServer, tmp_path: Path) -> None:  # noqa: F811
    rng = random.Random(f"{SEED}:{fault}")
    cluster = LocalCluster(tmp_path / "cluster").start()
    procs: SimsProcesses | None = None
    rt: Runtime | None = None
    try:
        await cluster.ready()
        scenario = Scenario(tmp_path / "scenario", [SMALL, N])
        settings = Settings(data_dir=tmp_path / "data", protocol=scenario.protocol_path,
                            contacts_dir=scenario.contacts_dir, link_secrets="k:fault-test")
        rt = await connect_runtime(settings, cluster.url, "fault-test")
        for stream in STREAMS:  # three nodes: every stream (and bucket) is replicated on all three
            assert (await rt.js.stream_info(stream)).config.num_replicas == 3, stream
        assert (await rt.js.stream_info("KV_sims_deliveries")).config.num_replicas == 3
        env = sims_env(cluster.url, tmp_path / "data", twilio_server, smtp_server, free_port(),
                       SIMS_PROTOCOL=str(scenario.protocol_path), SIMS_CONTACTS_DIR=str(scenario.contacts_dir),
                       SIMS_STATUS_RECONCILE_AFTER="5", SIMS_STATUS_RECONCILE_EVERY="2")  # lost callbacks: soon
        procs = await SimsProcesses(env, tmp_path / "logs").start()
        token = await make_token(rt)

        answers: Counter[int] = Counter()
        acknowledged: list[str] = []
        stop_raising = asyncio.Event()

        async def keep_raising(http: httpx.AsyncClient) -> None:
            i = 0
            while not stop_raising.is_set():
                command_id = f"fault-{fault}-{SEED}-{i:04d}"
                i += 1
                response = await http.post("/api/incidents", json={
                    **RAISE, "type": TYPE_FOR_SIZE[SMALL], "occurred_at": datetime.now(UTC).isoformat(),
                    "command_id": command_id})
                answers[response.status_code] += 1
                if response.status_code in (201, 202):  # done, or accepted and queued
                    acknowledged.append(command_id)
                await asyncio.sleep(0.3)

        async with httpx.AsyncClient(base_url=procs.http_url, headers=bearer(token), timeout=120) as http:
            raiser = asyncio.create_task(keep_raising(http))
            big = await submit(rt.nc, rt.js, rt.kv, RaiseIncident.model_validate({
                **RAISE, "type": TYPE_FOR_SIZE[N], "occurred_at": datetime.now(UTC).isoformat()}), timeout=60)
            assert big["ok"], big
            victim_name = await leader_of(rt.js, jsa.OUTBOX)
            led = [s for s in STREAMS if await leader_of(rt.js, s) == victim_name]
            strike_at = rng.randint(N // 10, N // 2)  # messages accepted by the providers before the fault
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 120
            while len(twilio_server.messages) + len(smtp_server.handler.messages) < strike_at:
                assert loop.time() < deadline, "the fan-out did not start"
                await asyncio.sleep(0.01)
            victim = cluster.node(victim_name)
            struck = loop.time()
            if fault == "kill-9":
                victim.kill()
                await asyncio.sleep(rng.uniform(3.0, 8.0))
                victim.start()
            else:
                victim.signal(signal.SIGSTOP)
                await asyncio.sleep(10)
                victim.signal(signal.SIGCONT)
            recovered = loop.time() - struck
            new_leader = await leader_of(rt.js, jsa.OUTBOX)
            await asyncio.sleep(5)  # raises keep coming after the node is back
            stop_raising.set()
            await raiser
        procs.check_alive()  # worker and web survived the election

        assert answers and set(answers) <= {201, 202}, answers  # the web answered every raise
        # Status callbacks: none refused. Some may time out at the Twilio-like server (5 s; Twilio's own
        # limit is 15 s) while the web waits out the election; those are not acknowledged, so not lost.
        late = sum(1 for c in twilio_server.callbacks if c.response_status is None)
        refused = Counter(c.response_status for c in twilio_server.callbacks if c.response_status not in (204, None))
        assert not refused, refused
        records = await all_accepted(rt, big["incident_id"], N)
        assert len(records) == N and {r["status"] for r in records} <= TOOK
        small_ids = []
        for command_id in acknowledged:  # every acknowledged raise exists and notified its people
            async def answered(cid: str = command_id) -> bool:
                return await rt.kv.get("sims_results", cid) is not None
            await wait_until(answered, 120, f"raise {command_id} handled")
            result = await rt.kv.get("sims_results", command_id)
            assert result and result["ok"], result
            incident, _seq, _events = await rt.incidents.load(result["incident_id"])
            assert incident.reference == result["reference"]
            small_ids.append(result["incident_id"])
            assert len(await all_accepted(rt, result["incident_id"], SMALL)) == SMALL

        sent = sent_per_key(twilio_server, smtp_server)
        big_ref = big["reference"]
        people = {p.address for p in scenario.recipients(N)}
        reached = {k.rsplit(":", 1)[1] for k in sent if k.startswith(f"sms:{big_ref}:")}
        reached |= {r["to"] for r in records if r["channel"] == "email"
                    and sent.get(f"email:{r['key']}@sims", 0) >= 1}
        assert reached == people  # every message of the fan-out reached its provider
        expected_keys = N + SMALL * len(acknowledged)
        assert len(sent) == expected_keys, (len(sent), expected_keys)  # nothing lost, nothing extra
        duplicates = sum(c - 1 for c in sent.values())
        assert duplicates <= 2 * 64  # at most what was in flight: one batch per channel consumer

        audited: set[str] = set()
        for incident_id in [big["incident_id"], *small_ids]:
            audited |= {str(r["detail"]["key"]) async for r in rt.audit.records(incident_id)
                        if r["action"] == "message.accepted"}
        accepted_keys = {str(r["key"]) for r in records}
        for incident_id in small_ids:
            accepted_keys |= {str(r["key"]) for r in await rt.notifications.deliveries(incident_id)}
        assert accepted_keys <= audited  # every accepted message has its audit record

        # Status callbacks lost around the election are made good by the worker's reconciliation (each
        # message looked up by its SID): in the end no SMS is left short of its final status.
        async def sms_settled() -> bool:
            for incident_id in [big["incident_id"], *small_ids]:
                if any(r["channel"] == "sms" and r["status"] not in FINAL
                       for r in await rt.notifications.deliveries(incident_id)):
                    return False
            return True
        await wait_until(sms_settled, 120, "every SMS at its final status")
        verdict = await audit_verify_cli(env)
        assert verdict.returncode == 0, verdict.stdout + verdict.stderr
        print(f"seed {SEED} {fault}: {victim_name} led {led}; struck after {strike_at} accepted, back after "
              f"{recovered:.1f}s; outbox leader now {new_leader}; {len(acknowledged)} raises over HTTP "
              f"{dict(answers)}; {late} status callbacks timed out, {twilio_server.fetches} statuses looked up; {duplicates} sent twice; {verdict.stdout.strip()}")
    finally:
        if procs is not None:
            procs.stop()
        if rt is not None:
            await rt.close()
        cluster.stop()
