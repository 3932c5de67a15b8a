"""Tasks: protocol steps owned by people, acknowledged, done, declined, escalated or waived. No I/O.

A task's table reads like the protocol's: (status, action) -> status. Doing what is already done is
harmless (no event). Declining hands the task to the owner's deputy; waiving needs the duty officer
and a reason. Acknowledging a message (holding notice, briefing) is recorded per person.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from enum import StrEnum

from sims.errors import TransitionNotAllowed, ValidationFailed
from sims.model import OPEN_TASK, Task, TaskStatus
from sims.protocol_config import Step


class TaskAction(StrEnum):
    ACKNOWLEDGE = "acknowledge"
    DONE = "done"
    DECLINE = "decline"
    WAIVE = "waive"


A, TS = TaskAction, TaskStatus
OPEN = OPEN_TASK
FINAL = frozenset({TS.DONE, TS.WAIVED})

TASK_TABLE: dict[tuple[TaskStatus, TaskAction], TaskStatus] = {
    **{(s, A.ACKNOWLEDGE): TS.ACKNOWLEDGED for s in (TS.PENDING, TS.OVERDUE, TS.ESCALATED)},
    **{(s, A.DONE): TS.DONE for s in (*OPEN, TS.DECLINED)},
    **{(s, A.DECLINE): TS.PENDING for s in OPEN},  # pending again, with the deputy as owner (declined if none)
    **{(s, A.WAIVE): TS.WAIVED for s in (*OPEN, TS.DECLINED)},
}
# Repeating what already happened changes nothing and is not an error (a second click).
HARMLESS = {(TS.ACKNOWLEDGED, A.ACKNOWLEDGE), (TS.DONE, A.DONE), (TS.DONE, A.ACKNOWLEDGE),
            (TS.WAIVED, A.WAIVE)}


def plan(steps: list[Step], raised_at: datetime, owner_for: Callable[[str], str | None]) -> list[Task]:
    """The incident's tasks from the protocol's steps, each owned by the first holder of its role."""
    return [Task(id=step.id, number=i, title=step.title, kind=step.kind, owner_role=step.owner,
                 owner=owner_for(step.owner), due_at=raised_at + step.due,
                 escalation=tuple(d.total_seconds() for d in step.escalation))
            for i, step in enumerate(steps, start=1)]


def act(task: Task, action: TaskAction, *, actor_is_duty_officer: bool, person: str | None,
        note: str = "", reason: str = "", deputy: str | None = None) -> Task | None:
    """The task after `action`, None when it changes nothing; TransitionNotAllowed with a reason otherwise."""
    if (task.status, action) in HARMLESS:
        return None
    target = TASK_TABLE.get((task.status, action))
    allowed = [a.value for (s, a) in TASK_TABLE if s is task.status]
    if target is None:
        raise TransitionNotAllowed(f"task {task.status.value}", action.value,
                                   f"'{task.title}' is {task.status.value}", allowed)
    if person is not None and person != task.owner and not actor_is_duty_officer:
        raise ValidationFailed("Not your task", [f"'{task.title}' is now with someone else"])
    if action is A.WAIVE:
        if not actor_is_duty_officer:
            raise TransitionNotAllowed(f"task {task.status.value}", "waive", "only the duty officer can waive a step", allowed)
        if not reason.strip():
            raise TransitionNotAllowed(f"task {task.status.value}", "waive", "give the reason for waiving it", allowed)
    if action is A.DECLINE:
        if not reason.strip():
            raise TransitionNotAllowed(f"task {task.status.value}", "decline", "say why you can't do it", allowed)
        if deputy is None:  # nobody to hand it to: declined, for the duty officer to see and resolve
            return task.model_copy(update={"status": TS.DECLINED, "reason": reason})
        return task.model_copy(update={"status": TS.PENDING, "owner": deputy, "reason": reason, "escalation_level": 0})
    return task.model_copy(update={"status": target, "note": note or task.note, "reason": reason or task.reason})


def escalate(task: Task, level: int) -> Task | None:
    """Level 1: overdue (reminder); 2+: escalated. None if the task is closed or already past `level`."""
    if not task.is_open or task.status is TS.ACKNOWLEDGED or task.escalation_level >= level:
        return None
    return task.model_copy(update={"status": TS.OVERDUE if level == 1 else TS.ESCALATED, "escalation_level": level})


def timers(task: Task) -> list[tuple[int, datetime]]:
    """When each escalation level fires: at the due time, then after each escalation delay."""
    return [(1, task.due_at)] + [(i + 2, task.due_at + timedelta(seconds=s)) for i, s in enumerate(task.escalation[:2])]


def open_reassurance(tasks: tuple[Task, ...] | list[Task]) -> list[Task]:
    """Reassurance steps still open: the incident cannot close while there are any."""
    return [t for t in tasks if t.kind == "reassurance" and t.status not in FINAL]

