"""The protocol file is validated at start, with every problem's file and line."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from sims.errors import ConfigError
from sims.protocol_config import DEFAULT_PROTOCOL, load_protocol, parse_duration


def test_the_demo_protocol_is_valid_and_covers_southwark() -> None:
    protocol = load_protocol(DEFAULT_PROTOCOL)
    assert protocol.borough.code == "SWK" and len(protocol.borough.wards) == 23
    assert {s.id for s in protocol.steps if s.kind == "reassurance"} >= {
        "reassurance_patrols", "members_briefed", "community_leaders_contacted", "schools_informed",
        "wellbeing_outreach", "community_meeting", "public_statement", "tension_assessment"}
    gold = {r for rule in protocol.rules_for("stabbing", "1", gold=True) for r in rule.roles}
    assert {"chief_executive", "council_leader", "comms"} <= gold
    assert not {"chief_executive"} & {r for rule in protocol.rules_for("stabbing", "1") for r in rule.roles}


@pytest.mark.parametrize(("text", "expected"), [("30m", timedelta(minutes=30)), ("4h", timedelta(hours=4)),
                                                ("7d", timedelta(days=7)), ("2w", timedelta(weeks=2))])
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


def test_every_problem_is_reported_with_its_line(tmp_path: Path) -> None:
    text = DEFAULT_PROTOCOL.read_text()
    text = text.replace("code: SWK", "code: swk1")  # line of `code:`
    text = text.replace("due: 1h,", "due: soon,")
    text = text.replace("owner: comms, due: 24h, escalation: [2h, 4h]}", "owner: press_office, due: 24h}")
    bad = tmp_path / "protocol.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError) as refused:
        load_protocol(bad)
    problems = refused.value.problems
    lines = text.splitlines()
    code_line = next(i for i, line in enumerate(lines, 1) if "code: swk1" in line)
    due_line = next(i for i, line in enumerate(lines, 1) if "due: soon" in line)
    assert any(p.startswith(f"{bad}:{code_line}: borough.code") for p in problems)
    assert any(p.startswith(f"{bad}:{due_line}: steps.0.due") and "30m, 4h, 7d or 2w" in p for p in problems)
    assert len(problems) == 2  # the unknown role is reported once the fields are valid


def test_unknown_roles_and_wards_are_named(tmp_path: Path) -> None:
    text = DEFAULT_PROTOCOL.read_text().replace("owner: comms, due: 24h, escalation: [2h, 4h]}",
                                                 "owner: press_office, due: 24h}")
    text = text.replace("Surrey Docks: [South Bermondsey]", "Surrey Docks: [Atlantis]")
    bad = tmp_path / "protocol.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError) as refused:
        load_protocol(bad)
    message = str(refused.value)
    assert "unknown ward(s): Atlantis" in message


def test_not_yaml_is_refused_with_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "protocol.yaml"
    bad.write_text("borough:\n  name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"protocol.yaml:\d+: not valid YAML"):
        load_protocol(bad)
