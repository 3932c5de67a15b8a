"""Use cases: load -> decide -> append events -> audit -> record the result. Only here are ports awaited."""

from __future__ import annotations

import asyncio
import random
import re
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, cast

import structlog
from pydantic import BaseModel

from sims import protocol, tasks
from sims.errors import Conflict, IncidentNotFound, SimsError, ValidationFailed, WrongChannel
from sims.messages import (
    FUND_COMMANDS,
    Acknowledge,
    ActOnTask,
    ApproveBriefing,
    EscalateTask,
    Command,
    IncidentCommand,
    ErasePersonalData,
    DraftBriefing,
    Event,
    EventType,
    RaiseIncident,
    SendUpdate,
    Transition,
    UpdateIncident,
    is_acknowledgement,
)
from sims.crypto import ERASED, UNAVAILABLE, UNREADABLE, SealBroken, fingerprint, is_sealed, seal, unseal
from sims.model import Incident, Restricted
from sims.retention import decide_erase
from sims.ports import AuditLog, Clock, EventStore, KeyValue, StaleSequence
from sims.protocol_config import ProtocolConfig

log = structlog.get_logger("sims.services")
REFERENCE = re.compile(r"^[A-Z]{2,5}-\d{4}-\d{4,}$")
INCIDENT_ID = re.compile(r"^[A-Za-z0-9_-]+\Z")
NAMESPACE = uuid.UUID("0f4c5d1e-6a7b-4c8d-9e0f-5a1b2c3d4e5f")
MAX_RETRIES = 50
CACHE_SIZE = 2048
SYSTEM_CHAIN = "system"
INCIDENTS = "sims_incidents"  # KV bucket: incident id -> current state (the projection written here)


class Result(BaseModel):
    """What a caller gets back for a command: the incident it touched, or the error."""

    ok: bool
    command_id: str
    kind: str
    incident_id: str | None = None
    reference: str | None = None
    version: int | None = None
    state: str | None = None
    error: dict[str, Any] | None = None
    dead_letter: bool = False
    detail: dict[str, Any] | None = None


def incident_id_for(command_id: str) -> str:
    """A raise's incident id follows from its idempotency key, so a re-sent raise finds its incident."""
    return uuid.uuid5(NAMESPACE, command_id).hex


def _redacted(command: Command | ErasePersonalData, key: bytes | None = None) -> dict[str, Any]:
    """The command for the audit trail: restricted text only as a hash keyed by the incident's data key
    (unguessable, and unlinkable once the key is destroyed); without a key, only its length."""
    data = command.model_dump(mode="json")
    if data.get("restricted"):
        text = str(data["restricted"])
        data["restricted"] = fingerprint(key, text) if key else f"withheld ({len(text)} characters)"
    return data


@dataclass
class IncidentService:
    """Applies commands to incidents; one writer path for every intake (CLI, HTTP, NATS)."""

    store: EventStore
    audit: AuditLog
    kv: KeyValue
    protocol: ProtocolConfig
    clock: Clock
    directory: Any = None  # sims.directory.Directory: task owners and deputies
    fund: Any = None  # sims.fund_service.FundService
    on_fund_submitted: Any = None  # async (incident, claim) -> None: tell the VRU
    on_fund_changed: Any = None  # async (incident, claim) -> None: set the claim's deadline timers
    keys: Any = None  # sims.adapters.keystore.NatsKeyStore: per-incident data keys (audit fingerprints)
    _cache: OrderedDict[str, tuple[Incident, int]] = field(default_factory=OrderedDict)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    async def resolve(self, key: str) -> str:
        if REFERENCE.match(key):
            found = await self.kv.get("sims_refs", f"ref.{key}")
            if not found:
                raise IncidentNotFound(key)
            return str(found)
        if not INCIDENT_ID.match(key):  # an id is one subject token: no wildcards (*, >), dots or spaces
            raise IncidentNotFound(key)
        return key

    def _owner_for(self, role: str, ward: str) -> str | None:
        """The person a step's role resolves to: the ward's holder for ward roles, else the first holder."""
        if self.directory is None:
            return None
        people = (self.directory.by_role_and_ward(role, ward) if role in self.protocol.ward_roles
                  else self.directory.by_role(role))
        return people[0].id if people else None

    def _deputy_of(self, contact_id: str) -> str | None:
        deputy = self.directory.deputy_of(contact_id) if self.directory is not None else None
        return deputy.id if deputy else None

    async def _known(self, key: str | None) -> Incident | None:
        """The incident a refused command named, if it exists (for its audit chain and the answer)."""
        if not key:
            return None
        try:
            incident, _ = await self._current(await self.resolve(key))
        except IncidentNotFound:
            return None
        return incident

    async def load(self, incident_id: str) -> tuple[Incident, int, list[Event]]:
        """The incident replayed from all its events (the truth), its last sequence and the events."""
        events, seq = await self.store.load(incident_id)
        incident = protocol.replay(events)
        if incident is None:
            raise IncidentNotFound(incident_id)
        return incident, seq, events

    async def _current(self, incident_id: str) -> tuple[Incident, int]:
        """The incident brought up to date from the cache plus any newer events."""
        cached = self._cache.get(incident_id)
        incident, seq = cached if cached else (None, 0)
        events, seq = await self.store.load(incident_id, after=seq)
        for event in events:
            incident = protocol.evolve(incident, event)
        if incident is None:
            raise IncidentNotFound(incident_id)
        self._remember(incident, seq)
        return incident, seq

    async def current(self, key: str) -> Incident:
        """The incident as it is now: the cached state brought up to date with newer events."""
        incident, _ = await self._current(await self.resolve(key))
        return incident

    async def opened(self, incident: Incident) -> Incident:
        """A stored projection (`sims_incidents`) with its sealed restricted details opened."""
        value = cast(Restricted, incident.restricted).reveal()
        if not is_sealed(value):
            return incident
        key = await self._audit_key(incident.id)
        try:
            text = unseal(key, value, incident_id=incident.id, field="restricted") if key else (
                ERASED if incident.erased_at else UNAVAILABLE)
        except SealBroken:
            log.error("projection.sealed_value_broken", incident_id=incident.id)
            text = UNREADABLE
        return incident.model_copy(update={"restricted": Restricted(text)})

    def _remember(self, incident: Incident, seq: int) -> None:
        self._cache[incident.id] = (incident, seq)
        self._cache.move_to_end(incident.id)
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)

    async def _audit_key(self, incident_id: str | None) -> bytes | None:
        if self.keys is None or not incident_id:
            return None
        key: bytes | None = await self.keys.get(incident_id)
        return key

    async def handle(self, command: Command | ErasePersonalData, *, person_channel: bool = True,
                     attestation: dict[str, str] | None = None) -> Result:
        """Apply one command exactly once; a repeated command id returns the first result.

        `person_channel` is False when the command came by a subject other than the acknowledgement
        subject; an acknowledgement or task action is then refused (a worker cannot forge one).
        `attestation`: the web's signature of the command, kept in its audit record.
        """
        previous = await self.kv.get("sims_results", command.command_id)
        if previous is not None:
            return Result.model_validate(previous)
        log_ = log.bind(command_id=command.command_id, kind=command.kind)
        if isinstance(command, FUND_COMMANDS):
            return await self._fund(command, log_, person_channel)
        try:
            if is_acknowledgement(command) and not person_channel:
                raise WrongChannel(command.kind)
            incident, events = await self._apply(command)
        except SimsError as exc:
            known = await self._known(getattr(command, "incident", None))
            result = Result(ok=False, command_id=command.command_id, kind=command.kind, error=exc.to_dict(),
                            dead_letter=isinstance(exc, ValidationFailed),
                            incident_id=known.id if known else None, reference=known.reference if known else None,
                            version=known.version if known else None, state=known.state.value if known else None)
            await self.audit.append(
                chain=known.id if known else SYSTEM_CHAIN, actor=command.actor,
                incident_id=known.id if known else None, action=f"command.{command.kind}",
                outcome=f"refused: {exc.code}",
                detail={"command": _redacted(command, await self._audit_key(known.id if known else None)),
                        "reason": str(exc)},
            )
            await self.kv.put("sims_results", command.command_id, result.model_dump(mode="json"))
            log_.info("command.refused", error=exc.code, reason=str(exc))
            return result
        await self._record(command, incident, events, attestation)
        result = Result(ok=True, command_id=command.command_id, kind=command.kind, incident_id=incident.id,
                        reference=incident.reference, version=incident.version, state=incident.state.value)
        await self.kv.put("sims_results", command.command_id, result.model_dump(mode="json"))
        log_.info("command.applied", incident_id=incident.id, state=incident.state.value)
        return result

    async def _fund(self, command: Any, log_: Any, person_channel: bool = True) -> Result:
        """A Critical Incident Fund command: the claim is its own small document beside the incident."""
        try:
            if is_acknowledgement(command) and not person_channel:  # a decision only the VRU lead makes
                raise WrongChannel(command.kind)
            incident_id = await self.resolve(command.incident_id)
            incident, _ = await self._current(incident_id)
            claim = await self.fund.apply(command.model_copy(update={"incident_id": incident.id}),
                                          incident.occurred_at.date())
            result = Result(ok=True, command_id=command.command_id, kind=command.kind, incident_id=incident.id,
                            reference=incident.reference, version=incident.version, state=incident.state.value,
                            detail={"claim_state": claim.state.value, "claim_version": claim.version,
                                    "requested": str(claim.requested_total), "spent": str(claim.spent_total),
                                    "approved": None if claim.approved_amount is None else str(claim.approved_amount)})
            if claim.state.value == "submitted" and self.on_fund_submitted is not None:
                await self.on_fund_submitted(incident, claim)
            if self.on_fund_changed is not None:
                await self.on_fund_changed(incident, claim)
        except SimsError as exc:
            known = await self._known(command.incident_id)
            result = Result(ok=False, command_id=command.command_id, kind=command.kind, error=exc.to_dict(),
                            incident_id=known.id if known else None, reference=known.reference if known else None)
            await self.audit.append(chain=known.id if known else SYSTEM_CHAIN, actor=command.actor,
                                    incident_id=known.id if known else None, action=f"command.{command.kind}",
                                    outcome=f"refused: {exc.code}", detail={"reason": str(exc)})
            log_.info("command.refused", error=exc.code, reason=str(exc))
        await self.kv.put("sims_results", command.command_id, result.model_dump(mode="json"))
        return result

    async def _record(self, command: Command | ErasePersonalData, incident: Incident, events: list[Event],
                      attestation: dict[str, str] | None = None) -> None:
        await self.audit.append(chain=incident.id, actor=command.actor, incident_id=incident.id,
                                action=f"command.{command.kind}", outcome="accepted" if events else "no change",
                                detail={"command": _redacted(command, await self._audit_key(incident.id)),
                                        "version": incident.version,
                                        **({"attestation": attestation} if attestation else {})})
        for event in events:
            if event.type is EventType.BRIEFING_DRAFTED:  # each version of the briefing, word for word
                await self.audit.append(chain=incident.id, actor=event.actor, incident_id=incident.id,
                                        action="briefing.drafted", outcome=f"version {event.data['version']}",
                                        detail={"talking_points": event.data["talking_points"]})
        for event in events:
            if event.type is EventType.STATE_CHANGED:
                await self.audit.append(chain=incident.id, actor=event.actor, incident_id=incident.id,
                                        action="transition", outcome=f"{event.data['from']} -> {event.data['to']}",
                                        detail={"trigger": event.data["trigger"], "reason": event.data["reason"]})
        await self._project(incident)

    async def _project(self, incident: Incident, rebuild: bool = False) -> None:
        """Store the incident's current state; its restricted details sealed, as in the events stream
        (a KV value replaced is gone from the bucket, but its bytes may stay on disk until compaction).

        Never backwards: two commands on one incident are recorded at once (by one worker's concurrent
        handlers, or by two workers), so a later version may be stored first; an earlier one is then
        not stored over it (compare-and-set on the version), nor is the same version stored again (a command
        redelivered, or one that changed nothing). `rebuild` stores it whatever is there.
        """
        data = incident.model_dump(mode="json")
        key = await self._audit_key(incident.id) if data.get("restricted") else None
        if key is not None:
            data["restricted"] = seal(key, data["restricted"], incident_id=incident.id, field="restricted")

        if rebuild:
            await self.kv.put(INCIDENTS, incident.id, data)
            return

        def newest(stored: dict[str, Any] | None) -> dict[str, Any]:
            if stored is None or int(stored.get("version", 0)) < incident.version:
                return data
            return stored  # unchanged: not written

        await self.kv.update(INCIDENTS, incident.id, newest)

    async def reproject(self, incident_id: str) -> Incident:
        """Rebuild one incident's stored projection from its events (after a restore, or a new field)."""
        incident, seq, _events = await self.load(incident_id)
        await self._project(incident, rebuild=True)
        self._remember(incident, seq)
        return incident

    async def _apply(self, command: RaiseIncident | IncidentCommand | ErasePersonalData) -> tuple[Incident, list[Event]]:
        if isinstance(command, RaiseIncident):
            return await self._raise(command)
        incident_id = await self.resolve(command.incident)
        async with self._locks.setdefault(incident_id, asyncio.Lock()):
            return await self._apply_to(incident_id, command)

    async def _apply_to(self, incident_id: str,
                        command: IncidentCommand | ErasePersonalData) -> tuple[Incident, list[Event]]:
        for attempt in range(MAX_RETRIES):
            incident, seq = await self._current(incident_id)
            if command.expected_version is not None and command.expected_version != incident.version:
                raise Conflict(incident.id, command.expected_version, incident.version)
            now = self.clock.now()
            if isinstance(command, UpdateIncident):
                new = protocol.decide_update(incident, command, now)
            elif isinstance(command, (DraftBriefing, ApproveBriefing)):
                new = protocol.decide_briefing(incident, command, now)
            elif isinstance(command, SendUpdate):
                new = protocol.decide_send_update(incident, command, now)
            elif isinstance(command, ActOnTask):
                new = protocol.decide_task(incident, command, now, self._deputy_of)
            elif isinstance(command, EscalateTask):
                new = protocol.decide_escalation(incident, command, now)
            elif isinstance(command, Acknowledge):
                new = protocol.decide_acknowledge(incident, command, now)
            elif isinstance(command, ErasePersonalData):
                new = decide_erase(incident, command, now)
            else:
                assert isinstance(command, Transition)
                new = protocol.decide_transition(incident, command, now)
            if not new:
                return incident, []  # already so (a second click, a cancelled timer): nothing to append
            try:
                seq = await self.store.append(incident.id, new, seq, command.command_id)
            except StaleSequence:  # another worker appended first: decide again on the newer state
                await asyncio.sleep(random.uniform(0, 0.002 * (attempt + 1)))
                continue
            for event in new:
                incident = protocol.evolve(incident, event)
            self._remember(incident, seq)
            return incident, new
        raise Conflict(incident_id, incident.version, incident.version)

    async def _raise(self, command: RaiseIncident) -> tuple[Incident, list[Event]]:
        incident_id = incident_id_for(command.command_id)
        events, seq = await self.store.load(incident_id)
        if events:  # re-sent after its result expired: the incident exists already
            incident = protocol.replay(events)
            assert incident is not None
            return incident, []
        now = self.clock.now()
        protocol.decide_raise(command, incident_id=incident_id, reference="XXX-0000-0000",
                              wards=self.protocol.ward_set, now=now)  # validate before using a number
        year = now.year
        code = self.protocol.borough.code
        number = await self.kv.increment("sims_refs", f"seq.{code}.{year}")
        reference = f"{code}-{year}-{number:04d}"
        new = protocol.decide_raise(command, incident_id=incident_id, reference=reference,
                                    wards=self.protocol.ward_set, now=now)
        planned = tasks.plan(self.protocol.steps_for(command.type, command.level), now,
                             lambda role: self._owner_for(role, command.ward))
        if planned:
            new.append(Event(type=EventType.TASKS_PLANNED, incident_id=incident_id, at=now, actor="sims",
                             command_id=command.command_id,
                             data={"tasks": [t.model_dump(mode="json") for t in planned]}))
        try:
            await self.store.append(incident_id, new, 0, command.command_id)
        except StaleSequence:
            return await self._raise(command)  # raced with the same raise: return the winner's incident
        await self.kv.put("sims_refs", f"ref.{reference}", incident_id)
        incident = protocol.replay(new)
        assert incident is not None
        return incident, new
