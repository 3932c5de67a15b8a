"""A large incident's link records and work items reach NATS in a few large atomic batches."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from bench.common import LINK_SECRETS, RAISE, TYPE_FOR_SIZE, Scenario
from sims.adapters.group_commit import group_commit
from sims.adapters.nats_server import NatsServer
from sims.bootstrap import connect_runtime
from sims.config import Settings
from sims.messages import EventType, RaiseIncident


async def test_two_hundred_people_are_queued_in_a_few_batches_each_stored_once(
        tmp_path: Path, nats_server: NatsServer) -> None:
    scenario = Scenario(tmp_path / "scenario", [200])  # a synthetic protocol that tells 200 people
    settings = Settings(data_dir=tmp_path / "data", protocol=scenario.protocol_path,
                        contacts_dir=scenario.contacts_dir, link_secrets=LINK_SECRETS, command_timeout=10.0)
    rt = await connect_runtime(settings, nats_server.url, "test")
    try:
        raise_ = RaiseIncident.model_validate({**RAISE, "type": TYPE_FOR_SIZE[200], "command_id": "planning-200-people",
                                               "occurred_at": datetime.now(UTC).isoformat()})
        result = await rt.incidents.handle(raise_)
        assert result.ok, result
        _incident, _seq, events = await rt.incidents.load(result.incident_id)
        raised = next(e for e in events if e.type is EventType.RAISED)
        committer = group_commit(rt.js._nc)
        batches, batched = committer.batches, committer.batched

        deliveries = await rt.notifications.on_event(raised)

        assert len({d.key for d in deliveries}) == 200
        # 200 link records and 200 work items: the first of each goes alone, the others wait for it and
        # go together (2 batches). Planning 32 at a time made 21 or 22 batches of them.
        assert committer.batched - batched >= 390
        assert committer.batches - batches <= 6
        links = await rt.js.stream_info("KV_sims_links")
        outbox = await rt.js.stream_info("SIMS_OUTBOX")
        assert links.state.messages == 200 and outbox.state.messages == 200  # each stored once
    finally:
        await rt.close()
