"""The borough's Critical Incident Protocol as configuration: who is told, which tasks, when.

Loaded from YAML (`SIMS_PROTOCOL`) and validated at start; every problem is reported with file and
line. No I/O beyond reading that one file.
"""

from __future__ import annotations

import re
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from sims.model import IncidentType, Level
from sims.yamlconf import load_model

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(value: object) -> timedelta:
    """'30m', '4h', '7d', '2w' -> timedelta; anything else is refused with an example."""
    if isinstance(value, timedelta):
        return value
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a duration; write e.g. 30m, 4h, 7d or 2w")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
RoleName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]


class _Conf(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Borough(_Conf):
    name: str
    code: str = Field(pattern=r"^[A-Z]{2,5}$", description="Prefix of incident references, e.g. SWK.")
    timezone: str = "Europe/London"
    wards: tuple[str, ...] = Field(min_length=1)
    neighbours: dict[str, tuple[str, ...]] = {}

    @model_validator(mode="after")
    def _known_wards(self) -> Borough:
        known = set(self.wards)
        if len(known) != len(self.wards):
            raise ValueError("a ward is listed twice")
        for ward, others in self.neighbours.items():
            unknown = [w for w in (ward, *others) if w not in known]
            if unknown:
                raise ValueError(f"neighbours of {ward!r} name unknown ward(s): {', '.join(unknown)}")
        return self


class Boundary(_Conf):
    """A neighbouring borough in the same deployment (pan-London): which of our wards face which of theirs."""

    name: str = Field(min_length=1, max_length=80)
    wards: dict[str, tuple[str, ...]] = Field(default_factory=dict,
                                              description="Our ward -> their wards across the boundary.")


class When(_Conf):
    """Which incidents a rule applies to; empty lists mean all."""

    types: tuple[IncidentType, ...] = ()
    levels: tuple[Level, ...] = ()
    gold: bool | None = None

    def matches(self, type_: IncidentType, level: Level, gold: bool) -> bool:
        return ((not self.types or type_ in self.types) and (not self.levels or level in self.levels)
                and (self.gold is None or self.gold == gold))


class NotifyRule(_Conf):
    when: When = When()
    roles: tuple[RoleName, ...] = Field(min_length=1)
    neighbouring_wards: bool = Field(False, description="Also tell ward roles of neighbouring wards.")
    why: str = ""




class Step(_Conf):
    """A task, reassurance step or milestone the protocol creates for an incident."""

    id: RoleName
    title: str = Field(min_length=1, max_length=200)
    kind: str = Field("task", pattern=r"^(task|reassurance|milestone)$")
    owner: RoleName
    due: Duration = Field(description="After the incident is raised.")
    when: When = When()
    escalation: tuple[Duration, ...] = Field((), description="Reminder, deputy, duty officer: after due.")


class ProtocolConfig(_Conf):
    version: int = 1
    borough: Borough
    roles: dict[RoleName, str] = Field(min_length=1, description="Role name -> what it means.")
    ward_roles: tuple[RoleName, ...] = Field((), description="Roles held per ward (e.g. ward_councillor).")
    member_roles: tuple[RoleName, ...] = Field((), description="Elected members: they get the briefing.")
    follow_up: Duration = Field(timedelta(minutes=30),
                                description="Unacknowledged notices and briefings are sent again on the next channel.")
    notify: tuple[NotifyRule, ...] = Field(min_length=1)
    steps: tuple[Step, ...] = ()
    boundaries: dict[Annotated[str, Field(pattern=r"^[A-Z]{2,5}$")], Boundary] = Field(
        default_factory=dict, description="Neighbouring boroughs by code (see sims/boroughs.py).")

    @model_validator(mode="after")
    def _boundary_wards(self) -> ProtocolConfig:
        problems = [f"boundaries: {code} is this borough's own code" for code in self.boundaries
                    if code == self.borough.code]
        for code, boundary in self.boundaries.items():
            problems += [f"boundaries.{code}: {ward!r} is not a ward of {self.borough.name}"
                         for ward in boundary.wards if ward not in self.borough.wards]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _known_roles(self) -> ProtocolConfig:
        roles = set(self.roles)
        problems = [f"ward_roles: unknown role {r!r}" for r in self.ward_roles if r not in roles]
        problems += [f"member_roles: unknown role {r!r}" for r in self.member_roles if r not in roles]
        for i, rule in enumerate(self.notify):
            problems += [f"notify[{i}]: unknown role {r!r}" for r in rule.roles if r not in roles]
        seen: set[str] = set()
        for step in self.steps:
            if step.owner not in roles:
                problems.append(f"step {step.id!r}: unknown owner role {step.owner!r}")
            if step.id in seen:
                problems.append(f"step {step.id!r} is defined twice")
            seen.add(step.id)
        if problems:
            raise ValueError("; ".join(problems) + f" (known roles: {', '.join(sorted(roles))})")
        return self

    @cached_property
    def ward_set(self) -> frozenset[str]:
        return frozenset(self.borough.wards)

    def rules_for(self, type_: IncidentType, level: Level, gold: bool = False) -> list[NotifyRule]:
        return [rule for rule in self.notify if rule.when.matches(type_, level, gold)]

    def steps_for(self, type_: IncidentType, level: Level, gold: bool = False) -> list[Step]:
        return [step for step in self.steps if step.when.matches(type_, level, gold)]


DEFAULT_PROTOCOL = Path(__file__).resolve().parent.parent / "protocols" / "southwark.yaml"


def load_protocol(path: Path = DEFAULT_PROTOCOL) -> ProtocolConfig:
    """Read and validate a protocol file; ConfigError names each problem with file and line."""
    config, _ = load_model(path, ProtocolConfig)
    return config
