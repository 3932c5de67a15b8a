"""Who is told about an incident, and why: the protocol's notify rules applied to the directory. No I/O."""

from __future__ import annotations

from dataclasses import dataclass

from sims.directory import Channel, Contact, Directory
from sims.model import Incident
from sims.protocol_config import ProtocolConfig


@dataclass(frozen=True, slots=True, kw_only=True)
class Recipient:
    """One person to tell, once, with every role and rule that makes them a recipient."""

    contact: Contact
    roles: tuple[str, ...]
    reasons: tuple[str, ...]
    channels: tuple[Channel, ...]

    @property
    def id(self) -> str:
        return self.contact.id


def neighbours_of(protocol: ProtocolConfig, ward: str) -> tuple[str, ...]:
    """Wards sharing a boundary with `ward`; the protocol lists each pair once, so read both ways."""
    found = set(protocol.borough.neighbours.get(ward, ()))
    found.update(w for w, others in protocol.borough.neighbours.items() if ward in others)
    found.discard(ward)
    return tuple(w for w in protocol.borough.wards if w in found)


def recipients_for(incident: Incident, directory: Directory, protocol: ProtocolConfig) -> list[Recipient]:
    """Everyone the protocol tells about this incident, once each, ordered by first matching rule then name.

    Only the incident's type, level, ward and gold flag are read. Ward roles go to holders for the
    incident's ward (and its neighbours when the rule says so); an unknown ward matches no ward holder.
    """
    found: dict[str, tuple[int, Contact, list[str], list[str]]] = {}

    def add(rank: int, contact: Contact, role: str, reason: str) -> None:
        _, _, roles, reasons = found.setdefault(contact.id, (rank, contact, [], []))
        if role not in roles:
            roles.append(role)
        if reason not in reasons:
            reasons.append(reason)

    rules = protocol.rules_for(incident.type, incident.level, incident.gold)
    for rank, rule in enumerate(rules):
        why = f": {rule.why}" if rule.why else ""
        for role in rule.roles:
            if role not in protocol.ward_roles:
                for contact in directory.by_role(role):
                    add(rank, contact, role, f"{role}{why}")
                continue
            wards = [incident.ward]
            if rule.neighbouring_wards:
                wards += neighbours_of(protocol, incident.ward)
            for ward in wards:
                for contact in directory.by_role_and_ward(role, ward):
                    add(rank, contact, role, f"{role} for {ward}{why}")

    ordered = sorted(found.values(), key=lambda item: (item[0], item[1].name.casefold(), item[1].id))
    return [Recipient(contact=c, roles=tuple(roles), reasons=tuple(reasons), channels=c.channels)
            for _, c, roles, reasons in ordered]


def explain(recipients: list[Recipient]) -> list[str]:
    """One line per recipient for a preview: name, organisation, channels in order, and why."""
    return [f"{r.contact.name} ({r.contact.organisation}) via {', '.join(r.channels)} - "
            f"{'; '.join(r.reasons)}" for r in recipients]
