"""The Critical Incident Fund claim: every transition and refusal, the £5,000 cap, money in pence, summary."""

from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal

import pydantic
import pytest

from sims import fund
from sims.errors import TransitionNotAllowed, ValidationFailed
from sims.fund import (
    ApproveClaim,
    Claim,
    ClaimLine,
    CloseClaim,
    DeclineClaim,
    EditClaim,
    FundState,
    FundTrigger,
    RecordSpend,
    SubmitClaim,
    SubmitEvaluation,
    WithdrawClaim,
)

S, T = FundState, FundTrigger
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)
INCIDENT_DATE = date(2026, 11, 30)
LINES = (ClaimLine(description="Youth diversion sessions", amount="1250.50"),
         ClaimLine(description="Community event", amount="500"))


def draft(**overrides: object) -> Claim:
    fields: dict[str, object] = {
        "purpose": "Young people in Peckham are frightened after the stabbing on Rye Lane",
        "planned_activity": "Six evening youth diversion sessions and one community event",
        "beneficiaries": "About 60 young people aged 11-18 and their families",
        "start_date": date(2026, 12, 5), "end_date": date(2027, 1, 31), "lines": LINES}
    return fund.new_claim("i1", INCIDENT_DATE, actor="duty", now=NOW, **{**fields, **overrides})


# One valid command per trigger; each passes its guards on the claim `in_state` builds.
COMMANDS: dict[FundTrigger, fund.FundCommand] = {
    T.EDIT: EditClaim(actor="duty", incident_id="i1", purpose="Reassure young people after the stabbing"),
    T.SUBMIT: SubmitClaim(actor="duty", incident_id="i1"),
    T.APPROVE: ApproveClaim(actor="vru", incident_id="i1", actor_role="vru_lead", amount="1500.00"),
    T.DECLINE: DeclineClaim(actor="vru", incident_id="i1", actor_role="vru_lead", reason="Outside the criteria"),
    T.RECORD_SPEND: RecordSpend(actor="duty", incident_id="i1", amount="250.00", date=date(2026, 12, 6),
                                description="Hall hire", supplier="Peckham Pulse"),
    T.SUBMIT_EVALUATION: SubmitEvaluation(actor="duty", incident_id="i1", text="The sessions were full",
                                          outcomes=("48 young people attended", "No further incidents")),
    T.CLOSE: CloseClaim(actor="duty", incident_id="i1"),
    T.WITHDRAW: WithdrawClaim(actor="duty", incident_id="i1", reason="The council funds it instead"),
}
PATHS: dict[FundState, tuple[FundTrigger, ...]] = {
    S.DRAFT: (),
    S.SUBMITTED: (T.SUBMIT,),
    S.APPROVED: (T.SUBMIT, T.APPROVE),
    S.DECLINED: (T.SUBMIT, T.DECLINE),
    S.SPEND_RECORDED: (T.SUBMIT, T.APPROVE, T.RECORD_SPEND),
    S.EVALUATED: (T.SUBMIT, T.APPROVE, T.RECORD_SPEND, T.SUBMIT_EVALUATION),
    S.CLOSED: (T.SUBMIT, T.APPROVE, T.RECORD_SPEND, T.SUBMIT_EVALUATION, T.CLOSE),
}


def in_state(state: FundState) -> Claim:
    claim = draft()
    for trigger in PATHS[state]:
        claim = fund.decide(claim, COMMANDS[trigger], NOW)
    assert claim.state is state
    return claim


def approved(amount: str = "1500.00") -> Claim:
    command = ApproveClaim(actor="vru", incident_id="i1", actor_role="vru_lead", amount=amount)
    return fund.decide(in_state(S.SUBMITTED), command, NOW)


def spend(amount: str) -> RecordSpend:
    return RecordSpend(actor="duty", incident_id="i1", amount=amount, date=date(2026, 12, 8), description="Coach")


@pytest.mark.parametrize(("state", "trigger", "target"), [(s, t, v) for (s, t), v in fund.TRANSITIONS.items()])
def test_every_transition_in_the_table_moves_to_its_target(state: FundState, trigger: FundTrigger,
                                                           target: FundState) -> None:
    """Each (state, trigger) row leads to its target, bumps the version and records who did what."""
    claim = in_state(state)
    after = fund.decide(claim, COMMANDS[trigger], NOW)
    assert after.state is target
    assert after.version == claim.version + 1
    assert len(after.history) == len(claim.history) + 1
    assert (after.history[-1].trigger, after.history[-1].actor, after.history[-1].at) == (
        trigger, COMMANDS[trigger].actor, NOW)
    assert claim.state is state  # the input claim is untouched


@pytest.mark.parametrize(("state", "trigger"),
                         [(s, t) for s in FundState for t in FundTrigger if (s, t) not in fund.TRANSITIONS])
def test_every_pair_not_in_the_table_is_refused_with_what_is_allowed(state: FundState,
                                                                     trigger: FundTrigger) -> None:
    """Anything not in the table is refused, naming the state, the trigger and the legal moves."""
    with pytest.raises(TransitionNotAllowed) as refused:
        fund.decide(in_state(state), COMMANDS[trigger], NOW)
    assert (refused.value.state, refused.value.trigger) == (state.value, trigger.value)
    assert refused.value.allowed == [t.value for t in fund.allowed(state)]
    assert str(refused.value).startswith(f"Cannot {trigger.value.replace('_', ' ')} (the fund claim is ")
    assert refused.value.reason


def test_the_table_has_eleven_rows_and_closed_is_the_only_dead_end() -> None:
    assert len(fund.TRANSITIONS) == 11
    assert fund.allowed(S.DRAFT) == [T.EDIT, T.SUBMIT, T.WITHDRAW]
    assert fund.allowed(S.SUBMITTED) == [T.APPROVE, T.DECLINE, T.WITHDRAW]
    assert [s for s in FundState if not fund.allowed(s)] == [S.CLOSED]


def test_refusal_message_tells_the_officer_what_to_do() -> None:
    with pytest.raises(TransitionNotAllowed) as refused:
        fund.decide(draft(), COMMANDS[T.APPROVE], NOW)
    assert str(refused.value) == (
        "Cannot approve (the fund claim is a draft): it has not been sent to the VRU yet; complete and submit "
        "it. Allowed now: edit, submit, withdraw.")


def test_evaluation_before_any_spend_is_refused_asking_for_spend() -> None:
    with pytest.raises(TransitionNotAllowed, match="record some spend first"):
        fund.decide(in_state(S.APPROVED), COMMANDS[T.SUBMIT_EVALUATION], NOW)


@pytest.mark.parametrize("state", [S.DRAFT, S.SUBMITTED, S.APPROVED, S.SPEND_RECORDED])
def test_close_before_evaluation_or_decline_is_refused(state: FundState) -> None:
    with pytest.raises(TransitionNotAllowed, match="closes only after its evaluation is in or it was declined"):
        fund.decide(in_state(state), COMMANDS[T.CLOSE], NOW)


def test_a_closed_claim_refuses_everything_and_says_start_a_new_one() -> None:
    for trigger in FundTrigger:
        with pytest.raises(TransitionNotAllowed, match="it is closed; start a new claim") as refused:
            fund.decide(in_state(S.CLOSED), COMMANDS[trigger], NOW)
        assert refused.value.allowed == []


def test_lines_of_4999_99_and_0_01_reach_the_cap_exactly_and_can_be_submitted() -> None:
    claim = draft(lines=[ClaimLine(description="Sessions", amount="4999.99"),
                         ClaimLine(description="Flyers", amount="0.01")])
    assert claim.requested_total == Decimal("5000.00")
    assert fund.decide(claim, COMMANDS[T.SUBMIT], NOW).state is S.SUBMITTED


def test_a_line_of_5000_01_is_refused_naming_the_amount_over_the_cap() -> None:
    with pytest.raises(ValidationFailed) as refused:
        draft(lines=[ClaimLine(description="Sessions", amount="5000.01")])
    assert refused.value.problems == [
        "the lines total £5,000.01, which is £0.01 over the £5,000.00 limit per incident"]


def test_several_lines_summing_over_the_cap_are_refused_on_draft_and_on_edit() -> None:
    lines = [ClaimLine(description=d, amount=a) for d, a in (("Sessions", "2500"), ("Event", "2000"),
                                                              ("Counselling", "750.25"))]
    with pytest.raises(ValidationFailed, match="£5,250.25, which is £250.25 over the £5,000.00 limit"):
        draft(lines=lines)
    with pytest.raises(TransitionNotAllowed, match="would total £5,250.25, which is £250.25 over") as refused:
        fund.decide(draft(), EditClaim(actor="duty", incident_id="i1", lines=tuple(lines)), NOW)
    assert refused.value.trigger == "edit"


def test_approval_over_the_cap_is_refused_naming_the_excess() -> None:
    command = ApproveClaim(actor="vru", incident_id="i1", actor_role="vru_lead", amount="5000.50")
    with pytest.raises(TransitionNotAllowed, match="the approval is £5,000.50, which is £0.50 over the £5,000.00"):
        fund.decide(in_state(S.SUBMITTED), command, NOW)


def test_approval_above_the_amount_requested_is_refused() -> None:
    command = ApproveClaim(actor="vru", incident_id="i1", actor_role="vru_lead", amount="1750.51")
    with pytest.raises(TransitionNotAllowed, match="£1,750.51 is more than the £1,750.50 requested; approve at most"):
        fund.decide(in_state(S.SUBMITTED), command, NOW)
    assert approved("1750.50").approved_amount == Decimal("1750.50")


@pytest.mark.parametrize("role", ["duty_officer", "csp_lead", "VRU_LEAD", ""])
def test_only_the_vru_lead_can_approve_or_decline(role: str) -> None:
    approve = ApproveClaim(actor="x", incident_id="i1", actor_role=role, amount="100")
    decline = DeclineClaim(actor="x", incident_id="i1", actor_role=role, reason="No")
    for command in (approve, decline):
        with pytest.raises(TransitionNotAllowed, match=r"only the VRU lead \(vru_lead\) can"):
            fund.decide(in_state(S.SUBMITTED), command, NOW)


@pytest.mark.parametrize("command", [DeclineClaim(actor="vru", incident_id="i1", actor_role="vru_lead", reason="  "),
                                     WithdrawClaim(actor="duty", incident_id="i1")])
def test_decline_and_withdraw_need_a_reason(command: fund.FundCommand) -> None:
    with pytest.raises(TransitionNotAllowed, match="give a reason"):
        fund.decide(in_state(S.SUBMITTED), command, NOW)


def test_decline_and_withdraw_keep_their_reasons() -> None:
    assert fund.decide(in_state(S.SUBMITTED), COMMANDS[T.DECLINE], NOW).decline_reason == "Outside the criteria"
    withdrawn = fund.decide(draft(), COMMANDS[T.WITHDRAW], NOW)
    assert (withdrawn.state, withdrawn.closed_reason) == (S.CLOSED, "The council funds it instead")


@pytest.mark.parametrize("value", [12.5, 0.1, 1250.0, True])
def test_floats_and_bools_are_refused_as_amounts(value: object) -> None:
    with pytest.raises(ValueError, match="give amounts as text like \"1250.50\""):
        fund.money(value)
    with pytest.raises(pydantic.ValidationError, match="floats lose pence|not bool"):
        ClaimLine(description="x", amount=value)
    with pytest.raises(pydantic.ValidationError, match="give amounts as text"):
        ApproveClaim(actor="vru", incident_id="i1", actor_role="vru_lead", amount=value)


def test_a_float_in_a_new_claim_is_refused_naming_the_line() -> None:
    with pytest.raises(ValidationFailed) as refused:
        draft(lines=[{"description": "Sessions", "amount": 99.99}])
    assert refused.value.problems == [
        'lines.0.amount: give amounts as text like "1250.50", not float (floats lose pence)']


def test_a_float_in_a_json_command_is_refused() -> None:
    wire = '{"kind": "fund_record_spend", "actor": "d", "incident_id": "i1", "amount": 10.5, ' \
           '"date": "2026-12-08", "description": "Coach"}'
    with pytest.raises(pydantic.ValidationError, match="not float"):
        fund.FUND_COMMAND_ADAPTER.validate_json(wire)
    command = fund.FUND_COMMAND_ADAPTER.validate_json(wire.replace("10.5", '"10.5"'))
    assert isinstance(command, RecordSpend) and command.amount == Decimal("10.50")


@pytest.mark.parametrize(("value", "pence"), [("1250.50", "1250.50"), (12, "12.00"), (Decimal("3.5"), "3.50"),
                                              (" 7.1 ", "7.10"), ("1.500", "1.50"), ("0", "0.00")])
def test_money_accepts_text_int_and_decimal_as_exact_pence(value: object, pence: str) -> None:
    assert str(fund.money(value)) == pence


@pytest.mark.parametrize("value", ["12.345", "0.001", Decimal("1.005"), "1250.505"])
def test_three_decimal_places_are_refused(value: object) -> None:
    with pytest.raises(ValueError, match="amounts are in pounds and pence"):
        fund.money(value)
    with pytest.raises(pydantic.ValidationError, match="amounts are in pounds and pence"):
        RecordSpend(actor="d", incident_id="i1", amount=value, date=date(2026, 12, 8), description="x")


@pytest.mark.parametrize("value", ["£12", "1,250.50", "abc", "NaN", "Infinity", ""])
def test_text_that_is_not_an_amount_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="is not an amount; give pounds and pence like 1250.50"):
        fund.money(value)


@pytest.mark.parametrize("value", ["0", "-5.00"])
def test_lines_must_be_more_than_nothing(value: str) -> None:
    with pytest.raises(pydantic.ValidationError, match="greater than 0"):
        ClaimLine(description="x", amount=value)


def test_point_one_plus_point_two_is_exactly_thirty_pence() -> None:
    claim = draft(lines=[ClaimLine(description="a", amount="0.1"), ClaimLine(description="b", amount="0.2")])
    assert claim.requested_total == Decimal("0.30")
    assert str(claim.requested_total) == "0.30"


def test_spend_beyond_the_approval_is_refused_with_what_is_left() -> None:
    claim = fund.decide(approved("1500.00"), spend("1000.00"), NOW)
    with pytest.raises(TransitionNotAllowed) as refused:
        fund.decide(claim, spend("600.00"), NOW)
    assert refused.value.reason == (
        "£600.00 would take spend to £1,600.00, over the £1,500.00 approved; £500.00 is left")
    claim = fund.decide(claim, spend("500.00"), NOW)
    assert (claim.spent_total, claim.remaining) == (Decimal("1500.00"), Decimal("0.00"))
    with pytest.raises(TransitionNotAllowed, match="£0.00 is left"):
        fund.decide(claim, spend("0.01"), NOW)


def test_submitting_an_empty_claim_lists_everything_missing() -> None:
    empty = fund.new_claim("i1", INCIDENT_DATE, actor="duty", now=NOW)
    with pytest.raises(TransitionNotAllowed) as refused:
        fund.decide(empty, COMMANDS[T.SUBMIT], NOW)
    assert refused.value.reason == (
        "it is not ready to send to the VRU; add the purpose (why the community needs it), the planned activity, "
        "the beneficiaries (who, and roughly how many), a start date, an end date, at least one costed line")


def test_submitting_without_beneficiaries_names_only_that() -> None:
    with pytest.raises(TransitionNotAllowed, match=r"add the beneficiaries \(who, and roughly how many\)\."):
        fund.decide(draft(beneficiaries=""), COMMANDS[T.SUBMIT], NOW)


def test_end_date_before_start_date_is_refused() -> None:
    with pytest.raises(ValidationFailed, match="end_date 2026-12-01 is before start_date 2026-12-05"):
        draft(end_date=date(2026, 12, 1))
    with pytest.raises(ValidationFailed, match="The claim was not changed"):
        fund.decide(draft(), EditClaim(actor="duty", incident_id="i1", end_date=date(2026, 12, 1)), NOW)


def test_evaluation_is_due_eight_weeks_after_the_end_and_follows_an_edited_end_date() -> None:
    claim = draft()
    assert claim.evaluation_due == date(2027, 3, 28)
    moved = fund.decide(claim, EditClaim(actor="duty", incident_id="i1", end_date=date(2027, 2, 28)), NOW)
    assert moved.evaluation_due == date(2027, 4, 25)
    assert moved.history[-1].note == "changed end_date"
    fixed = fund.decide(moved, EditClaim(actor="duty", incident_id="i1", evaluation_due=date(2027, 3, 1)), NOW)
    assert fixed.evaluation_due == date(2027, 3, 1)
    assert fund.decide(fixed, COMMANDS[T.EDIT], NOW).evaluation_due == date(2027, 3, 1)


def test_an_edit_that_changes_nothing_is_refused() -> None:
    same = EditClaim(actor="duty", incident_id="i1", purpose=draft().purpose)
    with pytest.raises(TransitionNotAllowed, match="the edit changes nothing"):
        fund.decide(draft(), same, NOW)


def test_evaluation_needs_text_and_an_outcome() -> None:
    claim = in_state(S.SPEND_RECORDED)
    for command in (SubmitEvaluation(actor="d", incident_id="i1", text="Went well"),
                    SubmitEvaluation(actor="d", incident_id="i1", text=" ", outcomes=("x",))):
        with pytest.raises(TransitionNotAllowed, match="give the evaluation text and at least one outcome"):
            fund.decide(claim, command, NOW)


def test_a_command_for_another_incident_is_refused() -> None:
    with pytest.raises(ValidationFailed, match="the command is for incident i2, this claim is for i1"):
        fund.decide(draft(), SubmitClaim(actor="duty", incident_id="i2"), NOW)


def test_a_time_without_timezone_is_refused() -> None:
    with pytest.raises(ValidationFailed, match="time must include a timezone"):
        fund.decide(draft(), COMMANDS[T.SUBMIT], datetime(2026, 12, 1, 9, 0))


def test_history_records_each_step_with_a_note() -> None:
    claim = in_state(S.CLOSED)
    assert [(h.trigger, h.note) for h in claim.history] == [
        ("create", "claim drafted"),
        (T.SUBMIT, "requested £1,750.50"),
        (T.APPROVE, "approved £1,500.00"),
        (T.RECORD_SPEND, "spent £250.00: Hall hire"),
        (T.SUBMIT_EVALUATION, "evaluation submitted"),
        (T.CLOSE, ""),
    ]
    assert claim.version == 6


def test_a_claim_survives_a_json_round_trip_with_amounts_as_text() -> None:
    claim = in_state(S.EVALUATED)
    wire = claim.model_dump_json()
    assert '"amount":"1250.50"' in wire and '"approved_amount":"1500.00"' in wire
    assert Claim.model_validate_json(wire) == claim


def test_deadlines_submit_within_days_of_the_incident_then_the_evaluation() -> None:
    assert fund.deadlines(draft()) == [("submit", date(2026, 12, 14))]
    assert fund.deadlines(draft(), submit_within_days=7) == [("submit", date(2026, 12, 7))]
    assert fund.deadlines(in_state(S.SUBMITTED)) == []
    assert fund.deadlines(in_state(S.APPROVED)) == [("submit_evaluation", date(2027, 3, 28))]
    assert fund.deadlines(in_state(S.SPEND_RECORDED)) == [("submit_evaluation", date(2027, 3, 28))]
    for state in (S.DECLINED, S.EVALUATED, S.CLOSED):
        assert fund.deadlines(in_state(state)) == []


@pytest.mark.parametrize(("amount", "text"), [("1250.5", "£1,250.50"), ("0", "£0.00"), ("5000", "£5,000.00"),
                                              ("1234567.89", "£1,234,567.89"), ("0.3", "£0.30")])
def test_pounds_formats_amounts_as_people_read_them(amount: str, text: str) -> None:
    assert fund.pounds(Decimal(amount)) == text


def test_summary_of_a_claim_with_spend() -> None:
    assert fund.summary(in_state(S.SPEND_RECORDED)) == """\
Critical Incident Fund claim: incident i1 of 30 November 2026
State: spend recorded (version 4)
Purpose: Young people in Peckham are frightened after the stabbing on Rye Lane
Planned activity: Six evening youth diversion sessions and one community event
Beneficiaries: About 60 young people aged 11-18 and their families
Dates: 5 December 2026 to 31 January 2027
Lines:
  - Youth diversion sessions: £1,250.50
  - Community event: £500.00
Requested: £1,750.50 (limit £5,000.00 per incident)
Approved: £1,500.00
Spend:
  - 2026-12-06 Hall hire (Peckham Pulse): £250.00
Spent: £250.00 (£1,250.00 left)
Evaluation due: 28 March 2027
"""


def test_summary_of_an_empty_draft_and_of_a_decline() -> None:
    text = fund.summary(fund.new_claim("i1", INCIDENT_DATE, actor="duty", now=NOW))
    assert "Purpose: not given\n" in text and "Dates: not given to not given\n" in text
    assert "Lines:\nRequested: £0.00 (limit £5,000.00 per incident)\n" in text
    declined = fund.summary(in_state(S.DECLINED))
    assert "Declined: Outside the criteria\n" in declined and "Approved" not in declined
