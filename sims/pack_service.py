"""Producing a review pack: read its sources from the stores, assemble it, and audit that it was made.

The audit record of a pack goes on the `system` chain (with the incident's id), so making a pack does
not change the incident's own trail: two packs of an unchanged incident have the same content hash,
and the last hash they show is the one `sims audit export` + `sims audit verify` show.
"""

from __future__ import annotations

from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any
from zoneinfo import ZoneInfo

from sims.bootstrap import Runtime
from sims.review_pack import Audience, Pack, Sources, assemble


def sims_version() -> str:
    try:
        return version("sims")
    except PackageNotFoundError:
        return "unknown"


async def sources(rt: Runtime, key: str) -> Sources:
    """Everything a pack shows about the incident `key` (id or reference); IncidentNotFound if none."""
    incident_id = await rt.incidents.resolve(key)
    incident, _seq, events = await rt.incidents.load(incident_id)
    deliveries = await rt.notifications.deliveries(incident.id)
    wanted = {d.get("contact_id", "") for d in deliveries} | {t.owner for t in incident.tasks if t.owner}
    wanted |= {str(e.data.get("person")) for e in events if e.data.get("person")}
    people: dict[str, tuple[str, str]] = {}
    for person in wanted:
        contact = rt.directory.get(person) if person else None
        if contact is not None:
            people[person] = (contact.name, contact.organisation)
    claim = await rt.incidents.fund.claim(incident.id)
    audit = [record async for record in rt.audit.records(incident.id)]
    return Sources(incident=incident, events=events, deliveries=deliveries, people=people, claim=claim, audit=audit)


async def produce(rt: Runtime, key: str, *, audience: Audience, may_see_restricted: bool, by: str,
                  via: str) -> Pack:
    """The pack for `audience`, with its production audited (who, audience, restricted, content hash)."""
    found = await sources(rt, key)
    pack = assemble(found, audience=audience, may_see_restricted=may_see_restricted, generated_by=by,
                    generated_at=datetime.now(UTC), sims_version=sims_version(),
                    tz=ZoneInfo(rt.protocol.borough.timezone))
    detail: dict[str, Any] = {"reference": found.incident.reference, "audience": audience.value,
                              "restricted": may_see_restricted, "content_sha256": pack.version.content_sha256,
                              "pack_format": pack.version.pack_format, "via": via,
                              "audit_last_hash": pack.content["audit"]["last_hash"]}
    await rt.audit.append(chain="system", actor=by, incident_id=found.incident.id, action="pack.produced",
                          outcome=f"{audience.value}{' with restricted details' if may_see_restricted else ''}",
                          detail=detail)
    return pack


__all__ = ["produce", "sims_version", "sources"]
