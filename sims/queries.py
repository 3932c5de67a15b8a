"""Read side: incidents, timelines and audit exports for the CLI and HTTP. Reads; never writes."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone
from typing import Any, Callable

from sims import protocol
from sims.audit import Verdict, verify
from sims.bootstrap import Runtime
from sims.errors import IncidentNotFound, ValidationFailed
from sims.model import Incident
from sims.routing import recipients_for
from sims.services import INCIDENTS

AUDIT_FIELDS = ["chain", "index", "at", "actor", "incident_id", "action", "outcome", "detail", "prev", "hash"]


def public(incident: Incident, restricted: bool = False) -> dict[str, Any]:
    """The incident as JSON; restricted details only for callers allowed to see them."""
    data = incident.model_dump(mode="json")
    if incident.erased_at is not None:  # retention: the details are gone, not merely hidden
        data["restricted"] = "[erased]"
    elif not restricted:
        data["restricted"] = "[restricted]" if str.__str__(incident.restricted) else ""
    data["next_triggers"] = [t.value for t in protocol.allowed_triggers(incident.state)]
    return data


async def list_incidents(rt: Runtime, reveal: bool = True) -> list[Incident]:
    """Every incident's stored state, newest first; restricted details opened unless `reveal` is False
    (they are sealed in `sims_incidents`; a sweep that never reads them need not fetch keys)."""
    found = await rt.kv.entries(INCIDENTS)
    incidents = [Incident.model_validate(item) for item in found.values()]
    if reveal:
        incidents = [await rt.incidents.opened(incident) for incident in incidents]
    return sorted(incidents, key=lambda i: i.raised_at, reverse=True)


async def incident_with_timeline(rt: Runtime, key: str) -> tuple[Incident, list[dict[str, Any]]]:
    """The incident rebuilt from its events (the truth), and its timeline."""
    incident_id = await rt.incidents.resolve(key)
    incident, _seq, events = await rt.incidents.load(incident_id)
    timeline = [{"at": e.at.isoformat(), "actor": e.actor, "type": e.type.value, "summary": e.summary()}
                for e in events]
    return incident, timeline


async def audit_records(rt: Runtime, key: str | None = None,
                        on_record: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """An incident's audit records (or every record); `on_record(1)` after each, for progress."""
    chain = await rt.incidents.resolve(key) if key else None
    if chain:
        _ = await rt.incidents.load(chain)  # IncidentNotFound for an unknown incident
    records = []
    async for record in rt.audit.records(chain):
        records.append(record)
        if on_record is not None:
            on_record(1)
    return records


async def audit_size(rt: Runtime) -> int:
    """How many audit records are stored (every chain): the total for a progress bar."""
    from sims.adapters.jetstream import AUDIT

    return int((await rt.js.stream_info(AUDIT)).state.messages)


async def incident_ids(rt: Runtime) -> list[str]:
    """Every incident with events, from the event stream's subjects (the truth, not the projection)."""
    from sims.adapters.jetstream import EVENTS

    info = await rt.js.stream_info(EVENTS, subjects_filter="sims.evt.>")
    return sorted(subject.removeprefix("sims.evt.") for subject in (info.state.subjects or {}))


def preview(rt: Runtime, type_: str, level: str, ward: str, gold: bool = False) -> list[dict[str, Any]]:
    """Who the protocol would tell about an incident like this, and why, before anything is sent."""
    if ward not in rt.protocol.ward_set:
        raise ValidationFailed("Cannot preview", [f"ward {ward!r} is not a ward of this borough (see `sims wards`)"])
    probe = Incident(id="preview", reference="PREVIEW", type=type_, level=level, ward=ward, gold=gold,
                     occurred_at=datetime.now(timezone.utc), raised_at=datetime.now(timezone.utc),
                     updated_at=datetime.now(timezone.utc), location="-", outline="-", raised_by="-")
    return [{"id": r.contact.id, "name": r.contact.name, "organisation": r.contact.organisation,
             "roles": list(r.roles), "channels": [c.value for c in r.channels], "why": list(r.reasons)}
            for r in recipients_for(probe, rt.directory, rt.protocol)]


def to_jsonl(records: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in records)


def to_csv(records: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=AUDIT_FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in records:
        writer.writerow({**r, "detail": json.dumps(r.get("detail", {}), sort_keys=True, ensure_ascii=False),
                         "incident_id": r.get("incident_id") or ""})
    return out.getvalue()


def parse_export(text: str) -> list[dict[str, Any]]:
    """Records from an exported JSONL or CSV file, with their types restored."""
    stripped = text.lstrip()
    if stripped.startswith("{") or not stripped:
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    rows = list(csv.DictReader(io.StringIO(text)))
    records = []
    for row in rows:
        record: dict[str, Any] = dict(row)
        record["index"] = int(row["index"]) if row.get("index", "").lstrip("-").isdigit() else row.get("index")
        record["detail"] = json.loads(row["detail"]) if row.get("detail") else {}
        record["incident_id"] = row.get("incident_id") or None
        records.append(record)
    return records


def verify_records(records: list[dict[str, Any]]) -> Verdict:
    return verify(records)


__all__ = ["IncidentNotFound", "public", "list_incidents", "incident_with_timeline", "audit_records",
           "to_jsonl", "to_csv", "parse_export", "verify_records"]
