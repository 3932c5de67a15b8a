"""The stored incident (`sims_incidents`) never goes back to an earlier version."""

from __future__ import annotations

from sims.bootstrap import Runtime
from sims.messages import RaiseIncident, Transition, Trigger
from sims.services import INCIDENTS


async def test_an_earlier_state_recorded_late_does_not_replace_a_later_one(runtime: Runtime) -> None:
    incidents = runtime.incidents
    raised = await incidents.handle(RaiseIncident(actor="d", type="other", level="1", ward="Peckham",
                                                  occurred_at="2026-11-30T20:00:00Z", location="x", outline="y"))
    assert raised.ok and raised.incident_id
    earlier = await incidents.current(raised.incident_id)
    moved = await incidents.handle(Transition(actor="d", incident=raised.incident_id,
                                              trigger=Trigger.START_NOTIFYING))
    assert moved.ok and moved.version == earlier.version + 1
    # As when two commands on one incident are recorded at once and the first one's write comes last:
    revision = await runtime.kv.revision(INCIDENTS)
    await incidents._project(earlier)
    stored = await runtime.kv.get(INCIDENTS, raised.incident_id)
    assert (stored["version"], stored["state"]) == (moved.version, "notifying")
    # Neither it nor the same version again is written (readers watching the revision see no change).
    await incidents._project(await incidents.current(raised.incident_id))
    assert await runtime.kv.revision(INCIDENTS) == revision
    # Rebuilding from the events stores what they say, whatever is there.
    await runtime.kv.put(INCIDENTS, raised.incident_id, {**stored, "version": 99, "state": "closed"})
    await incidents.reproject(raised.incident_id)
    stored = await runtime.kv.get(INCIDENTS, raised.incident_id)
    assert (stored["version"], stored["state"]) == (moved.version, "notifying")
