"""Routing: who the protocol tells about an incident, once each, with every reason."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from sims.directory import DEFAULT_CONTACTS_DIR, Channel, Contact, Directory, load_directory
from sims.model import Incident, IncidentType, Level
from sims.protocol_config import ProtocolConfig, load_protocol
from sims.routing import Recipient, explain, neighbours_of, recipients_for

SOUTHWARK = load_protocol()
DEMO = load_directory(DEFAULT_CONTACTS_DIR, SOUTHWARK)
NOW = datetime(2026, 11, 30, 21, 40, tzinfo=timezone.utc)

PECKHAM_CLLRS = {"cllr-rhys-ekwueme", "cllr-saoirse-vasquez-bell", "cllr-tobi-norcross"}
RYE_LANE_CLLRS = {"cllr-zainab-okonkwo-reid", "cllr-amara-greenhalgh", "cllr-brendan-yardley"}
NEIGHBOUR_CLLRS = RYE_LANE_CLLRS | {
    "cllr-rosa-marchetti", "cllr-samir-farrant", "cllr-tamsin-iwobi-hart",  # Faraday
    "cllr-kwame-dunmore", "cllr-lorna-underhill", "cllr-malik-nightingale",  # Nunhead & Queen's Road
    "cllr-niamh-quaye", "cllr-oskar-ingleby", "cllr-patience-blackmore",  # Old Kent Road
    "cllr-hugo-zielinski", "cllr-ines-quilliam", "cllr-jonah-jovanovic",  # St Giles
}
EVERY_INCIDENT = {
    "duty-officer-adeyemi", "duty-officer-brennan", "police-lead-whitford", "police-deputy-osei",
    "csp-lead-harrington", "vru-lead-castellanos", "wellbeing-hub-duty",
} | PECKHAM_CLLRS
BOROUGH_WIDE = {"education-sefton", "youth-services-achterberg", "police-snt-kavanagh"}
GOLD = {"chief-exec-marlowe", "cllr-priya-delacroix-moss", "comms-press-office", "comms-deputy-lund"}


def incident(level: Level = Level.LOCAL, ward: str = "Peckham", gold: bool = False,
             type_: IncidentType = IncidentType.STABBING) -> Incident:
    return Incident(id="i-1", reference="SWK-2026-0001", type=type_, level=level, occurred_at=NOW,
                    raised_at=NOW, ward=ward, location="Rye Lane, near the station", outline="A stabbing",
                    raised_by="duty-officer-adeyemi", gold=gold, updated_at=NOW)


def ids(recipients: list[Recipient]) -> set[str]:
    return {r.id for r in recipients}


def by_id(recipients: list[Recipient]) -> dict[str, Recipient]:
    return {r.id: r for r in recipients}


def test_level_1_stabbing_in_peckham_tells_exactly_the_core_roles_and_peckham_members() -> None:
    """Level 1 tells the 'every incident' roles and Peckham's councillors, not Rye Lane's next door."""
    recipients = recipients_for(incident(), DEMO, SOUTHWARK)
    assert ids(recipients) == EVERY_INCIDENT
    assert len(recipients) == len(EVERY_INCIDENT)
    assert not ids(recipients) & RYE_LANE_CLLRS


def test_level_2_adds_schools_youth_and_neighbourhood_policing() -> None:
    """Borough-wide incidents add education, youth services and neighbourhood policing."""
    assert ids(recipients_for(incident(Level.BOROUGH), DEMO, SOUTHWARK)) == EVERY_INCIDENT | BOROUGH_WIDE


def test_level_3_adds_neighbouring_wards_councillors_read_both_ways() -> None:
    """Major incidents add the councillors of every ward touching Peckham, however the YAML lists the pair."""
    assert neighbours_of(SOUTHWARK, "Peckham") == (
        "Faraday", "Nunhead & Queen's Road", "Old Kent Road", "Rye Lane", "St Giles")
    recipients = recipients_for(incident(Level.MAJOR), DEMO, SOUTHWARK)
    assert ids(recipients) == EVERY_INCIDENT | BOROUGH_WIDE | NEIGHBOUR_CLLRS
    assert by_id(recipients)["cllr-amara-greenhalgh"].reasons == (
        "ward_councillor for Rye Lane: Major incidents - neighbouring wards' members are told as well",)


def test_gold_adds_chief_executive_leader_and_comms() -> None:
    """The gold flag adds the chief executive, the leader and comms, and nothing else."""
    recipients = recipients_for(incident(gold=True), DEMO, SOUTHWARK)
    assert ids(recipients) == EVERY_INCIDENT | GOLD
    leader = by_id(recipients)["cllr-priya-delacroix-moss"]
    assert leader.roles == ("council_leader",)  # a Dulwich Wood member, told as leader only
    assert leader.reasons == ("council_leader: Gold threshold met - chief executive, leader and comms",)


def test_person_with_two_roles_appears_once_with_both_reasons() -> None:
    """The cabinet member is also a Peckham councillor: one recipient, both roles and reasons in order."""
    recipients = recipients_for(incident(), DEMO, SOUTHWARK)
    assert [r.id for r in recipients].count("cllr-rhys-ekwueme") == 1
    cabinet = by_id(recipients)["cllr-rhys-ekwueme"]
    assert cabinet.roles == ("ward_councillor", "cabinet_member_community_safety")
    assert cabinet.reasons == ("ward_councillor for Peckham: Every critical incident",
                               "cabinet_member_community_safety: Every critical incident")
    assert cabinet.channels == (Channel.SMS, Channel.WHATSAPP, Channel.EMAIL)


def test_own_ward_members_keep_both_rules_at_level_3() -> None:
    """At level 3 Peckham's members match the core rule and the neighbouring-wards rule, listed once."""
    tobi = by_id(recipients_for(incident(Level.MAJOR), DEMO, SOUTHWARK))["cllr-tobi-norcross"]
    assert tobi.roles == ("ward_councillor",)
    assert tobi.reasons == (
        "ward_councillor for Peckham: Every critical incident",
        "ward_councillor for Peckham: Major incidents - neighbouring wards' members are told as well",
    )


def test_order_is_first_matching_rule_then_name_and_is_deterministic() -> None:
    """Recipients of the first rule come first, sorted by name; later rules follow."""
    recipients = recipients_for(incident(Level.BOROUGH, gold=True), DEMO, SOUTHWARK)
    names = [r.contact.name for r in recipients]
    core = names[:len(EVERY_INCIDENT)]
    assert core == sorted(core, key=str.casefold)
    assert [r.id for r in recipients[len(EVERY_INCIDENT):]] == [
        "education-sefton", "police-snt-kavanagh", "youth-services-achterberg",  # Gareth, Insp Ruairi, Noor
        "comms-deputy-lund", "cllr-priya-delacroix-moss", "chief-exec-marlowe", "comms-press-office",
    ]
    assert recipients == recipients_for(incident(Level.BOROUGH, gold=True), DEMO, SOUTHWARK)


def test_unknown_ward_matches_no_ward_councillor() -> None:
    """An incident in a ward the protocol does not list reaches the non-ward roles only."""
    expected = (EVERY_INCIDENT - PECKHAM_CLLRS) | {"cllr-rhys-ekwueme"}  # told as cabinet member
    assert ids(recipients_for(incident(ward="Nowhere"), DEMO, SOUTHWARK)) == expected


def small() -> tuple[ProtocolConfig, Directory]:
    protocol = ProtocolConfig.model_validate({
        "borough": {"name": "T", "code": "TST", "wards": ["A", "B"], "neighbours": {"A": ["B"]}},
        "roles": {"duty_officer": "Duty", "ward_councillor": "Member"},
        "ward_roles": ["ward_councillor"],
        "notify": [{"roles": ["ward_councillor", "duty_officer"], "why": "Always"},
                   {"roles": ["ward_councillor"], "neighbouring_wards": True, "when": {"levels": ["3"]}}],
    })
    contacts = [
        Contact(id="zed", name="Zed", organisation="Council", roles=("duty_officer", "ward_councillor"),
                wards=("A",), email="zed@example.org", channels=(Channel.EMAIL,)),
        Contact(id="amy", name="Amy", organisation="Council", roles=("duty_officer",), mobile="07700 900001",
                channels=(Channel.SMS,)),
        Contact(id="bea", name="Bea", organisation="Council", roles=("ward_councillor",), wards=("B",),
                mobile="07700 900002", email="bea@example.org", channels=(Channel.WHATSAPP, Channel.EMAIL)),
    ]
    return protocol, Directory(contacts)


@pytest.mark.parametrize(("ward", "level", "expected"), [
    ("A", Level.LOCAL, ["amy", "zed"]),
    ("B", Level.LOCAL, ["amy", "bea", "zed"]),
    ("B", Level.MAJOR, ["amy", "bea", "zed"]),
    ("A", Level.MAJOR, ["amy", "zed", "bea"]),
])
def test_neighbours_are_symmetric_and_order_follows_rules(
    ward: str, level: Level, expected: list[str]
) -> None:
    """B is listed only as A's neighbour, yet a major incident in B reaches A's member, and the reverse."""
    protocol, directory = small()
    assert [r.id for r in recipients_for(incident(level, ward=ward), directory, protocol)] == expected


def test_rule_without_why_gives_role_and_ward_only() -> None:
    """A rule with no `why` still says which role and ward made the person a recipient."""
    protocol, directory = small()
    bea = by_id(recipients_for(incident(Level.MAJOR, ward="A"), directory, protocol))["bea"]
    assert bea.reasons == ("ward_councillor for B",)


def test_explain_gives_one_readable_line_per_person() -> None:
    """Each line names the person, organisation, channels in order and every reason."""
    protocol, directory = small()
    lines = explain(recipients_for(incident(Level.LOCAL, ward="A"), directory, protocol))
    assert lines == [
        "Amy (Council) via sms - duty_officer: Always",
        "Zed (Council) via email - ward_councillor for A: Always; duty_officer: Always",
    ]
