"""The Critical Incident Fund claim of an incident: stored in KV `sims_funds`, every decision audited."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from sims import fund
from sims.errors import IncidentNotFound, ValidationFailed
from sims.ports import AuditLog, Clock, KeyValue

BUCKET = "sims_funds"
VRU_ROLE = "vru_lead"


@dataclass
class FundService:
    kv: KeyValue
    audit: AuditLog
    clock: Clock
    directory: Any  # sims.directory.Directory: who holds the VRU role

    async def claim(self, incident_id: str) -> fund.Claim | None:
        stored = await self.kv.get(BUCKET, incident_id)
        return fund.Claim.model_validate(stored) if stored else None

    def role_of(self, actor: str) -> str:
        """The VRU role only for a directory person who holds it; anyone else acts as the borough."""
        person = self.directory.get(actor) if self.directory else None
        return VRU_ROLE if person is not None and VRU_ROLE in person.roles else "borough"

    async def apply(self, command: fund.FundCommand, incident_date: date) -> fund.Claim:
        """Decide and store with compare-and-set; the first edit drafts the claim (one per incident)."""
        if isinstance(command, (fund.ApproveClaim, fund.DeclineClaim)):
            command = command.model_copy(update={"actor_role": self.role_of(command.actor)})
        now = self.clock.now()
        outcome: dict[str, fund.Claim] = {}

        def change(old: dict[str, Any] | None) -> dict[str, Any]:
            if old is None:
                if not isinstance(command, fund.EditClaim):
                    raise ValidationFailed("There is no claim yet", ["start one with an edit (purpose, activity, lines)"])
                claim = fund.new_claim(command.incident_id, incident_date, actor=command.actor, now=now)
            else:
                claim = fund.Claim.model_validate(old)
            outcome["claim"] = fund.decide(claim, command, now)
            return outcome["claim"].model_dump(mode="json")

        await self.kv.update(BUCKET, command.incident_id, change)
        claim = outcome["claim"]
        await self.audit.append(chain=command.incident_id, actor=command.actor, incident_id=command.incident_id,
                                action=f"fund.{command.trigger.value}", outcome=claim.state.value,
                                detail={"version": claim.version, "requested": str(claim.requested_total),
                                        "approved": str(claim.approved_amount) if claim.approved_amount is not None else None,
                                        "spent": str(claim.spent_total), "note": claim.history[-1].note})
        return claim


__all__ = ["FundService", "IncidentNotFound"]
