"""The worker's sweep reads the stored incidents again only when `sims_incidents` changed."""

from __future__ import annotations

from pathlib import Path

from handlers.serve import StoredIncidents
from sims.adapters.nats_server import NatsServer
from sims.services import INCIDENTS
from tests.support.fixtures import smtp_server, twilio_server  # noqa: F401
from tests.support.smtp_server import SmtpServer
from tests.support.stack import start_stack
from tests.support.twilio_server import TwilioServer


async def test_incidents_are_read_again_only_after_a_change(nats_server: NatsServer, twilio_server: TwilioServer,  # noqa: F811
                                                            smtp_server: SmtpServer, tmp_path: Path) -> None:  # noqa: F811
    stack, stop = await start_stack(nats_server, twilio_server, smtp_server, tmp_path)  # no sweeper running
    try:
        stored = StoredIncidents(stack.rt)
        assert await stored.get() == [] and stored.reads == 1
        assert await stored.get() == [] and stored.reads == 1  # nothing changed: not read again

        first = await stack.raise_incident()
        await stack.settled(first["incident_id"], 1)

        async def briefed() -> bool:  # notifying, briefing drafted: the last writes a raise makes
            stored_now = await stack.rt.kv.get(INCIDENTS, first["incident_id"])
            return stored_now is not None and stored_now["state"] == "notifying" and bool(stored_now["briefings"])
        await stack.wait_for(briefed)
        listed = await stored.get()
        assert [i.id for i in listed] == [first["incident_id"]] and stored.reads == 2
        assert await stored.get() is listed and stored.reads == 2  # settled, no sweeper: no incident write

        second = await stack.raise_incident(location="Peckham High Street")
        reads = stored.reads
        assert {i.id for i in await stored.get()} == {first["incident_id"], second["incident_id"]}
        assert stored.reads == reads + 1
    finally:
        await stop()
