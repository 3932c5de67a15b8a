"""A Critical Incident Fund claim to the London VRU, as a table of (state, trigger) -> state with guards.

The claim is one small document per incident, so `decide(claim, command, now)` returns the next
`Claim` (version + 1, one `HistoryEntry` appended) rather than events: the history entry is the event
a service appends to the audit trail, and the claim is the snapshot it stores against `version`.
Every refusal is a `SimsError`: `TransitionNotAllowed` for a move the rules do not allow now,
`ValidationFailed` for malformed input. Money is `Decimal` in pounds and pence, never float. No I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, NamedTuple

from pydantic import BeforeValidator, Field, TypeAdapter, ValidationError, model_validator

from sims.errors import TransitionNotAllowed, ValidationFailed
from sims.ids import new_id
from sims.model import Frozen, UtcDateTime

MAX_PER_INCIDENT = Decimal("5000.00")
PENCE = Decimal("0.01")
ZERO = Decimal("0.00")
EVALUATION_AFTER_END = timedelta(weeks=8)
VRU_ROLE = "vru_lead"
_DATE: TypeAdapter[date] = TypeAdapter(date)


def money(value: object) -> Decimal:
    """`value` (str, int or Decimal) as pounds and pence; ValueError for floats and fractions of a penny."""
    if isinstance(value, (float, bool)) or not isinstance(value, (str, int, Decimal)):
        why = " (floats lose pence)" if isinstance(value, float) else ""
        raise ValueError(  # noqa: TRY004 - pydantic reports only ValueError as a validation error
            f"give amounts as text like \"1250.50\", not {type(value).__name__}{why}")
    try:
        amount = Decimal(value.strip() if isinstance(value, str) else value)
        pence = amount.quantize(PENCE, rounding=ROUND_HALF_UP) if amount.is_finite() else None
    except InvalidOperation:
        pence = None
    if pence is None:
        raise ValueError(f"{value!r} is not an amount; give pounds and pence like 1250.50")
    if pence != amount:
        raise ValueError(f"amounts are in pounds and pence (at most 2 decimal places), not {value}")
    return pence


def pounds(amount: Decimal) -> str:
    """`amount` as a person reads it: £1,250.50."""
    return f"£{amount.quantize(PENCE, rounding=ROUND_HALF_UP):,.2f}"


Money = Annotated[Decimal, BeforeValidator(money), Field(gt=0)]
Text = Annotated[str, Field(max_length=4000)]


class FundState(StrEnum):
    DRAFT = "draft"
    SUBMITTED = "submitted"
    APPROVED = "approved"
    DECLINED = "declined"
    SPEND_RECORDED = "spend_recorded"
    EVALUATED = "evaluated"
    CLOSED = "closed"


class FundTrigger(StrEnum):
    EDIT = "edit"
    SUBMIT = "submit"
    APPROVE = "approve"
    DECLINE = "decline"
    RECORD_SPEND = "record_spend"
    SUBMIT_EVALUATION = "submit_evaluation"
    CLOSE = "close"
    WITHDRAW = "withdraw"


S, T = FundState, FundTrigger

# The claim's whole life on one screen. Read a row as: in STATE, TRIGGER moves the claim to TARGET.
TRANSITIONS: dict[tuple[FundState, FundTrigger], FundState] = {
    (S.DRAFT, T.EDIT): S.DRAFT,
    (S.DRAFT, T.SUBMIT): S.SUBMITTED,
    (S.DRAFT, T.WITHDRAW): S.CLOSED,
    (S.SUBMITTED, T.APPROVE): S.APPROVED,
    (S.SUBMITTED, T.DECLINE): S.DECLINED,
    (S.SUBMITTED, T.WITHDRAW): S.CLOSED,
    (S.APPROVED, T.RECORD_SPEND): S.SPEND_RECORDED,
    (S.SPEND_RECORDED, T.RECORD_SPEND): S.SPEND_RECORDED,
    (S.SPEND_RECORDED, T.SUBMIT_EVALUATION): S.EVALUATED,
    (S.EVALUATED, T.CLOSE): S.CLOSED,
    (S.DECLINED, T.CLOSE): S.CLOSED,
}


class ClaimLine(Frozen):
    """One costed activity of the claim (a youth diversion session, a community event...)."""

    description: str = Field(min_length=1, max_length=300)
    amount: Money


class Spend(Frozen):
    """Money actually spent against the approved amount."""

    date: date
    description: str = Field(min_length=1, max_length=300)
    amount: Money
    supplier: str | None = Field(default=None, max_length=200)


class Evaluation(Frozen):
    """What the funded activity achieved, for the VRU."""

    text: Text
    outcomes: tuple[Annotated[str, Field(min_length=1, max_length=300)], ...] = ()


class HistoryEntry(Frozen):
    at: UtcDateTime
    actor: str
    trigger: FundTrigger | Literal["create"]
    note: str = ""


class Claim(Frozen):
    """One incident's claim to the Critical Incident Fund; the requested total is the sum of its lines."""

    incident_id: str = Field(min_length=1, max_length=64)
    incident_date: date
    state: FundState = FundState.DRAFT
    version: int = Field(default=1, ge=1)
    purpose: Text = ""
    planned_activity: Text = ""
    beneficiaries: Text = ""
    start_date: date | None = None
    end_date: date | None = None
    lines: tuple[ClaimLine, ...] = ()
    approved_amount: Money | None = None
    decline_reason: str | None = None
    closed_reason: str | None = None
    spend: tuple[Spend, ...] = ()
    evaluation: Evaluation | None = None
    evaluation_due: date | None = Field(default=None, description="Defaults to 8 weeks after end_date.")
    history: tuple[HistoryEntry, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _default_evaluation_due(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("evaluation_due") is not None:
            return data
        try:  # a malformed end_date is reported by its own field
            end = _DATE.validate_python(data.get("end_date"))
        except ValidationError:
            return data
        return {**data, "evaluation_due": end + EVALUATION_AFTER_END}

    @model_validator(mode="after")
    def _dates_in_order(self) -> Claim:
        if self.start_date and self.end_date and self.end_date < self.start_date:
            raise ValueError(f"end_date {self.end_date} is before start_date {self.start_date}")
        return self

    @property
    def requested_total(self) -> Decimal:
        return _total(line.amount for line in self.lines)

    @property
    def spent_total(self) -> Decimal:
        return _total(entry.amount for entry in self.spend)

    @property
    def remaining(self) -> Decimal:
        return ((self.approved_amount or ZERO) - self.spent_total).quantize(PENCE)


def _total(amounts: Iterable[Decimal]) -> Decimal:
    return sum(amounts, ZERO).quantize(PENCE)


class _FundCommand(Frozen):
    trigger: ClassVar[FundTrigger]
    command_id: str = Field(default_factory=new_id, min_length=8, max_length=128,
                            pattern=r"^[A-Za-z0-9_=-]+(\.[A-Za-z0-9_=-]+)*$")  # a NATS subject token / KV key
    actor: str = Field(min_length=1, max_length=120)
    incident_id: str = Field(min_length=1, max_length=64)


class EditClaim(_FundCommand):
    """Change a draft; only the fields given change (moving end_date moves evaluation_due with it)."""

    trigger = T.EDIT
    kind: Literal["fund_edit"] = "fund_edit"
    purpose: Text | None = None
    planned_activity: Text | None = None
    beneficiaries: Text | None = None
    start_date: date | None = None
    end_date: date | None = None
    lines: tuple[ClaimLine, ...] | None = None
    evaluation_due: date | None = None


class SubmitClaim(_FundCommand):
    trigger = T.SUBMIT
    kind: Literal["fund_submit"] = "fund_submit"


class ApproveClaim(_FundCommand):
    trigger = T.APPROVE
    kind: Literal["fund_approve"] = "fund_approve"
    actor_role: str
    amount: Money


class DeclineClaim(_FundCommand):
    trigger = T.DECLINE
    kind: Literal["fund_decline"] = "fund_decline"
    actor_role: str
    reason: str = Field(default="", max_length=2000)


class RecordSpend(_FundCommand):
    trigger = T.RECORD_SPEND
    kind: Literal["fund_record_spend"] = "fund_record_spend"
    amount: Money
    date: date
    description: str = Field(min_length=1, max_length=300)
    supplier: str | None = Field(default=None, max_length=200)


class SubmitEvaluation(_FundCommand):
    trigger = T.SUBMIT_EVALUATION
    kind: Literal["fund_submit_evaluation"] = "fund_submit_evaluation"
    text: Text = ""
    outcomes: tuple[Annotated[str, Field(min_length=1, max_length=300)], ...] = ()


class CloseClaim(_FundCommand):
    trigger = T.CLOSE
    kind: Literal["fund_close"] = "fund_close"


class WithdrawClaim(_FundCommand):
    trigger = T.WITHDRAW
    kind: Literal["fund_withdraw"] = "fund_withdraw"
    reason: str = Field(default="", max_length=2000)


FundCommand = Annotated[EditClaim | SubmitClaim | ApproveClaim | DeclineClaim | RecordSpend | SubmitEvaluation
                        | CloseClaim | WithdrawClaim, Field(discriminator="kind")]
FUND_COMMAND_ADAPTER: TypeAdapter[FundCommand] = TypeAdapter(FundCommand)


class ClaimTransitionNotAllowed(TransitionNotAllowed):
    """TransitionNotAllowed worded for a fund claim rather than an incident."""

    def __init__(self, state: str, trigger: str, reason: str, allowed: list[str] | None = None) -> None:
        super().__init__(state, trigger, reason, allowed)
        hint = f" Allowed now: {', '.join(self.allowed)}." if self.allowed else ""
        label = _STATE_LABELS.get(state, state.replace("_", " "))
        self.args = (f"Cannot {trigger.replace('_', ' ')} (the fund claim is {label}): {reason}.{hint}",)


_STATE_LABELS = {"draft": "a draft", "submitted": "with the VRU for a decision",
                 "spend_recorded": "recording spend"}


# Guards: return a reason to refuse, or None. Kept as data beside the table.
Guard = Callable[[Claim, Any], str | None]


def _over_cap(total: Decimal, what: str) -> str | None:
    over = total - MAX_PER_INCIDENT
    if over <= 0:
        return None
    cap = pounds(MAX_PER_INCIDENT)
    return f"{what} {pounds(total)}, which is {pounds(over)} over the {cap} limit per incident"


def _edit_changes(claim: Claim, command: EditClaim) -> dict[str, Any]:
    fields = command.model_dump(exclude_none=True, exclude={"command_id", "actor", "incident_id", "kind"})
    return {k: getattr(command, k) for k in fields if getattr(command, k) != getattr(claim, k)}


def _guard_edit(claim: Claim, command: EditClaim) -> str | None:
    if not _edit_changes(claim, command):
        return "the edit changes nothing; give at least one field with a new value"
    lines = command.lines if command.lines is not None else claim.lines
    return _over_cap(_total(line.amount for line in lines), "the lines would total")


def _guard_submit(claim: Claim, command: SubmitClaim) -> str | None:
    needed = (("the purpose (why the community needs it)", claim.purpose),
              ("the planned activity", claim.planned_activity),
              ("the beneficiaries (who, and roughly how many)", claim.beneficiaries),
              ("a start date", claim.start_date), ("an end date", claim.end_date),
              ("at least one costed line", claim.lines))
    missing = [name for name, value in needed if not value]
    if missing:
        return "it is not ready to send to the VRU; add " + ", ".join(missing)
    return _over_cap(claim.requested_total, "the lines total")


def _vru_only(role: str, what: str) -> str | None:
    if role == VRU_ROLE:
        return None
    return f"only the VRU lead ({VRU_ROLE}) can {what} a claim, not {role or 'no role'}"


def _guard_approve(claim: Claim, command: ApproveClaim) -> str | None:
    if refusal := _vru_only(command.actor_role, "approve"):
        return refusal
    if refusal := _over_cap(command.amount, "the approval is"):
        return refusal
    if command.amount > claim.requested_total:
        return (f"{pounds(command.amount)} is more than the {pounds(claim.requested_total)} requested; "
                f"approve at most {pounds(claim.requested_total)}")
    return None


def _guard_decline(claim: Claim, command: DeclineClaim) -> str | None:
    return _vru_only(command.actor_role, "decline") or _needs_reason(claim, command)


def _needs_reason(claim: Claim, command: DeclineClaim | WithdrawClaim) -> str | None:
    return "give a reason (the borough and the VRU both keep it)" if not command.reason.strip() else None


def _guard_spend(claim: Claim, command: RecordSpend) -> str | None:
    if command.amount <= claim.remaining:
        return None
    total = claim.spent_total + command.amount
    return (f"{pounds(command.amount)} would take spend to {pounds(total)}, over the "
            f"{pounds(claim.approved_amount or ZERO)} approved; {pounds(claim.remaining)} is left")


def _guard_evaluation(claim: Claim, command: SubmitEvaluation) -> str | None:
    return ("give the evaluation text and at least one outcome"
            if not command.text.strip() or not command.outcomes else None)


GUARDS: dict[FundTrigger, Guard] = {
    T.EDIT: _guard_edit, T.SUBMIT: _guard_submit, T.APPROVE: _guard_approve, T.DECLINE: _guard_decline,
    T.RECORD_SPEND: _guard_spend, T.SUBMIT_EVALUATION: _guard_evaluation, T.WITHDRAW: _needs_reason,
}

# Why a trigger is not in the table from a state: the pair first, then the trigger, then the state.
_WHY_NOT_PAIR: dict[tuple[FundState, FundTrigger], str] = {
    (S.APPROVED, T.SUBMIT_EVALUATION): "record some spend first; the evaluation reports on what was spent",
    (S.DECLINED, T.WITHDRAW): "the VRU has declined it already; close it",
}
_WHY_NOT_TRIGGER: dict[FundTrigger, str] = {
    T.EDIT: "only a draft can be edited",
    T.CLOSE: "a claim closes only after its evaluation is in or it was declined (withdraw it if undecided)",
    T.WITHDRAW: "only a draft or submitted claim can be withdrawn",
}
_WHY_NOT_STATE: dict[FundState, str] = {
    S.DRAFT: "it has not been sent to the VRU yet; complete and submit it",
    S.SUBMITTED: "it is waiting for the VRU to approve or decline it",
    S.APPROVED: "it is approved; record spend against it next",
    S.DECLINED: "the VRU declined it; close it and start a new claim if there is a case to make",
    S.SPEND_RECORDED: "spend is being recorded; record more or submit the evaluation",
    S.EVALUATED: "the evaluation is in; close it",
    S.CLOSED: "it is closed; start a new claim if there is more to fund",
}


def allowed(state: FundState) -> list[FundTrigger]:
    """The claim's next legal moves from `state`, in table order."""
    return [trigger for (s, trigger) in TRANSITIONS if s is state]


def next_state(claim: Claim, command: FundCommand) -> FundState:
    """The state `command` leads to, or TransitionNotAllowed with a reason the user can act on."""
    state, trigger = claim.state, command.trigger
    legal = [t.value for t in allowed(state)]
    target = TRANSITIONS.get((state, trigger))
    if target is None:
        by_trigger = _WHY_NOT_TRIGGER.get(trigger) if state is not S.CLOSED else None
        reason = _WHY_NOT_PAIR.get((state, trigger)) or by_trigger or _WHY_NOT_STATE[state]
        raise ClaimTransitionNotAllowed(state.value, trigger.value, reason, legal)
    guard = GUARDS.get(trigger)
    if refusal := (guard(claim, command) if guard else None):
        raise ClaimTransitionNotAllowed(state.value, trigger.value, refusal, legal)
    return target


def _problems(error: ValidationError) -> list[str]:
    return [f"{'.'.join(map(str, e['loc'])) or 'claim'}: {e['msg'].removeprefix('Value error, ')}"
            for e in error.errors()]


def _build(data: Mapping[str, Any], failed: str) -> Claim:
    try:
        return Claim.model_validate(dict(data))
    except ValidationError as error:
        raise ValidationFailed(failed, _problems(error)) from None


def new_claim(incident_id: str, incident_date: date, *, actor: str, now: datetime, purpose: str = "",
              planned_activity: str = "", beneficiaries: str = "", start_date: date | str | None = None,
              end_date: date | str | None = None, lines: Iterable[ClaimLine | Mapping[str, object]] = (),
              evaluation_due: date | str | None = None) -> Claim:
    """A draft claim for `incident_id` (version 1); ValidationFailed names every problem with the input."""
    claim = _build({"incident_id": incident_id, "incident_date": incident_date, "purpose": purpose,
                    "planned_activity": planned_activity, "beneficiaries": beneficiaries,
                    "start_date": start_date, "end_date": end_date, "lines": tuple(lines),
                    "evaluation_due": evaluation_due,
                    "history": ({"at": now, "actor": actor, "trigger": "create", "note": "claim drafted"},)},
                   "The claim was not drafted")
    if over := _over_cap(claim.requested_total, "the lines total"):
        raise ValidationFailed("The claim was not drafted", [over])
    return claim


def _effects(claim: Claim, command: FundCommand) -> tuple[dict[str, Any], str]:
    """The fields `command` changes, and the note for the history."""
    if isinstance(command, EditClaim):
        changes = _edit_changes(claim, command)
        note = "changed " + ", ".join(sorted(changes))
        if "end_date" in changes and "evaluation_due" not in changes:
            changes["evaluation_due"] = None  # the default follows the new end date
        return changes, note
    if isinstance(command, SubmitClaim):
        return {}, f"requested {pounds(claim.requested_total)}"
    if isinstance(command, ApproveClaim):
        return {"approved_amount": command.amount}, f"approved {pounds(command.amount)}"
    if isinstance(command, (DeclineClaim, WithdrawClaim)):
        field = "decline_reason" if isinstance(command, DeclineClaim) else "closed_reason"
        return {field: command.reason}, command.reason
    if isinstance(command, RecordSpend):
        entry = Spend(date=command.date, description=command.description, amount=command.amount,
                      supplier=command.supplier)
        return {"spend": (*claim.spend, entry)}, f"spent {pounds(command.amount)}: {command.description}"
    if isinstance(command, SubmitEvaluation):
        evaluation = Evaluation(text=command.text, outcomes=command.outcomes)
        return {"evaluation": evaluation}, "evaluation submitted"
    return {}, ""  # CloseClaim


def decide(claim: Claim, command: FundCommand, now: datetime) -> Claim:
    """The claim after `command`; raises TransitionNotAllowed or ValidationFailed and changes nothing."""
    if command.incident_id != claim.incident_id:
        raise ValidationFailed("The claim was not changed", [
            f"the command is for incident {command.incident_id}, this claim is for {claim.incident_id}"])
    target = next_state(claim, command)
    changes, note = _effects(claim, command)
    entry = {"at": now, "actor": command.actor, "trigger": command.trigger, "note": note}
    return _build({**dict(claim), **changes, "state": target, "version": claim.version + 1,
                   "history": (*claim.history, entry)}, "The claim was not changed")


class Deadline(NamedTuple):
    name: str
    due: date


def deadlines(claim: Claim, *, submit_within_days: int = 14) -> list[Deadline]:
    """What the borough still owes the VRU and by when, for escalation timers; names are trigger values."""
    if claim.state is S.DRAFT:
        return [Deadline(T.SUBMIT.value, claim.incident_date + timedelta(days=submit_within_days))]
    if claim.state in (S.APPROVED, S.SPEND_RECORDED) and claim.evaluation_due:
        return [Deadline(T.SUBMIT_EVALUATION.value, claim.evaluation_due)]
    return []


def _day(value: date | None) -> str:
    return f"{value.day} {value:%B %Y}" if value else "not given"


def summary(claim: Claim) -> str:
    """The claim in plain text for a VRU officer (`sims fund export`)."""
    rows = [
        f"Critical Incident Fund claim: incident {claim.incident_id} of {_day(claim.incident_date)}",
        f"State: {claim.state.value.replace('_', ' ')} (version {claim.version})",
        f"Purpose: {claim.purpose or 'not given'}",
        f"Planned activity: {claim.planned_activity or 'not given'}",
        f"Beneficiaries: {claim.beneficiaries or 'not given'}",
        f"Dates: {_day(claim.start_date)} to {_day(claim.end_date)}",
        "Lines:", *(f"  - {line.description}: {pounds(line.amount)}" for line in claim.lines),
        f"Requested: {pounds(claim.requested_total)} (limit {pounds(MAX_PER_INCIDENT)} per incident)",
    ]
    if claim.approved_amount is not None:
        rows.append(f"Approved: {pounds(claim.approved_amount)}")
    if claim.decline_reason:
        rows.append(f"Declined: {claim.decline_reason}")
    if claim.spend:
        rows.append("Spend:")
        rows += [f"  - {s.date.isoformat()} {s.description}{f' ({s.supplier})' if s.supplier else ''}: "
                 f"{pounds(s.amount)}" for s in claim.spend]
        rows.append(f"Spent: {pounds(claim.spent_total)} ({pounds(claim.remaining)} left)")
    if claim.evaluation_due and claim.evaluation is None:
        rows.append(f"Evaluation due: {_day(claim.evaluation_due)}")
    if claim.evaluation:
        rows += [f"Evaluation: {claim.evaluation.text}", *(f"  - {o}" for o in claim.evaluation.outcomes)]
    if claim.closed_reason:
        rows.append(f"Withdrawn: {claim.closed_reason}")
    return "\n".join(rows) + "\n"


__all__ = ["FUND_COMMAND_ADAPTER", "GUARDS", "MAX_PER_INCIDENT", "TRANSITIONS", "ApproveClaim", "Claim",
           "ClaimLine", "ClaimTransitionNotAllowed", "CloseClaim", "Deadline", "DeclineClaim", "EditClaim",
           "Evaluation", "FundState", "FundTrigger", "HistoryEntry", "RecordSpend", "Spend", "SubmitClaim",
           "SubmitEvaluation", "WithdrawClaim", "allowed", "deadlines", "decide", "money", "new_claim",
           "next_state", "pounds", "summary"]
