"""The contacts directory: who holds which protocol role, where, and how to reach them.

Read from every `*.yaml` file under a folder (`SIMS_CONTACTS_DIR`, default `contacts/`) and checked
against the protocol at start; every problem is reported as `path:line: what is wrong`. No I/O
beyond reading those files.
"""

from __future__ import annotations

import os
from datetime import date
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from sims.errors import ConfigError
from sims.protocol_config import ProtocolConfig, RoleName
from sims.yamlconf import Loc, line_of, load_yaml, problems_from

DEFAULT_CONTACTS_DIR = Path(__file__).resolve().parent.parent / "contacts"
# Ofcom reserves 07700 900000-900999 for drama; libphonenumber calls them invalid, SIMS accepts them
# so that demo and test directories never hold a number that reaches a real person.
DRAMA_PREFIX, DRAMA_LENGTH = "+447700900", 13
_MOBILE_TYPES = {phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE}


def contacts_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """The folder named by SIMS_CONTACTS_DIR, or the demo `contacts/` folder."""
    return Path(environ.get("SIMS_CONTACTS_DIR") or DEFAULT_CONTACTS_DIR)


def normalise_mobile(value: object) -> str:
    """A mobile number in any common form ('07700 900123') -> E.164 ('+447700900123'); UK by default."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        try:  # YAML reads an unquoted +447700900123 as the integer 447700900123
            return normalise_mobile(f"+{value}")
        except ValueError:
            raise ValueError(f"YAML read this as the number {value}; write the mobile in quotes") from None
    text = str(value).strip()
    try:
        number = phonenumbers.parse(text, "GB")
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"{text!r} is not a phone number; write e.g. 07700 900123") from exc
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if e164.startswith(DRAMA_PREFIX) and len(e164) == DRAMA_LENGTH:
        return e164
    if not phonenumbers.is_valid_number(number):
        raise ValueError(f"{text!r} is not a valid phone number (UK numbers: 07xxx xxxxxx)")
    if phonenumbers.number_type(number) not in _MOBILE_TYPES:
        raise ValueError(f"{text!r} is not a mobile number; SMS and WhatsApp need a mobile")
    return e164


def normalise_email(value: str) -> str:
    """Check an email address's form (not whether the domain receives mail) and normalise it."""
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(f"{value!r} is not a valid email address: {exc}") from exc


class Channel(StrEnum):
    SMS = "sms"
    EMAIL = "email"
    WHATSAPP = "whatsapp"


Slug = Annotated[str, Field(pattern=r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$", max_length=64)]
Mobile = Annotated[str, BeforeValidator(normalise_mobile)]
Email = Annotated[str, AfterValidator(normalise_email)]
_ADDRESS = {Channel.SMS: "mobile", Channel.WHATSAPP: "mobile", Channel.EMAIL: "email"}


class Contact(BaseModel):
    """One person in the directory: their protocol roles, wards and channels in order of preference."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    id: Slug
    name: str = Field(min_length=1, max_length=200)
    organisation: str = Field(min_length=1, max_length=200)
    roles: tuple[RoleName, ...] = ()
    wards: tuple[str, ...] = ()
    mobile: Mobile | None = None
    email: Email | None = None
    channels: tuple[Channel, ...] = Field(min_length=1)
    deputy: Slug | None = None
    verified_on: date | None = None  # when the person last confirmed these details (drills flag old ones)
    notes: str = ""

    @model_validator(mode="after")
    def _reachable(self) -> Contact:
        if len(set(self.channels)) != len(self.channels):
            raise ValueError("a channel is listed twice")
        if self.verified_on is not None and self.verified_on > date.today():
            raise ValueError(f"verified_on {self.verified_on.isoformat()} is in the future")
        missing = [f"{c} needs {_ADDRESS[c]}" for c in self.channels if getattr(self, _ADDRESS[c]) is None]
        if missing:
            raise ValueError("; ".join(missing))
        return self

    def address(self, channel: Channel) -> str:
        """The mobile or email address that `channel` sends to."""
        value = getattr(self, _ADDRESS[channel])
        assert isinstance(value, str)
        return value


class _ContactsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    contacts: list[Contact]


@dataclass(frozen=True, slots=True)
class _Placed:
    contact: Contact
    path: Path
    loc: Loc
    lines: dict[Loc, int]

    def at(self, *sub: str | int) -> str:
        line = line_of(self.lines, self.loc + sub)
        return f"{self.path}:{line}" if line else str(self.path)


class Directory:
    """Read-only contacts with lookups by id, role, role and ward, and mobile number."""

    def __init__(self, contacts: Iterable[Contact]) -> None:
        self._all = tuple(contacts)
        self._by_id: dict[str, Contact] = {}
        self._by_role: dict[str, list[Contact]] = {}
        self._by_role_ward: dict[tuple[str, str], list[Contact]] = {}
        self._by_mobile: dict[str, Contact] = {}
        for contact in self._all:
            if contact.id in self._by_id:
                raise ConfigError("Contacts are not valid", [f"contact id {contact.id!r} is used twice"])
            self._by_id[contact.id] = contact
            for role in contact.roles:
                self._by_role.setdefault(role, []).append(contact)
                for ward in contact.wards:
                    self._by_role_ward.setdefault((role, ward), []).append(contact)
            if contact.mobile:
                self._by_mobile.setdefault(contact.mobile, contact)

    def all(self) -> tuple[Contact, ...]:
        return self._all

    def get(self, contact_id: str) -> Contact | None:
        return self._by_id.get(contact_id)

    def by_role(self, role: str) -> tuple[Contact, ...]:
        return tuple(self._by_role.get(role, ()))

    def by_role_and_ward(self, role: str, ward: str) -> tuple[Contact, ...]:
        return tuple(self._by_role_ward.get((role, ward), ()))

    def by_mobile(self, number: str) -> Contact | None:
        """The contact with this mobile; any common form is accepted ('07700 900123', E.164)."""
        try:
            return self._by_mobile.get(normalise_mobile(number))
        except ValueError:
            return None

    def deputy_of(self, contact_id: str) -> Contact | None:
        contact = self._by_id.get(contact_id)
        return self._by_id.get(contact.deputy) if contact and contact.deputy else None

    def __len__(self) -> int:
        return len(self._all)


def required_roles(protocol: ProtocolConfig) -> list[str]:
    """Roles the protocol notifies or gives steps to: somebody must hold each one."""
    roles = [role for rule in protocol.notify for role in rule.roles] + [s.owner for s in protocol.steps]
    return list(dict.fromkeys(roles))


def _read_file(path: Path, problems: list[str]) -> list[_Placed]:
    try:
        data, lines = load_yaml(path)
    except ConfigError as exc:
        problems.append(str(exc))
        return []
    try:
        _ContactsFile.model_validate(data)
    except ValidationError as exc:
        problems.extend(problems_from(exc, path, lines))
    items = data.get("contacts") if isinstance(data, dict) else None
    placed = []
    for index, item in enumerate(items if isinstance(items, list) else []):
        try:
            placed.append(_Placed(Contact.model_validate(item), path, ("contacts", index), lines))
        except ValidationError:
            continue  # already reported above, with its line
    return placed


def _cross_check(placed: list[_Placed], protocol: ProtocolConfig, problems: list[str]) -> list[_Placed]:
    first: dict[str, _Placed] = {}
    owners: dict[tuple[str, str], _Placed] = {}
    for p in placed:
        c = p.contact
        if c.id in first:
            also = first[c.id].at("id")
            problems.append(f"{p.at('id')}: contact id {c.id!r} is used twice (also at {also})")
            continue
        first[c.id] = p
        for field in ("mobile", "email"):
            value = getattr(c, field)
            other = owners.setdefault((field, value.casefold()), p) if value else p
            if other is not p:
                problems.append(f"{p.at(field)}: {field} {value} of {c.id!r} is also that of "
                                f"{other.contact.id!r} (at {other.at(field)}); "
                                "one person must have one entry")
        for i, role in enumerate(c.roles):
            if role not in protocol.roles:
                known = ", ".join(sorted(protocol.roles))
                problems.append(f"{p.at('roles', i)}: unknown role {role!r} (known: {known})")
            elif role in protocol.ward_roles and not c.wards:
                problems.append(f"{p.at('roles', i)}: {role} is held per ward; list the wards under `wards:`")
        for i, ward in enumerate(c.wards):
            if ward not in protocol.ward_set:
                problems.append(f"{p.at('wards', i)}: unknown ward {ward!r} (see the protocol's wards)")
    for p in first.values():
        deputy = p.contact.deputy
        if deputy and deputy not in first:
            problems.append(f"{p.at('deputy')}: deputy {deputy!r} is not in the directory")
    return list(first.values())


def _deputy_loops(placed: list[_Placed], problems: list[str]) -> None:
    by_id = {p.contact.id: p for p in placed}
    reported: set[str] = set()
    for start in placed:
        chain = [start.contact.id]
        nxt = start.contact.deputy
        while nxt in by_id and nxt not in chain:
            chain.append(nxt)
            nxt = by_id[nxt].contact.deputy
        if nxt == start.contact.id and not reported.intersection(chain):
            reported.update(chain)
            problems.append(f"{start.at('deputy')}: deputy loop {' -> '.join([*chain, nxt])}; "
                            "someone in the chain needs a deputy outside it")


def _coverage(folder: Path, placed: list[_Placed], protocol: ProtocolConfig, problems: list[str]) -> None:
    for role in required_roles(protocol):
        holders = [p.contact for p in placed if role in p.contact.roles]
        if not holders:
            problems.append(f"{folder}: nobody holds role {role!r} ({protocol.roles.get(role, '')}), "
                            "which the protocol needs")
        elif role in protocol.ward_roles:
            covered = {ward for c in holders for ward in c.wards}
            problems.extend(f"{folder}: no {role} for ward {ward!r}" for ward in protocol.borough.wards
                            if ward not in covered)


def _read(folder: Path, protocol: ProtocolConfig) -> tuple[list[Contact], list[str]]:
    folder = Path(folder)
    problems: list[str] = []
    if not folder.is_dir():
        return [], [f"{folder}: contacts folder not found (set SIMS_CONTACTS_DIR)"]
    files = sorted(folder.rglob("*.yaml"))
    if not files:
        problems.append(f"{folder}: no *.yaml contact files")
    placed = [p for path in files for p in _read_file(path, problems)]
    placed = _cross_check(placed, protocol, problems)
    _deputy_loops(placed, problems)
    _coverage(folder, placed, protocol, problems)
    return [p.contact for p in placed], problems


def check_directory(folder: Path, protocol: ProtocolConfig) -> list[str]:
    """Every problem in the contacts folder, each as `path:line: what is wrong`; empty when valid."""
    return _read(folder, protocol)[1]


def load_directory(folder: Path, protocol: ProtocolConfig) -> Directory:
    """The checked directory; ConfigError lists every problem when there is any."""
    contacts, problems = _read(folder, protocol)
    if problems:
        raise ConfigError(f"Contacts in {folder} are not valid", problems)
    return Directory(contacts)
