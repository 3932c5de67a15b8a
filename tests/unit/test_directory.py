"""The contacts directory: the demo is valid, and every kind of problem is named with file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from sims.directory import (
    DEFAULT_CONTACTS_DIR,
    Channel,
    Contact,
    check_directory,
    contacts_dir,
    load_directory,
    normalise_mobile,
    required_roles,
)
from sims.errors import ConfigError
from sims.protocol_config import ProtocolConfig, load_protocol

SOUTHWARK = load_protocol()

# A small protocol so that each test sees only the problem it is about.
SMALL = ProtocolConfig.model_validate({
    "borough": {"name": "Testham", "code": "TST", "wards": ["North", "South"],
                "neighbours": {"North": ["South"]}},
    "roles": {"duty_officer": "Duty officer", "ward_councillor": "Member", "comms": "Comms"},
    "ward_roles": ["ward_councillor"],
    "notify": [{"roles": ["duty_officer", "ward_councillor"], "why": "Always"}],
    "steps": [{"id": "statement", "title": "Statement", "owner": "comms", "due": "1h"}],
})

BASE = """\
contacts:
  - id: duty
    name: Dee Duty
    organisation: Council
    roles: [duty_officer, comms]
    mobile: 07700 900001
    email: dee@example.org
    channels: [sms, email]
  - id: north-cllr
    name: Nora North
    organisation: Council
    roles: [ward_councillor]
    wards: [North, South]
    mobile: 07700 900002
    channels: [whatsapp]
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def entry(id_: str, line_extra: str = "", mobile: str = "07700 900099") -> str:
    return (f"  - id: {id_}\n    name: {id_.title()}\n    organisation: Council\n    mobile: {mobile}\n"
            f"    channels: [sms]\n{line_extra}")


def test_demo_directory_is_valid_against_the_southwark_protocol() -> None:
    """The shipped demo contacts pass every check, so SIMS starts on them."""
    assert check_directory(DEFAULT_CONTACTS_DIR, SOUTHWARK) == []


def test_demo_directory_covers_every_ward_and_role() -> None:
    """Each ward has two or three councillors, every protocol role has a holder, numbers are drama numbers."""
    directory = load_directory(DEFAULT_CONTACTS_DIR, SOUTHWARK)
    for ward in SOUTHWARK.borough.wards:
        assert 2 <= len(directory.by_role_and_ward("ward_councillor", ward)) <= 3, ward
    for role in SOUTHWARK.roles:
        assert directory.by_role(role), role
    assert [c.id for c in directory.by_role("cabinet_member_community_safety")] == ["cllr-rhys-ekwueme"]
    mobiles = [c.mobile for c in directory.all() if c.mobile]
    assert len(set(mobiles)) == len(mobiles)
    assert all(m.startswith("+447700900") and len(m) == 13 for m in mobiles)
    assert all(c.email is None or c.email.endswith("@example.org") for c in directory.all())
    assert directory.deputy_of("police-lead-whitford").id == "police-deputy-osei"  # type: ignore[union-attr]
    assert directory.deputy_of("csp-lead-harrington").id == "csp-deputy-okafor"  # type: ignore[union-attr]


def test_valid_small_directory_loads_with_lookups(tmp_path: Path) -> None:
    """Lookups by id, role, role and ward, and mobile (in any form) find the right person."""
    write(tmp_path, "a.yaml", BASE)
    directory = load_directory(tmp_path, SMALL)
    assert [c.id for c in directory.all()] == ["duty", "north-cllr"]
    assert directory.get("duty").email == "dee@example.org"  # type: ignore[union-attr]
    assert directory.get("nobody") is None
    assert [c.id for c in directory.by_role("comms")] == ["duty"]
    assert [c.id for c in directory.by_role_and_ward("ward_councillor", "South")] == ["north-cllr"]
    assert directory.by_role_and_ward("duty_officer", "South") == ()
    assert directory.by_mobile("+447700900002").id == "north-cllr"  # type: ignore[union-attr]
    assert directory.by_mobile("07700 900001").id == "duty"  # type: ignore[union-attr]
    assert directory.by_mobile("not a number") is None
    assert directory.deputy_of("duty") is None


def test_mobile_is_normalised_to_e164() -> None:
    """UK numbers in everyday form become E.164; the Ofcom drama range is accepted."""
    assert normalise_mobile("07700 900123") == "+447700900123"
    assert normalise_mobile("+44 (0)7700 900123") == "+447700900123"
    assert normalise_mobile("07911 123456") == "+447911123456"
    contact = Contact.model_validate({"id": "x", "name": "X", "organisation": "O", "mobile": "07700 900123",
                                      "channels": ["sms"]})
    assert contact.mobile == "+447700900123"
    assert contact.address(Channel.SMS) == "+447700900123"


def test_unquoted_international_mobile_read_as_integer_by_yaml_is_accepted() -> None:
    """`mobile: +447700900123` unquoted is an integer to YAML; it is read back as the number meant."""
    assert normalise_mobile(447700900123) == "+447700900123"
    with pytest.raises(ValueError, match="in quotes"):
        normalise_mobile(83)  # what YAML makes of `mobile: 0123`


@pytest.mark.parametrize("bad", ["0123", "020 7946 0000", "hello"])
def test_bad_or_landline_numbers_are_refused(bad: str) -> None:
    """Numbers that are invalid, or landlines that cannot take SMS, are refused."""
    with pytest.raises(ValueError):
        normalise_mobile(bad)


def test_contacts_dir_comes_from_the_environment() -> None:
    """SIMS_CONTACTS_DIR names the folder; without it the demo folder is used."""
    assert contacts_dir({"SIMS_CONTACTS_DIR": "/srv/contacts"}) == Path("/srv/contacts")
    assert contacts_dir({}) == DEFAULT_CONTACTS_DIR


def test_required_roles_are_notify_roles_and_step_owners() -> None:
    """Roles in notify rules and step owners must be held; others are optional."""
    assert required_roles(SMALL) == ["duty_officer", "ward_councillor", "comms"]


def test_invalid_fields_are_reported_with_file_and_line(tmp_path: Path) -> None:
    """A bad number, bad email, channel without address and no channels each name their line."""
    path = write(tmp_path, "b.yaml", BASE + """\
  - id: bad-number
    name: Bad Number
    organisation: Council
    mobile: 0770 0123
    channels: [sms]
  - id: bad-email
    name: Bad Email
    organisation: Council
    email: not-an-email
    channels: [email]
  - id: no-address
    name: No Address
    organisation: Council
    email: na@example.org
    channels: [whatsapp]
  - id: no-channel
    name: No Channel
    organisation: Council
    email: nc@example.org
    channels: []
""")
    problems = check_directory(tmp_path, SMALL)
    assert len(problems) == 4
    assert problems[0].startswith(f"{path}:19: contacts.2.mobile:") and "'0770 0123'" in problems[0]
    assert problems[1].startswith(f"{path}:24: contacts.3.email:") and "not-an-email" in problems[1]
    assert problems[2].startswith(f"{path}:26: contacts.4:") and "whatsapp needs mobile" in problems[2]
    assert problems[3].startswith(f"{path}:35: contacts.5.channels:")


def test_bad_yaml_and_missing_contacts_key_are_reported(tmp_path: Path) -> None:
    """A file that is not YAML, or has no `contacts:` list, is reported and other files are still checked."""
    write(tmp_path, "a.yaml", BASE)
    broken = write(tmp_path, "b.yaml", "contacts:\n  - id: [unclosed\n")
    other = write(tmp_path, "c.yaml", "people: []\n")
    problems = check_directory(tmp_path, SMALL)
    assert problems[0].startswith(f"{broken}:") and "not valid YAML" in problems[0]
    assert f"{other}:1: contacts: Field required" in problems
    assert f"{other}:1: people: Extra inputs are not permitted" in problems
    assert len(problems) == 3


def test_duplicate_id_reports_both_places(tmp_path: Path) -> None:
    """The same id in two files names both files and lines."""
    write(tmp_path, "a.yaml", BASE)
    second = write(tmp_path, "b.yaml", "contacts:\n" + entry("duty", mobile="07700 900050"))
    assert check_directory(tmp_path, SMALL) == [
        f"{second}:2: contact id 'duty' is used twice (also at {tmp_path / 'a.yaml'}:2)"
    ]


def test_same_mobile_or_email_for_two_people_is_refused(tmp_path: Path) -> None:
    """Two entries sharing a mobile (in any form) or an email (in any case) are one person entered twice."""
    write(tmp_path, "a.yaml", BASE)
    second = write(tmp_path, "b.yaml", "contacts:\n" + entry("dee-again", "    email: DEE@example.org\n",
                                                             mobile="+44 7700 900001"))
    assert check_directory(tmp_path, SMALL) == [
        f"{second}:5: mobile +447700900001 of 'dee-again' is also that of 'duty' "
        f"(at {tmp_path / 'a.yaml'}:6); one person must have one entry",
        f"{second}:7: email DEE@example.org of 'dee-again' is also that of 'duty' "
        f"(at {tmp_path / 'a.yaml'}:7); one person must have one entry",
    ]


def test_same_email_for_two_people_is_refused(tmp_path: Path) -> None:
    """An email already used by someone else is reported at its line."""
    write(tmp_path, "a.yaml", BASE)
    second = write(tmp_path, "b.yaml", "contacts:\n" + entry("dee-again", "    email: dee@example.org\n"))
    assert check_directory(tmp_path, SMALL) == [
        f"{second}:7: email dee@example.org of 'dee-again' is also that of 'duty' "
        f"(at {tmp_path / 'a.yaml'}:7); one person must have one entry"
    ]


def test_unknown_role_unknown_ward_and_ward_role_without_wards(tmp_path: Path) -> None:
    """Each names the line of the offending item."""
    write(tmp_path, "a.yaml", BASE)
    path = write(tmp_path, "b.yaml", "contacts:\n"
                 + entry("x", "    roles: [duty_officer, mayor]\n    wards: [Atlantis]\n")
                 + entry("y", "    roles: [ward_councillor]\n", mobile="07700 900098"))
    problems = check_directory(tmp_path, SMALL)
    assert len(problems) == 3
    assert problems[0].startswith(f"{path}:7: unknown role 'mayor'")
    assert problems[1].startswith(f"{path}:8: unknown ward 'Atlantis'")
    assert problems[2] == f"{path}:14: ward_councillor is held per ward; list the wards under `wards:`"


def test_unknown_deputy_is_reported(tmp_path: Path) -> None:
    """A deputy id that is not in any file is reported at the deputy line."""
    path = write(tmp_path, "a.yaml", BASE + "    deputy: ghost\n")
    assert check_directory(tmp_path, SMALL) == [f"{path}:16: deputy 'ghost' is not in the directory"]


def test_deputy_loops_are_reported_once(tmp_path: Path) -> None:
    """A -> B -> A and A -> A are loops; a chain that ends is not."""
    write(tmp_path, "a.yaml", BASE)
    path = write(tmp_path, "b.yaml", "contacts:\n"
                 + entry("a", "    deputy: b\n", mobile="07700 900091")
                 + entry("b", "    deputy: a\n", mobile="07700 900092")
                 + entry("c", "    deputy: c\n", mobile="07700 900093")
                 + entry("d", "    deputy: a\n", mobile="07700 900094"))
    assert check_directory(tmp_path, SMALL) == [
        f"{path}:7: deputy loop a -> b -> a; someone in the chain needs a deputy outside it",
        f"{path}:19: deputy loop c -> c; someone in the chain needs a deputy outside it",
    ]


def test_required_role_without_holder_and_ward_without_councillor(tmp_path: Path) -> None:
    """A role the protocol needs that nobody holds, and a ward with no councillor, are both reported."""
    write(tmp_path, "a.yaml", """\
contacts:
  - id: duty
    name: Dee Duty
    organisation: Council
    roles: [duty_officer]
    mobile: 07700 900001
    channels: [sms]
  - id: north-cllr
    name: Nora North
    organisation: Council
    roles: [ward_councillor]
    wards: [North]
    mobile: 07700 900002
    channels: [sms]
""")
    assert check_directory(tmp_path, SMALL) == [
        f"{tmp_path}: no ward_councillor for ward 'South'",
        f"{tmp_path}: nobody holds role 'comms' (Comms), which the protocol needs",
    ]


def test_missing_or_empty_folder(tmp_path: Path) -> None:
    """A folder that does not exist, or holds no YAML files, is a problem rather than an empty directory."""
    assert check_directory(tmp_path / "nope", SMALL) == [
        f"{tmp_path / 'nope'}: contacts folder not found (set SIMS_CONTACTS_DIR)"
    ]
    assert f"{tmp_path}: no *.yaml contact files" in check_directory(tmp_path, SMALL)


def test_load_directory_raises_config_error_with_every_problem(tmp_path: Path) -> None:
    """load_directory refuses an invalid folder and lists all its problems."""
    text = BASE.replace("07700 900002", "0123").replace("    channels: [sms, email]\n",
                                                        "    channels: [sms, email]\n    deputy: ghost\n")
    path = write(tmp_path, "a.yaml", text)
    with pytest.raises(ConfigError) as caught:
        load_directory(tmp_path, SMALL)
    assert caught.value.problems == [
        f"{path}:15: contacts.1.mobile: Value error, YAML read this as the number 83; "
        "write the mobile in quotes",
        f"{path}:9: deputy 'ghost' is not in the directory",
        f"{tmp_path}: nobody holds role 'ward_councillor' (Member), which the protocol needs",
    ]


def test_verified_on_is_read_and_feeds_the_drill_report_and_a_future_date_is_refused() -> None:
    """`verified_on` is when a person last confirmed their details; old ones show up as stale in drills."""
    from datetime import date, datetime, timezone

    from types import SimpleNamespace

    from sims.drills import people

    demo = load_directory(DEFAULT_CONTACTS_DIR, load_protocol())
    flagged = [c for c in demo.all() if c.verified_on is not None]
    assert [(c.id, c.verified_on) for c in flagged] == [("cllr-oskar-ingleby", date(2025, 1, 15))]
    found = people(SimpleNamespace(directory=demo))  # type: ignore[arg-type]
    assert found["cllr-oskar-ingleby"].verified_on == date(2025, 1, 15)
    assert found["duty-officer-adeyemi"].verified_on is None
    with pytest.raises(ValueError, match="in the future"):
        Contact.model_validate({"id": "x", "name": "X", "organisation": "O", "mobile": "07700 900123",
                                "channels": ["sms"], "verified_on": "2999-01-01"})
    assert datetime.now(timezone.utc).date() > date(2025, 1, 15)
