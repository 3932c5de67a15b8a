"""The one error hierarchy of SIMS; each error keeps its data on attributes."""

from __future__ import annotations


class SimsError(Exception):
    """Root of every error SIMS raises on purpose; the message is for a person to act on."""

    code = "sims_error"

    def to_dict(self) -> dict[str, object]:
        return {"error": self.code, "message": str(self)}


class ValidationFailed(SimsError):
    """A command or a file did not pass validation; `problems` lists each one."""

    code = "invalid"

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = problems or []
        super().__init__(message if not self.problems else f"{message}: " + "; ".join(self.problems))

    def to_dict(self) -> dict[str, object]:
        return {"error": self.code, "message": str(self), "problems": self.problems}


class ConfigError(ValidationFailed):
    """A configuration file (protocol, contacts) is invalid; SIMS refuses to start on it."""

    code = "config_invalid"


class WrongChannel(ValidationFailed):
    """A command that speaks for a person (acknowledgement, task action) came by another subject."""

    code = "wrong_channel"

    def __init__(self, kind: str) -> None:
        self.kind = kind
        super().__init__(f"A {kind!r} command is accepted only from a person's link, SMS reply, the console or "
                         "the API (the acknowledgement subject); it was not applied.")


class TransitionNotAllowed(SimsError):
    """The protocol does not allow `trigger` in `state`."""

    code = "transition_not_allowed"

    def __init__(self, state: str, trigger: str, reason: str, allowed: list[str] | None = None) -> None:
        self.state = state
        self.trigger = trigger
        self.reason = reason
        self.allowed = allowed or []
        hint = f" Allowed now: {', '.join(self.allowed)}." if self.allowed else ""
        super().__init__(f"Cannot {trigger.replace('_', ' ')} an incident that is {state.replace('_', ' ')}: {reason}.{hint}")

    def to_dict(self) -> dict[str, object]:
        return {**super().to_dict(), "state": self.state, "trigger": self.trigger, "allowed": self.allowed}


class IncidentNotFound(SimsError):
    """No incident has this id or reference."""

    code = "not_found"

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"No incident with id or reference {key!r}.")


class Conflict(SimsError):
    """Someone else changed the incident since `expected` was read; reload and try again."""

    code = "conflict"

    def __init__(self, incident_id: str, expected: int, actual: int) -> None:
        self.incident_id = incident_id
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"Incident {incident_id} changed since you loaded it (you had version {expected}, it is now "
            f"version {actual}). Reload it and apply your change again."
        )

    def to_dict(self) -> dict[str, object]:
        return {**super().to_dict(), "expected_version": self.expected, "actual_version": self.actual}


class AuditBroken(SimsError):
    """The audit trail failed verification at `index`."""

    code = "audit_broken"

    def __init__(self, index: int, problem: str) -> None:
        self.index = index
        self.problem = problem
        super().__init__(f"Audit trail broken at record {index}: {problem}")
