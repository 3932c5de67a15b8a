"""Boundary rules between boroughs (pure), and the pan-London NATS accounts configuration they travel on."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from sims.adapters.nats_accounts import VRU, accounts_config, borough_permissions
from sims.boroughs import (
    BOUNDARY_WARD,
    NAMED,
    BoundaryNotice,
    changes_for,
    command_id_for,
    concerned,
    linked_raise,
    linked_update,
    notices_for,
    unknown_neighbours,
    vru_summary,
)
from sims.errors import ValidationFailed
from sims.model import Incident
from sims.protocol_config import ProtocolConfig, load_protocol

ROOT = Path(__file__).resolve().parents[2]
SWK = load_protocol(ROOT / "protocols" / "southwark.yaml")
LAM = load_protocol(ROOT / "protocols" / "lambeth.yaml")
AT = datetime(2026, 11, 30, 21, 40, tzinfo=timezone.utc)


def incident(ward: str, **extra: object) -> Incident:
    data: dict[str, object] = dict(id="a" * 32, reference="SWK-2026-0007", type="stabbing", level="2", occurred_at=AT,
                                   raised_at=AT, updated_at=AT, ward=ward, location="Near the station",
                                   outline="A young man was stabbed", restricted="Victim: Jordan Smith",
                                   raised_by="duty-officer")
    return Incident.model_validate({**data, **extra})


def test_the_demo_boroughs_describe_the_same_boundary_from_both_sides() -> None:
    """Every Lambeth ward Southwark names across the boundary names that Southwark ward back, and vice versa."""
    swk_pairs = {(ours, theirs) for ours, across in SWK.boundaries["LAM"].wards.items() for theirs in across}
    lam_pairs = {(theirs, ours) for ours, across in LAM.boundaries["SWK"].wards.items() for theirs in across}
    assert swk_pairs == lam_pairs
    assert all(theirs in LAM.ward_set for _, theirs in swk_pairs)
    assert len(LAM.borough.wards) == 25 and LAM.borough.code == "LAM"


def test_an_incident_concerns_a_neighbour_when_its_ward_is_on_the_boundary_or_it_is_named() -> None:
    assert concerned(SWK, "Camberwell Green") == {"LAM": BOUNDARY_WARD}
    assert concerned(SWK, "Peckham") == {}
    assert concerned(SWK, "Peckham", ("LAM",)) == {"LAM": NAMED}
    assert concerned(SWK, "Camberwell Green", ("LAM",)) == {"LAM": BOUNDARY_WARD}
    assert unknown_neighbours(SWK, ("LAM", "HAC")) == ["HAC"]
    assert concerned(SWK, "Peckham", ("HAC",)) == {}


def test_a_notice_carries_shareable_fields_only() -> None:
    [notice] = notices_for(incident("Camberwell Green"), SWK)
    assert notice.to_code == "LAM" and notice.from_code == "SWK" and notice.reference == "SWK-2026-0007"
    assert notice.their_wards == ("Myatt's Fields", "Herne Hill & Loughborough Junction")
    assert "restricted" not in BoundaryNotice.model_fields
    assert "Jordan" not in notice.model_dump_json()
    assert notices_for(incident("Peckham"), SWK) == []


def test_a_linked_incident_is_never_forwarded_again() -> None:
    """No echo: the neighbour's linked incident, even on the boundary, sends no notice back."""
    assert notices_for(incident("Camberwell Green", linked_from="LAM-2026-0001"), SWK) == []


def test_the_neighbour_raises_its_own_linked_incident_in_its_own_ward() -> None:
    [notice] = notices_for(incident("Camberwell Green"), SWK)
    command = linked_raise(notice, LAM)
    assert command.ward == "Myatt's Fields" and command.linked_from == "SWK-2026-0007"
    assert command.command_id == command_id_for(notice) == f"boundary.SWK.{'a' * 32}"
    assert command.actor == "boundary:SWK" and command.restricted == "" and command.also_affects == ()
    assert command.outline.startswith("Linked to SWK-2026-0007 (Southwark, Camberwell Green;")
    assert command.level.value == "2" and command.type.value == "stabbing"


def test_a_named_neighbour_picks_its_ward_facing_the_incident_or_its_first_boundary_ward() -> None:
    [named] = notices_for(incident("Peckham", also_affects=("LAM",)), SWK)
    assert named.their_wards == () and named.why == NAMED
    assert linked_raise(named, LAM).ward == "Waterloo & South Bank"
    facing = named.model_copy(update={"ward": "Dulwich Wood"})
    assert linked_raise(facing, LAM).ward == "West Dulwich"


def test_a_notice_the_receiver_cannot_place_is_refused() -> None:
    [notice] = notices_for(incident("Camberwell Green"), SWK)
    with pytest.raises(ValidationFailed, match="for LAM, this is SWK"):
        linked_raise(notice, SWK)
    alone = LAM.model_copy(update={"boundaries": {}})
    stranger = notice.model_copy(update={"their_wards": ()})
    with pytest.raises(ValidationFailed, match="no ward on its boundary with Southwark"):
        linked_raise(stranger, alone)


def test_the_vru_summary_holds_no_restricted_detail() -> None:
    summary = vru_summary(incident("Camberwell Green"), SWK)
    assert summary.borough == "SWK" and summary.concerns == ("LAM",) and summary.ward == "Camberwell Green"
    assert "Jordan" not in summary.model_dump_json() and "Near the station" not in summary.model_dump_json()
    assert vru_summary(incident("Camberwell Green", linked_from="LAM-2026-0001"), SWK).concerns == ()


def test_a_boundary_naming_an_unknown_ward_or_the_borough_itself_is_refused() -> None:
    data = SWK.model_dump()
    with pytest.raises(ValueError, match="'Brixton' is not a ward of Southwark"):
        ProtocolConfig.model_validate({**data, "boundaries": {"LAM": {"name": "Lambeth", "wards": {"Brixton": []}}}})
    with pytest.raises(ValueError, match="own code"):
        ProtocolConfig.model_validate({**data, "boundaries": {"SWK": {"name": "Southwark"}}})


def test_accounts_open_one_subject_per_direction_and_each_only_to_its_sender() -> None:
    keys = {code: {"admin": f"U{code}A", "worker": f"U{code}W", "web": f"U{code}B"} for code in ("SWK", "LAM", "HAC")}
    text = accounts_config(keys, {"admin": "UVA", "viewer": "UVV"}, [("SWK", "LAM")])
    import json

    accounts = json.loads(text.removeprefix("accounts "))
    assert set(accounts) == {"SWK", "LAM", "HAC", VRU}
    assert accounts["LAM"]["exports"] == [{"service": "sims.boundary.in.SWK", "accounts": ["SWK"]}]
    assert {"service": {"account": "LAM", "subject": "sims.boundary.in.SWK"}, "to": "sims.boundary.out.LAM"} \
        in accounts["SWK"]["imports"]
    assert accounts["HAC"]["exports"] == [] and accounts["SWK"]["exports"] == []  # one direction only
    assert {"service": "vru.in.HAC.*", "accounts": ["HAC"]} in accounts[VRU]["exports"]
    assert all(len(imp) == 2 for imp in accounts["HAC"]["imports"])
    with pytest.raises(ValueError, match="not in the deployment"):
        accounts_config(keys, {}, [("SWK", "WSM")])
    assert "sims.boundary.out.>" in borough_permissions("worker")["publish"]["allow"]
    assert "sims.boundary.out.>" not in borough_permissions("web")["publish"]["allow"]


def test_a_neighbour_is_told_when_the_incident_goes_to_gold_or_ends_and_not_why() -> None:
    assert changes_for(incident("Camberwell Green", state="active", version=4), SWK) == []
    assert changes_for(incident("Peckham", state="stood_down", version=6), SWK) == []
    [change] = changes_for(incident("Camberwell Green", state="stood_down", version=6,
                                    closed_reason="Victim Jordan Smith is safe"), SWK)
    assert change.kind == "changed" and change.state.value == "stood_down" and change.version == 6
    update = linked_update(change, "c" * 32)
    assert update.incident == "c" * 32 and update.command_id == f"boundary.SWK.{'a' * 32}.v6"
    assert update.text == "Southwark has stood down SWK-2026-0007, the incident this one is linked to."
    assert "Jordan" not in change.model_dump_json() + update.model_dump_json()
    [gold] = changes_for(incident("Camberwell Green", state="escalated", version=5), SWK)
    assert linked_update(gold, "c" * 32).text.startswith("Southwark has escalated SWK-2026-0007 to gold")
