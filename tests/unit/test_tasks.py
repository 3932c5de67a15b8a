"""Task statuses: every move in the table, every refusal, escalation levels and timers."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from sims.errors import TransitionNotAllowed, ValidationFailed
from sims.model import Task, TaskStatus
from sims.tasks import TASK_TABLE, HARMLESS, TaskAction, act, escalate, open_reassurance, timers

DUE = datetime(2026, 12, 1, 1, 0, tzinfo=timezone.utc)


def task(status: TaskStatus = TaskStatus.PENDING, **overrides: object) -> Task:
    data: dict[str, object] = dict(id="confirm_facts", number=1, title="Confirm the facts", kind="task",
                                   owner_role="police_borough_lead", owner="police-lead", due_at=DUE,
                                   status=status, escalation=(900.0, 1800.0))
    return Task.model_validate({**data, **overrides})


@pytest.mark.parametrize(("status", "action", "target"), [(s, a, t) for (s, a), t in TASK_TABLE.items()])
def test_every_move_in_the_table(status: TaskStatus, action: TaskAction, target: TaskStatus) -> None:
    """Each (status, action) row: the duty officer (no person) may do all of them, with a reason."""
    after = act(task(status), action, actor_is_duty_officer=True, person=None, reason="because",
                deputy="police-deputy")
    assert after is not None and after.status is target
    if action is TaskAction.DECLINE:
        assert after.owner == "police-deputy" and after.reason == "because" and after.escalation_level == 0


@pytest.mark.parametrize(("status", "action"), [(s, a) for s in TaskStatus for a in TaskAction
                                                if (s, a) not in TASK_TABLE and (s, a) not in HARMLESS])
def test_every_other_move_is_refused_saying_what_is_allowed(status: TaskStatus, action: TaskAction) -> None:
    with pytest.raises(TransitionNotAllowed) as refused:
        act(task(status), action, actor_is_duty_officer=True, person=None, reason="r", deputy="d")
    assert refused.value.allowed == [a.value for (s, a) in TASK_TABLE if s is status]


@pytest.mark.parametrize(("status", "action"), sorted(HARMLESS))
def test_doing_it_again_changes_nothing(status: TaskStatus, action: TaskAction) -> None:
    assert act(task(status), action, actor_is_duty_officer=False, person="police-lead") is None


def test_only_the_owner_acts_through_their_link() -> None:
    with pytest.raises(ValidationFailed, match="Not your task"):
        act(task(), TaskAction.DONE, actor_is_duty_officer=False, person="someone-else")
    assert act(task(), TaskAction.DONE, actor_is_duty_officer=False, person="police-lead", note="ok").status is TaskStatus.DONE  # type: ignore[union-attr]


def test_waive_needs_the_duty_officer_and_a_reason() -> None:
    with pytest.raises(TransitionNotAllowed, match="only the duty officer"):
        act(task(), TaskAction.WAIVE, actor_is_duty_officer=False, person="police-lead", reason="r")
    with pytest.raises(TransitionNotAllowed, match="reason"):
        act(task(), TaskAction.WAIVE, actor_is_duty_officer=True, person=None)


def test_cant_do_goes_to_the_deputy_or_is_declined_when_there_is_none() -> None:
    with pytest.raises(TransitionNotAllowed, match="say why"):
        act(task(), TaskAction.DECLINE, actor_is_duty_officer=False, person="police-lead", deputy="d")
    declined = act(task(), TaskAction.DECLINE, actor_is_duty_officer=False, person="police-lead", reason="On leave")
    assert declined is not None and declined.status is TaskStatus.DECLINED and declined.reason == "On leave"


def test_escalation_levels_and_their_timers() -> None:
    assert [(level, at - DUE) for level, at in timers(task())] == [
        (1, timedelta(0)), (2, timedelta(minutes=15)), (3, timedelta(minutes=30))]
    overdue = escalate(task(), 1)
    assert overdue is not None and overdue.status is TaskStatus.OVERDUE
    escalated = escalate(overdue, 2)
    assert escalated is not None and escalated.status is TaskStatus.ESCALATED and escalated.escalation_level == 2
    assert escalate(escalated, 2) is None  # a timer firing twice does nothing
    for status in (TaskStatus.ACKNOWLEDGED, TaskStatus.DONE, TaskStatus.WAIVED):
        assert escalate(task(status), 1) is None  # acknowledged in the meantime: the timer is cancelled


def test_open_reassurance_steps_block_closing() -> None:
    steps = [task(id="patrols", kind="reassurance"), task(id="meeting", kind="reassurance", status=TaskStatus.WAIVED),
             task(id="facts", kind="task")]
    assert [t.id for t in open_reassurance(steps)] == ["patrols"]
