"""Every template is marked for an exercise: each SMS, email subject, email text and HTML in templates/,
and the personal link page; a real incident carries no mark. Templates are found on disk, so a new one
cannot slip past the marking."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from jinja2 import Environment, FileSystemLoader, select_autoescape

from sims.model import Incident, Task
from sims.rendering import DEFAULT_TEMPLATES, EXERCISE_BANNER, KINDS, Renderer, sample_context
from sims.views import SharedView

SMS_KINDS = sorted(p.stem for p in (DEFAULT_TEMPLATES / "sms").glob("*.txt"))
EMAIL_KINDS = sorted(p.name.removesuffix(".subject.txt") for p in (DEFAULT_TEMPLATES / "email").glob("*.subject.txt"))
NOW = datetime(2026, 11, 30, 21, 40, tzinfo=UTC)


def test_every_message_template_on_disk_is_a_kind_the_renderer_marks() -> None:
    assert set(SMS_KINDS) == set(KINDS) == set(EMAIL_KINDS)
    for kind in KINDS:
        for name in (f"email/{kind}.txt", f"email/{kind}.html"):
            assert (DEFAULT_TEMPLATES / name).exists(), name


@pytest.mark.parametrize("kind", SMS_KINDS)
def test_each_template_renders_marked_for_an_exercise_and_unmarked_otherwise(kind: str) -> None:
    renderer = Renderer()
    sample = sample_context(kind)
    assert sample.view.exercise
    sms = renderer.render_sms(kind, *sample.args())
    email = renderer.render_email(kind, *sample.args())
    assert sms.body.startswith(("EXERCISE EXERCISE EXERCISE\n", "[EXERCISE] "))
    assert email.subject.startswith("EXERCISE: ")
    assert email.text.count(EXERCISE_BANNER) >= 1 and email.html.count(EXERCISE_BANNER) >= 1
    assert "<title>EXERCISE: " in email.html
    real = dataclasses.replace(sample.view, exercise=False)
    args = (real, sample.recipient, sample.link, sample.extra)
    assert "EXERCISE" not in renderer.render_sms(kind, *args).body
    assert "EXERCISE" not in renderer.render_subject(kind, real)
    assert "EXERCISE" not in renderer.render_email(kind, *args).text


@pytest.mark.parametrize("exercise", [True, False])
@pytest.mark.parametrize("with_task", [True, False])
def test_the_link_page_shows_the_exercise_banner(exercise: bool, with_task: bool) -> None:
    pages = Path(DEFAULT_TEMPLATES) / "pages"
    env = Environment(loader=FileSystemLoader(str(pages)), autoescape=select_autoescape(("html",)))
    env.filters["local_time"] = lambda v: v.isoformat()
    task = Task(id="confirm_facts", number=1, title="Confirm the facts", kind="task", owner_role="police",
                owner="p1", due_at=NOW + timedelta(hours=1))
    incident = Incident(id="i1", reference="SWK-2026-0042", type="stabbing", level="1", occurred_at=NOW,
                        raised_at=NOW, ward="Peckham", location="Rye Lane", outline="A stabbing", exercise=exercise,
                        raised_by="duty", updated_at=NOW, tasks=(task,))
    html = env.get_template("link.html").render(
        incident=incident, view=SharedView.of(incident), person=None, task=task if with_task else None,
        message_kind=None if with_task else "holding", others=[], acknowledged=False, closed=False, claim=None,
        claim_summary="", token="t", request_done=False, error=None)
    assert (EXERCISE_BANNER in html) is exercise
