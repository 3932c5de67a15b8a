"""Message rendering: every SMS fits two GSM-7 parts, restricted text never reaches a message,
exercises are marked everywhere, and times read as London time."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from jinja2 import UndefinedError

from sims.errors import SimsError
from sims.gsm import segments
from sims.model import Incident, IncidentType, Level, Restricted, State
from sims.rendering import (
    KINDS,
    BriefingExtra,
    ClosureExtra,
    Renderer,
    SampleContext,
    SmsExtra,
    SmsTooLong,
    StandDownExtra,
    TaskExtra,
    UpdateExtra,
    sample_context,
)
from sims.views import RecipientView, SharedView

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
FULL_PREFIX = "EXERCISE EXERCISE EXERCISE\n"
SHORT_PREFIX = "[EXERCISE] "
LONGEST_WARD = "London Bridge & West Bermondsey"
WINTER = datetime(2026, 11, 30, 21, 40, tzinfo=UTC)
SUMMER = datetime(2026, 7, 14, 20, 40, tzinfo=UTC)
LINK = "https://sims.example.gov.uk/a/abc123"


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(TEMPLATES)


def incident(*, restricted: str = "John Smith", exercise: bool = False, occurred_at: datetime = WINTER,
             **changes: object) -> Incident:
    data = {
        "id": "a" * 32, "reference": "SWK-2026-0142", "type": IncidentType.STABBING, "level": Level.BOROUGH,
        "state": State.ACTIVE, "occurred_at": occurred_at, "raised_at": occurred_at + timedelta(minutes=5),
        "ward": "Peckham", "location": "Rye Lane, near the station",
        "outline": "A young man was stabbed; he is in hospital.", "restricted": restricted,
        "exercise": exercise, "raised_by": "duty.officer", "updated_at": occurred_at,
    }
    return Incident.model_validate({**data, **changes})


RECIPIENT = RecipientView(name="Amara Okafor", salutation="Cllr Okafor", roles=("ward_councillor",))


def extra_for(kind: str) -> SmsExtra | None:
    return {
        "holding": None,
        "briefing": BriefingExtra(talking_points="The police are investigating."),
        "task": TaskExtra(title="Ward walkabout with the SNT", due_at=WINTER + timedelta(hours=24)),
        "update": UpdateExtra(text="The cordon on Rye Lane has been lifted."),
        "stand_down": StandDownExtra(reason="Injury was accidental."),
        "closure": ClosureExtra(reason="Review complete."),
    }[kind]


def all_outputs(renderer: Renderer, kind: str, view: SharedView) -> dict[str, str]:
    sms = renderer.render_sms(kind, view, RECIPIENT, LINK, extra_for(kind))
    email = renderer.render_email(kind, view, RECIPIENT, LINK, extra_for(kind))
    return {"sms": sms.body, "subject": email.subject, "text": email.text, "html": email.html}


# --- every SMS fits -----------------------------------------------------------------------------


def test_sample_context_is_the_worst_case() -> None:
    for kind in KINDS:
        sample = sample_context(kind)
        assert isinstance(sample, SampleContext)
        assert sample.view.ward == LONGEST_WARD
        assert sample.view.exercise is True
        assert len(sample.link) == 70
        assert len(sample.view.location) > 100


@pytest.mark.parametrize("kind", KINDS)
def test_worst_case_sms_is_at_most_two_gsm7_parts_with_the_full_exercise_prefix(
        renderer: Renderer, kind: str) -> None:
    sample = sample_context(kind)
    sms = renderer.render_sms(kind, *sample.args())
    assert sms.segments == segments(sms.body)
    assert sms.segments.encoding == "GSM-7"
    assert sms.segments.segments <= 2
    assert sms.segments.units <= 306
    assert sms.body.startswith(FULL_PREFIX)
    assert sms.body.endswith(sample.link) or f" {sample.link} " in sms.body  # the link is whole
    assert sample.view.reference in sms.body


@pytest.mark.parametrize("kind", KINDS)
def test_worst_case_sms_without_exercise_also_fits(renderer: Renderer, kind: str) -> None:
    sample = sample_context(kind)
    view = dataclasses.replace(sample.view, exercise=False)
    sms = renderer.render_sms(kind, view, sample.recipient, sample.link, sample.extra)
    assert sms.segments.encoding == "GSM-7" and sms.segments.segments <= 2
    assert "EXERCISE" not in sms.body


def test_long_free_text_is_shortened_at_a_word_and_the_link_kept(renderer: Renderer) -> None:
    sample = sample_context("update")
    assert isinstance(sample.extra, UpdateExtra)
    sms = renderer.render_sms("update", *sample.args())
    assert "..." in sms.body
    assert sample.extra.text not in sms.body
    assert sms.body.endswith(sample.link)


def test_short_free_text_is_sent_whole(renderer: Renderer) -> None:
    view = SharedView.of(incident())
    extra = UpdateExtra(text="The cordon has been lifted.")
    sms = renderer.render_sms("update", view, RECIPIENT, LINK, extra)
    assert "The cordon has been lifted." in sms.body
    assert sms.segments.segments == 1


def test_typography_in_free_text_is_made_gsm7(renderer: Renderer) -> None:
    text = "Police \u2018reassurance\u2019 patrols \u2013 \u201cvisible\u201d\u2026"
    sms = renderer.render_sms("update", SharedView.of(incident()), RECIPIENT, LINK, UpdateExtra(text=text))
    assert sms.segments.encoding == "GSM-7"
    assert "Police 'reassurance' patrols - \"visible\"..." in sms.body


def test_the_short_exercise_prefix_is_used_only_when_the_full_one_does_not_fit(renderer: Renderer) -> None:
    sample = sample_context("briefing")
    units = renderer.render_sms("briefing", *sample.args()).segments.units
    ward = sample.view.ward + " " + "x" * (306 - units)  # one septet too many with the full prefix
    view = dataclasses.replace(sample.view, ward=ward)
    sms = renderer.render_sms("briefing", view, sample.recipient, sample.link, sample.extra)
    assert sms.body.startswith(SHORT_PREFIX)
    assert sms.segments.segments == 2


def test_an_sms_that_cannot_fit_two_parts_is_refused(renderer: Renderer) -> None:
    with pytest.raises(SmsTooLong) as caught:
        renderer.render_sms("holding", SharedView.of(incident()), RECIPIENT, "https://x.example/" + "a" * 300)
    assert isinstance(caught.value, SimsError)
    assert caught.value.info.segments > 2 and caught.value.limit == 2
    assert caught.value.to_dict()["error"] == "sms_too_long"


def test_an_emoji_that_forces_ucs2_is_refused_with_a_reason(renderer: Renderer) -> None:
    sample = sample_context("update")
    with pytest.raises(SmsTooLong) as caught:
        renderer.render_sms("update", sample.view, sample.recipient, sample.link,
                            UpdateExtra(text="\U0001F64F Thank you all for the quick response tonight."))
    assert caught.value.info.encoding == "UCS-2"
    assert "emoji" in str(caught.value)


# --- templates refuse what they are not given ---------------------------------------------------


def test_strict_undefined_raises_on_a_missing_variable(tmp_path: Path) -> None:
    (tmp_path / "sms").mkdir()
    (tmp_path / "sms" / "holding.txt").write_text("{{ view.reference }} {{ victim_name }} {{ link }}")
    with pytest.raises(UndefinedError):
        Renderer(tmp_path).render_sms("holding", SharedView.of(incident()), RECIPIENT, LINK)


def test_strict_undefined_raises_on_a_missing_attribute(tmp_path: Path) -> None:
    (tmp_path / "sms").mkdir()
    (tmp_path / "sms" / "holding.txt").write_text("{{ view.restricted }} {{ link }}")
    with pytest.raises(UndefinedError):
        Renderer(tmp_path).render_sms("holding", SharedView.of(incident()), RECIPIENT, LINK)


def test_html_is_escaped_and_text_is_not(renderer: Renderer) -> None:
    view = SharedView.of(incident(ward=LONGEST_WARD, outline="<script>alert(1)</script> & more"))
    email = renderer.render_email("holding", view, RECIPIENT, LINK, None)
    assert "London Bridge &amp; West Bermondsey" in email.html
    assert "<script>" not in email.html and "&lt;script&gt;" in email.html
    assert "London Bridge & West Bermondsey" in email.text and "<script>" in email.text


def test_each_kind_takes_its_own_extra(renderer: Renderer) -> None:
    view = SharedView.of(incident())
    with pytest.raises(TypeError):
        renderer.render_sms("task", view, RECIPIENT, LINK, None)
    with pytest.raises(TypeError):
        renderer.render_sms("holding", view, RECIPIENT, LINK, UpdateExtra(text="x"))
    with pytest.raises(TypeError):
        renderer.render_email("closure", view, RECIPIENT, LINK, StandDownExtra(reason="x"))
    with pytest.raises(ValueError):
        renderer.render_sms("gossip", view, RECIPIENT, LINK, None)


# --- restricted details never reach a message ----------------------------------------------------


def test_shared_view_has_no_restricted_field() -> None:
    assert "restricted" not in {f.name for f in dataclasses.fields(SharedView)}


@pytest.mark.parametrize("field", ["reference", "type_label", "ward", "location", "outline"])
def test_a_restricted_value_cannot_get_into_a_shared_view(field: str) -> None:
    values: dict[str, Any] = {f.name: getattr(SharedView.of(incident()), f.name)
                              for f in dataclasses.fields(SharedView)}
    values[field] = Restricted("Victim: John Smith")
    with pytest.raises(TypeError, match="restricted"):
        SharedView(**values)


def test_a_restricted_value_cannot_get_into_a_recipient_view_or_an_extra() -> None:
    secret = Restricted("Victim: John Smith")
    with pytest.raises(TypeError):
        RecipientView(name=secret, salutation="x")
    with pytest.raises(TypeError):
        RecipientView(name="x", salutation="x", roles=(secret,))
    for make in (lambda: UpdateExtra(text=secret), lambda: StandDownExtra(reason=secret),
                 lambda: ClosureExtra(reason=secret), lambda: BriefingExtra(talking_points=secret),
                 lambda: TaskExtra(title=secret, due_at=WINTER)):
        with pytest.raises(TypeError):
            make()


def test_a_restricted_link_is_refused(renderer: Renderer) -> None:
    with pytest.raises(TypeError):
        renderer.render_sms("holding", SharedView.of(incident()), RECIPIENT, Restricted(LINK))


def test_only_a_shared_view_can_be_rendered(renderer: Renderer) -> None:
    with pytest.raises(TypeError):
        renderer.render_sms("holding", incident(), RECIPIENT, LINK)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        renderer.render_subject("holding", incident())  # type: ignore[arg-type]


@pytest.mark.parametrize("exercise", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_restricted_text_never_appears_in_any_message(renderer: Renderer, kind: str, exercise: bool) -> None:
    source = incident(restricted="John Smith", exercise=exercise)
    assert isinstance(source.restricted, Restricted) and source.restricted.reveal() == "John Smith"
    for part, text in all_outputs(renderer, kind, SharedView.of(source)).items():
        assert "John Smith" not in text, part
        assert Restricted.MARKER not in text, part


# --- exercises are marked everywhere; real incidents never are ------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_exercise_marking_in_every_sms_subject_and_body(renderer: Renderer, kind: str) -> None:
    out = all_outputs(renderer, kind, SharedView.of(incident(exercise=True)))
    assert out["sms"].startswith(FULL_PREFIX)
    assert out["subject"].startswith("EXERCISE")
    assert "EXERCISE EXERCISE EXERCISE" in out["text"]
    assert "EXERCISE EXERCISE EXERCISE" in out["html"]


@pytest.mark.parametrize("kind", KINDS)
def test_real_incidents_carry_no_exercise_marking(renderer: Renderer, kind: str) -> None:
    for part, text in all_outputs(renderer, kind, SharedView.of(incident())).items():
        assert "EXERCISE" not in text, part


@pytest.mark.parametrize("kind", KINDS)
def test_protective_marking_at_top_and_bottom_of_every_email(kind: str) -> None:
    renderer = Renderer(TEMPLATES, protective_marking="OFFICIAL")
    email = renderer.render_email(kind, SharedView.of(incident()), RECIPIENT, LINK, extra_for(kind))
    assert email.text.startswith("OFFICIAL\n") and email.text.rstrip().endswith("OFFICIAL")
    assert email.html.index("OFFICIAL") < email.html.index("<main>")
    assert email.html.rindex("OFFICIAL") > email.html.index("</main>")
    assert "OFFICIAL" not in email.subject


@pytest.mark.parametrize("kind", KINDS)
def test_every_message_carries_the_recipients_link(renderer: Renderer, kind: str) -> None:
    for part, text in all_outputs(renderer, kind, SharedView.of(incident())).items():
        if part != "subject":
            assert LINK in text, part


def test_briefing_tells_members_where_residents_get_support_and_not_to_speculate(renderer: Renderer) -> None:
    email = renderer.render_email("briefing", SharedView.of(incident()), RECIPIENT, LINK, None)
    for text in (email.text, email.html):
        for needed in ("Wellbeing Hub", "Crimestoppers", "0800 555 111", "crimestoppers-uk.org",
                       "fearless.org", "anonymous", "speculate", "social media"):
            assert needed in text, needed
        assert "I'm aware of the stabbing in Peckham ward on Monday 30 November" in text.replace("&#39;", "'")
    edited = renderer.render_email("briefing", SharedView.of(incident()), RECIPIENT, LINK,
                                   BriefingExtra(talking_points="Our thoughts are with the family."))
    assert "Our thoughts are with the family." in edited.text and "I'm aware" not in edited.text
    sms = renderer.render_sms("briefing", SharedView.of(incident()), RECIPIENT, LINK, None)
    assert "0800 555 111" in sms.body and "speculate" in sms.body


def test_task_message_gives_title_and_due_time(renderer: Renderer) -> None:
    extra = TaskExtra(title="Ward walkabout with the SNT", due_at=WINTER + timedelta(hours=12))
    view = SharedView.of(incident())
    sms = renderer.render_sms("task", view, RECIPIENT, LINK, extra)
    email = renderer.render_email("task", view, RECIPIENT, LINK, extra)
    assert "Ward walkabout with the SNT" in sms.body and "Due 09:40 GMT, Tue 1 Dec" in sms.body
    assert "Ward walkabout with the SNT" in email.html and "09:40 GMT, Tue 1 Dec 2026" in email.text


def test_stand_down_gives_its_reason(renderer: Renderer) -> None:
    extra = StandDownExtra(reason="Injury was accidental.")
    view = SharedView.of(incident(state=State.STOOD_DOWN))
    sms = renderer.render_sms("stand_down", view, RECIPIENT, LINK, extra)
    assert "Reason: Injury was accidental." in sms.body
    assert "Injury was accidental." in renderer.render_email("stand_down", view, RECIPIENT, LINK, extra).text


# --- times in London -------------------------------------------------------------------------------


def test_times_are_shown_in_gmt_in_winter(renderer: Renderer) -> None:
    sms = renderer.render_sms("holding", SharedView.of(incident(occurred_at=WINTER)), RECIPIENT, LINK)
    assert "21:40 GMT, Mon 30 Nov" in sms.body


def test_times_are_shown_in_bst_in_summer(renderer: Renderer) -> None:
    view = SharedView.of(incident(occurred_at=SUMMER))
    assert "21:40 BST, Tue 14 Jul" in renderer.render_sms("holding", view, RECIPIENT, LINK).body
    assert "21:40 BST, Tue 14 Jul 2026" in renderer.render_email("holding", view, RECIPIENT, LINK).text


def test_times_across_the_clock_change() -> None:
    from zoneinfo import ZoneInfo

    from sims.rendering import format_local_time

    london = ZoneInfo("Europe/London")
    assert format_local_time(datetime(2026, 3, 29, 0, 59, tzinfo=UTC), london) == "00:59 GMT, Sun 29 Mar"
    assert format_local_time(datetime(2026, 3, 29, 1, 0, tzinfo=UTC), london) == "02:00 BST, Sun 29 Mar"
    assert format_local_time(datetime(2026, 10, 25, 1, 30, tzinfo=UTC), london) == "01:30 GMT, Sun 25 Oct"


def test_times_without_a_timezone_are_refused() -> None:
    with pytest.raises(ValueError):
        dataclasses.replace(SharedView.of(incident()), occurred_at=datetime(2026, 11, 30, 21, 40))
    with pytest.raises(ValueError):
        TaskExtra(title="x", due_at=datetime(2026, 11, 30, 21, 40))


def test_shared_view_times_are_utc() -> None:
    from zoneinfo import ZoneInfo

    local = datetime(2026, 7, 14, 21, 40, tzinfo=ZoneInfo("Europe/London"))
    view = dataclasses.replace(SharedView.of(incident()), occurred_at=local)
    assert view.occurred_at == SUMMER and view.occurred_at.tzinfo == UTC
