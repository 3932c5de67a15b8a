"""Pan-London subscribers of a borough's worker, and the VRU's overview (see sims/adapters/nats_accounts.py).

With SIMS_PAN_LONDON on, a borough's worker also:
  - after each incident event, sends the VRU a summary of the incident (shareable fields only);
  - after a raise, sends each neighbouring borough it concerns a boundary notice (shareable fields
    only), and another when the incident is escalated, stood down or closed; each is recorded in
    the incident's audit trail;
  - turns each raise notice from a neighbour into a raise of its own (its ward, its protocol, its
    contacts, its own reference, linked back), and each later notice into an update to everyone
    told of that linked incident, through its usual command stream.
"""

from __future__ import annotations

import json
from typing import Any

import structlog
from faststream import AckPolicy
from faststream.nats import JStream, NatsBroker, PullSub
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from pydantic import ValidationError

from handlers.message import NatsMessage
from sims.adapters import jetstream as jsa
from sims.adapters.nats_accounts import (
    BOUNDARY_CONSUMER,
    BOUNDARY_STREAM,
    FORWARD_CONSUMER,
    VRU_STREAM,
    boundary_out,
    vru_out,
)
from sims.bootstrap import Runtime
from sims.boroughs import (
    BoundaryNotice,
    VruSummary,
    changes_for,
    command_id_for,
    linked_raise,
    linked_update,
    notices_for,
    unknown_neighbours,
    vru_summary,
)
from sims.errors import IncidentNotFound, ValidationFailed
from sims.messages import Event, EventType
from sims.model import TERMINAL_STATES
from sims.services import incident_id_for

log = structlog.get_logger("sims.pan_london")
SHARED_FIELDS = sorted(BoundaryNotice.model_fields)
PATIENCE = 5.0  # seconds a cross-account write is retried before the event is handled again later


async def forward(rt: Runtime, events: list[Event]) -> None:
    """The VRU's summary of the incident these events changed; notices to neighbours after a raise and after
    a change to escalated, stood down or closed."""
    incident, _seq, _all = await rt.incidents.load(events[0].incident_id)
    summary = vru_summary(incident, rt.protocol)
    await jsa.publish(rt.js, vru_out(incident.id), summary.model_dump_json().encode(),
                      {"Nats-Msg-Id": f"vru-{incident.id}-{incident.version}"}, patience=PATIENCE)
    if any(e.type is EventType.RAISED for e in events):
        # An incident already over when its raise is read (pan-London turned on for a borough with history)
        # is not sent: the neighbour has nothing left to act on.
        notices = notices_for(incident, rt.protocol) if incident.state not in TERMINAL_STATES else []
        unknown = unknown_neighbours(rt.protocol, incident.also_affects)
        if unknown:
            await rt.audit.append(chain=incident.id, actor="sims", incident_id=incident.id,
                                  action="boundary.notified", outcome="refused",
                                  detail={"unknown": unknown, "message": "not a neighbouring borough in this "
                                          "protocol's boundaries"})
    elif any(e.type is EventType.STATE_CHANGED for e in events):
        notices = changes_for(incident, rt.protocol)
    else:
        return
    for notice in notices:
        key = f"notice-{notice.from_code}-{notice.incident_id}" + (f"-v{notice.version}" if notice.kind == "changed" else "")
        ack = await jsa.publish(rt.js, boundary_out(notice.to_code), notice.model_dump_json().encode(),
                                {"Nats-Msg-Id": key}, patience=PATIENCE)
        if ack.duplicate:
            continue  # sent and audited before this event was redelivered
        await rt.audit.append(chain=incident.id, actor="sims", incident_id=incident.id, action="boundary.notified",
                              outcome="sent", detail={"to": notice.to_code, "why": notice.why, "kind": notice.kind,
                                                      "state": notice.state.value, "fields": SHARED_FIELDS})
        log.info("boundary.notified", incident_id=incident.id, to=notice.to_code, kind=notice.kind)


async def receive(rt: Runtime, subject: str, raw: bytes) -> None:
    """A neighbour's notice -> this borough's own raise (a dead letter when it cannot be one)."""
    from handlers.worker import dead_letter

    sender = subject.rsplit(".", 1)[-1]
    try:
        notice = BoundaryNotice.model_validate_json(raw)
    except ValidationError as exc:
        await dead_letter(rt, jsa.DLQ_INTAKE, raw, {"error": "invalid", "message": str(exc)[:500]}, "boundary")
        return
    if notice.from_code != sender or notice.to_code != rt.protocol.borough.code:
        # the import fixes the subject, naming the sender; the body must agree with it, and be for us
        await dead_letter(rt, jsa.DLQ_INTAKE, raw, {"error": "invalid", "message": f"a notice from {sender} to "
                          f"{rt.protocol.borough.code} claims to come from {notice.from_code} to {notice.to_code}"},
                          "boundary")
        return
    if notice.kind == "changed":
        linked_id = incident_id_for(command_id_for(notice))
        try:
            await rt.incidents.load(linked_id)
        except IncidentNotFound:  # its raise notice never came (sent before pan-London) or was refused
            log.info("boundary.ignored", source=notice.reference, from_code=notice.from_code, state=notice.state.value)
            return
    try:
        command: Any = (linked_raise(notice, rt.protocol) if notice.kind == "raised"
                        else linked_update(notice, linked_id))
    except ValidationFailed as exc:
        await dead_letter(rt, jsa.DLQ_INTAKE, raw, exc.to_dict(), "boundary")
        return
    await jsa.publish(rt.js, jsa.CMD_SUBJECT, command.model_dump_json().encode(), {"Nats-Msg-Id": command.command_id})
    log.info("boundary.received", source=notice.reference, from_code=notice.from_code)


def attach(broker: NatsBroker, rt: Runtime) -> None:
    """Add the pan-London subscribers to a borough worker's broker (with SIMS_PAN_LONDON on; always for the
    AsyncAPI document, built with no runtime)."""
    if rt is not None and not rt.settings.pan_london:
        return

    @broker.subscriber("sims.evt.>", stream=JStream(name=jsa.EVENTS, declare=False), durable=FORWARD_CONSUMER,
                       pull_sub=PullSub(batch_size=16, timeout=1.0), ack_policy=AckPolicy.NACK_ON_ERROR,
                       title="pan-london", description="Sends the VRU a summary of each changed incident and "
                       "neighbouring boroughs a notice of each incident on their boundary (shareable fields only).")
    async def on_event(msg: NatsMessage) -> None:
        events = [Event.model_validate(item) for item in json.loads(msg.body)["events"]]
        if events:
            with structlog.contextvars.bound_contextvars(incident_id=events[0].incident_id):
                await forward(rt, events)

    @broker.subscriber("sims.boundary.in.>", stream=JStream(name=BOUNDARY_STREAM, declare=False),
                       durable=BOUNDARY_CONSUMER, pull_sub=PullSub(batch_size=16, timeout=1.0),
                       ack_policy=AckPolicy.NACK_ON_ERROR, title="boundary-intake",
                       description="Neighbouring boroughs' notices: each becomes a linked incident of this borough.")
    async def on_notice(msg: NatsMessage) -> None:
        await receive(rt, msg.raw_message.subject, msg.body)


async def overview(js: JetStreamContext) -> list[VruSummary]:
    """Every borough's incidents as the VRU sees them (its own stream), newest first."""
    found: list[VruSummary] = []
    seq = 1
    while True:
        try:
            msg = await js.get_msg(VRU_STREAM, seq, subject="vru.in.>", next=True)
        except NotFoundError:
            break
        found.append(VruSummary.model_validate_json(msg.data or b"{}"))
        seq = int(msg.seq or seq) + 1
    return sorted(found, key=lambda s: s.raised_at, reverse=True)


def overview_rows(summaries: list[VruSummary], open_only: bool = True) -> list[dict[str, Any]]:
    """Rows for the CLI and JSON: one per incident."""
    from sims.model import TERMINAL_STATES

    return [{"borough": s.borough_name, "reference": s.reference, "state": s.state.value, "type": s.type.value,
             "level": s.level.value, "ward": s.ward, "gold": s.gold, "exercise": s.exercise,
             "raised_at": s.raised_at.isoformat(), "linked_from": s.linked_from or "", "concerns": list(s.concerns)}
            for s in summaries if not (open_only and s.state in TERMINAL_STATES)]



async def setup_borough(settings: Any, url: str) -> None:
    """As the borough's admin (SIMS_NATS_CREDS): SIMS's streams and buckets, and its boundary inbox."""
    from handlers.serve import prepare_nats
    from sims.adapters.nats_accounts import ensure_boundary_stream
    from sims.adapters.nats_auth import access_for

    await prepare_nats(settings, url, embedded=True)  # embedded=True: set up as admin, not only check
    nc = await jsa.connect(url, "sims-london-setup", **access_for(settings, "admin").connect_options())
    try:
        await ensure_boundary_stream(nc.jetstream(timeout=10.0), jsa.replicas_for(nc, settings.replicas))
    finally:
        await nc.close()


async def setup_vru(url: str, access: Any, replicas: int = 0) -> None:
    """As the VRU account's admin: the overview stream."""
    from sims.adapters.nats_accounts import ensure_vru_stream

    nc = await jsa.connect(url, "sims-london-setup", **access.connect_options())
    try:
        await ensure_vru_stream(nc.jetstream(timeout=10.0), jsa.replicas_for(nc, replicas))
    finally:
        await nc.close()


async def check_ready(settings: Any, url: str) -> None:
    """A pan-London worker starts only where `sims london setup` made its boundary inbox (else a clear exit)."""
    from sims.adapters.nats_accounts import BOUNDARY_STREAM
    from sims.adapters.nats_auth import access_for

    nc = await jsa.connect(url, "sims-check", **access_for(settings, "worker").connect_options())
    try:
        await nc.jetstream(timeout=5.0).stream_info(BOUNDARY_STREAM)
    except NotFoundError:
        raise SystemExit(f"SIMS_PAN_LONDON is on but this NATS account has no {BOUNDARY_STREAM} stream: run "
                         "`sims london setup` (deploy/pan-london/README.md) first.") from None
    finally:
        await nc.close()
