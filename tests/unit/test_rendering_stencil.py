"""Messages for a fan-out come from one render per shared message (`Renderer.email_for` / `sms_for`)
and are byte-identical to a full render (`render_email` / `render_sms`) for every recipient, or the
renderer renders them in full."""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from jinja2 import Template
from markupsafe import Markup

from sims.links import Binding, link_id_for, mint
from sims.model import Incident, IncidentType, Level, Restricted, State
from sims.rendering import (
    KINDS,
    STENCIL_MEMO_SIZE,
    Renderer,
    RenderingFailed,
    SmsExtra,
    SmsTooLong,
    UpdateExtra,
    _Lru,
    sample_context,
)
from sims.views import RecipientView, SharedView
from tests.unit.test_rendering import extra_for

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
WINTER = datetime(2026, 11, 30, 21, 40, tzinfo=UTC)
BASE_URL = "https://sims.southwark.gov.uk"

NAMES = ("O'Brien & <Sons>", "Zoë Ağaoğlu", "Amara Okafor", 'Dr "Jo" Smith-Jones', "李小龍", "A",
         "Cllr Fitzgerald-Okonkwo  (acting)")
ROLES: tuple[tuple[str, ...], ...] = ((), ("ward_councillor",), ("cabinet_member_community_safety", "police_liaison"))


def link(n: int, kid: str = "a") -> str:
    """A personal link as `NotificationCore._link` makes them: one length for one base URL."""
    binding = Binding(incident_id="a" * 32, task="msg.update", person=f"p{n}", expires_at=WINTER, kid=kid)
    return f"{BASE_URL}/l/{mint(b'secret', binding, link_id_for(f'key-{n}'))}"


def people() -> list[tuple[RecipientView, str]]:
    out = []
    for i, name in enumerate(NAMES * 2):
        salutation = name if i < len(NAMES) else f"Cllr {name.split()[-1]}"
        out.append((RecipientView(name=name, salutation=salutation, roles=ROLES[i % len(ROLES)]), link(i)))
    return out


def incident(*, exercise: bool = False, **changes: object) -> Incident:
    data = {
        "id": "a" * 32, "reference": "SWK-2026-0142", "type": IncidentType.STABBING, "level": Level.BOROUGH,
        "state": State.ACTIVE, "occurred_at": WINTER, "raised_at": WINTER + timedelta(minutes=5),
        "ward": "Peckham", "location": "Rye Lane, near the station",
        "outline": "A young man was stabbed; he is in hospital.", "restricted": "John Smith",
        "exercise": exercise, "raised_by": "duty.officer", "updated_at": WINTER,
    }
    return Incident.model_validate({**data, **changes})


short_extra = extra_for  # the same short extras the full-render tests use


@pytest.fixture
def renders(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How many times each template was rendered (by name), counting every renderer."""
    counts: Counter[str] = Counter()
    original = Template.render

    def counted(self: Template, *args: Any, **kwargs: Any) -> str:
        counts[self.name or "?"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Template, "render", counted)
    return counts


def outcome(render: Any, *args: Any) -> object:
    """What a render gives: the message, or the error it raised (type and details)."""
    try:
        return render(*args)
    except Exception as error:  # noqa: BLE001 - compared, not handled
        return type(error), str(error)


def assert_same(renderer: Renderer, kind: str, view: SharedView, person: RecipientView, url: str,
                extra: SmsExtra | None) -> None:
    reference = Renderer(renderer.env.loader.searchpath[0],  # type: ignore[union-attr]
                         renderer.protective_marking, resources=renderer.resources)
    args = (kind, view, person, url, extra)
    assert outcome(renderer.email_for, *args) == outcome(reference.render_email, *args)
    assert outcome(renderer.sms_for, *args) == outcome(reference.render_sms, *args)


def copied_templates(tmp_path: Path) -> Path:
    shutil.copytree(TEMPLATES / "email", tmp_path / "email")
    shutil.copytree(TEMPLATES / "sms", tmp_path / "sms")
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new))
    later = path.stat().st_mtime + 10  # a new mtime even on a coarse-grained filesystem
    os.utime(path, (later, later))


# --- byte-identical to a full render ----------------------------------------------------------------


@pytest.mark.parametrize("exercise", [True, False])
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_is_identical_to_a_full_render(kind: str, exercise: bool) -> None:
    worst = sample_context(kind)  # long texts: the SMS has to be shortened
    cases = [(dataclasses.replace(worst.view, exercise=exercise), worst.extra),
             (SharedView.of(incident(exercise=exercise)), short_extra(kind))]
    stencilled, full = Renderer(TEMPLATES), Renderer(TEMPLATES)
    for view, extra in cases:
        for person, url in people():
            assert stencilled.email_for(kind, view, person, url, extra) == full.render_email(kind, view, person, url, extra)
            assert stencilled.sms_for(kind, view, person, url, extra) == full.render_sms(kind, view, person, url, extra)
    # every (view, extra, roles) had a stencil: none fell back to a full render
    assert len(stencilled._email_stencils) == len(cases) * len(ROLES)
    assert len(stencilled._sms_stencils) == len(cases)
    assert all(stencil is not None for stencil in stencilled._email_stencils._items.values())
    assert all(stencil is not None for stencil in stencilled._sms_stencils._items.values())


@pytest.mark.parametrize("kind", ["update", "task", "stand_down", "closure"])
def test_sms_that_must_be_shortened_is_shortened_the_same(kind: str) -> None:
    sample = sample_context(kind)
    renderer = Renderer(TEMPLATES)
    for person, url in people()[:4]:
        sms = renderer.sms_for(kind, sample.view, person, url, sample.extra)
        assert sms == Renderer(TEMPLATES).render_sms(kind, sample.view, person, url, sample.extra)
        assert url in sms.body and sms.segments.segments <= 2
    if kind in ("update", "task"):
        assert "..." in sms.body  # the free text was cut to fit


def test_names_are_escaped_in_html_and_raw_in_text() -> None:
    renderer = Renderer(TEMPLATES)
    view = SharedView.of(incident())
    renderer.email_for("holding", view, RecipientView(name="Warm Up", salutation="Up"), link(0))
    person = RecipientView(name="O'Brien & <Sons>", salutation="Zoë Ağaoğlu", roles=("ward_councillor",))
    email = renderer.email_for("holding", view, person, link(1))
    assert "to O'Brien & <Sons> (ward councillor)." in email.text and "Hello Zoë Ağaoğlu," in email.text
    assert "to O&#39;Brien &amp; &lt;Sons&gt; (ward councillor)." in email.html
    assert f'href="{link(1)}"' in email.html


# --- the fast path is taken ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_templates_are_rendered_once_per_stencil_not_per_recipient(kind: str, renders: Counter[str]) -> None:
    sample = sample_context(kind)
    renderer = Renderer(TEMPLATES)
    person = RecipientView(name="First Person", salutation="First", roles=("ward_councillor",))
    renderer.email_for(kind, sample.view, person, link(0), sample.extra)
    renderer.sms_for(kind, sample.view, person, link(0), sample.extra)
    # the stencil and the probe that checks it: two renders of each body template
    assert renders[f"email/{kind}.txt"] == renders[f"email/{kind}.html"] == 2
    assert renders[f"email/{kind}.subject.txt"] == 1
    first = sum(renders.values())
    for i in range(1, 60):
        someone = RecipientView(name=f"Person {i} O'Brien", salutation=f"P{i}", roles=("ward_councillor",))
        renderer.email_for(kind, sample.view, someone, link(i), sample.extra)
        renderer.sms_for(kind, sample.view, someone, link(i), sample.extra)
    assert sum(renders.values()) == first


def test_a_stencil_is_shared_by_equal_views_and_not_by_different_ones(renders: Counter[str]) -> None:
    renderer = Renderer(TEMPLATES)
    person = RecipientView(name="Amara Okafor", salutation="Cllr Okafor")
    for _ in range(3):  # a fresh SharedView per message, as _prepare makes them
        renderer.email_for("holding", SharedView.of(incident()), person, link(0))
    assert renders["email/holding.html"] == 2
    renderer.email_for("holding", SharedView.of(incident(ward="Peckham Rye")), person, link(0))
    assert renders["email/holding.html"] == 4
    other = RecipientView(name="Amara Okafor", salutation="Cllr Okafor", roles=("ward_councillor",))
    assert "(ward councillor)" in renderer.email_for("holding", SharedView.of(incident()), other, link(0)).text
    assert renders["email/holding.html"] == 6


def test_the_memo_is_bounded() -> None:
    memo: _Lru[int] = _Lru(3)
    for i in range(10):
        memo.put(i, i)
    assert len(memo) == 3 and memo.get(9) == (True, 9) and memo.get(0) == (False, None)
    memo.get(7)
    memo.put(10, 10)
    assert memo.get(7) == (True, 7) and memo.get(8) == (False, None)
    renderer = Renderer(TEMPLATES)
    assert renderer._email_stencils.size == renderer._sms_stencils.size == STENCIL_MEMO_SIZE <= 1000


# --- anything a stencil cannot reproduce exactly is rendered in full -------------------------------


@pytest.mark.parametrize("value", [
    "Trailing space ", " Leading space", "Two\nlines", "Line\u2028separator", "Tab\t", "", "   ",
    "Zq9xNameStencilQv", "Zq9xLinkStencilQv Zq9xSalutationStencilQv", "OFFICIAL-SENSITIVE",
])
def test_awkward_names_give_the_same_output(value: str) -> None:
    renderer = Renderer(TEMPLATES)
    view = SharedView.of(incident(exercise=True))
    renderer.email_for("update", view, RecipientView(name="Warm Up", salutation="Up"), link(0), short_extra("update"))
    for person in (RecipientView(name=value, salutation="Cllr Okafor"),
                   RecipientView(name="Amara Okafor", salutation=value),
                   RecipientView(name=value, salutation=value, roles=("ward_councillor",))):
        assert_same(renderer, "update", view, person, link(1), short_extra("update"))


def test_markup_values_are_not_mistaken_for_text() -> None:
    renderer = Renderer(TEMPLATES)
    plain = SharedView.of(incident(outline="<b>bold</b>"))
    marked = dataclasses.replace(plain, outline=Markup("<b>bold</b>"))
    person = RecipientView(name="Amara Okafor", salutation="Cllr Okafor")
    for view in (plain, marked, plain):
        assert_same(renderer, "holding", view, person, link(0), None)
    assert_same(renderer, "holding", plain, RecipientView(name=Markup("<i>Amara</i>"), salutation="x"), link(0), None)


def test_text_that_contains_a_sentinel_is_rendered_in_full() -> None:
    renderer = Renderer(TEMPLATES)
    view = SharedView.of(incident(outline="Zq9xNameStencilQv and Zq9xLinkStencilQv"))
    extra = UpdateExtra(text=("Zq9xLinkStencil" * 9)[:len(link(0))])  # the SMS sentinel for this length
    for person, url in people()[:3]:
        assert_same(renderer, "update", view, person, url, extra)
    assert set(renderer._email_stencils._items.values()) == {None}
    assert list(renderer._sms_stencils._items.values()) == [None]


@pytest.mark.parametrize("change", [
    ("email/_layout.txt", "to {{ recipient.name }}", "to {{ recipient.name | upper }}"),
    ("email/_layout.txt", "to {{ recipient.name }}", "to {{ recipient.name | e }}"),
    ("email/_layout.html", "to {{ recipient.name }}", "to {{ recipient.name | safe }}"),
    ("email/_layout.html", "to {{ recipient.name }}", "to {{ recipient.name | length }}"),
    ("email/holding.txt", "Hello {{ recipient.salutation }}", "Hello {{ recipient.salutation | title }}"),
    ("email/_macros.html", 'href="{{ link }}"', 'href="{{ link | urlencode }}"'),
    ("email/holding.txt", "{{ link }}", "{{ link | truncate(30) }}"),
])
def test_a_template_that_transforms_a_recipient_value_is_rendered_in_full(tmp_path: Path, change: tuple[str, str, str]) -> None:
    templates = copied_templates(tmp_path)
    edit(templates / change[0], change[1], change[2])
    renderer = Renderer(templates)
    view = SharedView.of(incident(exercise=True))
    for person, url in people():
        assert_same(renderer, "holding", view, person, url, None)
    assert set(renderer._email_stencils._items.values()) == {None}


def test_an_sms_template_that_names_the_recipient_is_rendered_in_full(tmp_path: Path, renders: Counter[str]) -> None:
    templates = copied_templates(tmp_path)
    edit(templates / "sms" / "update.txt", "More: {{ link }}", "{{ recipient.salutation }}, more: {{ link }}")
    renderer = Renderer(templates)
    sample = sample_context("update")
    for person, url in people():
        assert_same(renderer, "update", sample.view, person, url, sample.extra)
    assert list(renderer._sms_stencils._items.values()) == [None]


def test_sms_links_of_other_lengths_or_characters(renders: Counter[str]) -> None:
    renderer = Renderer(TEMPLATES)
    sample = sample_context("update")
    person = RecipientView(name="Amara Okafor", salutation="Cllr Okafor")
    urls = [link(1), link(2), "https://x.example/l/" + link(3)[-34:], BASE_URL + "/a b/c", BASE_URL + "/~x/{y}",
            BASE_URL + "/ünï", link(4).replace("https", "https\u00a0"), link(5) + "\n", link(6)]
    for url in urls:
        assert_same(renderer, "update", sample.view, person, url, sample.extra)
    # one stencil per link length of the links it could take
    assert len(renderer._sms_stencils) == 2


def test_template_changes_on_disk_are_seen(tmp_path: Path) -> None:
    templates = copied_templates(tmp_path)
    renderer = Renderer(templates)
    view = SharedView.of(incident())
    sample = sample_context("update")
    person = RecipientView(name="Amara Okafor", salutation="Cllr Okafor")
    before = renderer.email_for("holding", view, person, link(0))
    sms_before = renderer.sms_for("update", sample.view, person, link(0), sample.extra)
    edit(templates / "email" / "_layout.txt", "In an emergency, always call 999.", "Call 999 in an emergency.")
    edit(templates / "email" / "holding.subject.txt", "holding notice", "holding")
    edit(templates / "sms" / "update.txt", "More: ", "Read more: ")
    after = renderer.email_for("holding", view, person, link(1))
    assert after.text != before.text.replace(link(0), link(1)) and "Call 999 in an emergency." in after.text
    assert after.subject.endswith("- holding") and after == Renderer(templates).render_email("holding", view, person, link(1))
    sms_after = renderer.sms_for("update", sample.view, person, link(1), sample.extra)
    assert "Read more: " in sms_after.body and sms_after != sms_before
    assert sms_after == Renderer(templates).render_sms("update", sample.view, person, link(1), sample.extra)


# --- the same checks as a full render -----------------------------------------------------------------


@pytest.mark.parametrize("method", ["email_for", "sms_for"])
def test_the_same_errors_as_a_full_render(method: str) -> None:
    renderer = Renderer(TEMPLATES)
    view = SharedView.of(incident())
    person = RecipientView(name="Amara Okafor", salutation="Cllr Okafor")
    call = getattr(renderer, method)
    call("holding", view, person, link(0))
    with pytest.raises(ValueError, match="needs the recipient's link"):
        call("holding", view, person, "  ")
    with pytest.raises(TypeError, match="plain text"):
        call("holding", view, person, Restricted(link(0)))
    with pytest.raises(TypeError, match="takes no extra"):
        call("holding", view, person, link(0), UpdateExtra(text="x"))
    with pytest.raises(TypeError, match="needs its UpdateExtra"):
        call("update", view, person, link(0))
    with pytest.raises(ValueError, match="unknown message kind"):
        call("gossip", view, person, link(0))
    with pytest.raises(TypeError, match="SharedView and a RecipientView"):
        call("holding", {"reference": "x"}, person, link(0))


def test_an_sms_too_long_is_refused_the_same() -> None:
    renderer = Renderer(TEMPLATES)
    view = SharedView.of(incident())
    person = RecipientView(name="Amara Okafor", salutation="Cllr Okafor")
    extra = UpdateExtra(text="\U0001F64F " * 200)
    with pytest.raises(SmsTooLong) as full:
        renderer.render_sms("update", view, person, link(0), extra)
    for _ in range(2):
        with pytest.raises(SmsTooLong) as fast:
            renderer.sms_for("update", view, person, link(0), extra)
        assert fast.value.to_dict() == full.value.to_dict()


def test_an_email_without_its_marking_or_banner_is_refused(tmp_path: Path) -> None:
    templates = copied_templates(tmp_path)
    edit(templates / "email" / "_layout.html", "<p style=\"margin:0; font-size:20px; font-weight:bold;\">"
         "EXERCISE EXERCISE EXERCISE</p>", "")
    renderer = Renderer(templates)
    person = RecipientView(name="Amara Okafor", salutation="Cllr Okafor")
    with pytest.raises(RenderingFailed, match="lacks its banner"):
        renderer.email_for("holding", SharedView.of(incident(exercise=True)), person, link(0))
    # a name that happens to carry the banner gets what a full render gives: a message
    lucky = RecipientView(name="EXERCISE EXERCISE EXERCISE", salutation="Cllr Okafor")
    assert_same(renderer, "holding", SharedView.of(incident(exercise=True)), lucky, link(1), None)
    marked = Renderer(TEMPLATES, protective_marking="NOT-IN-TEMPLATES")
    edit(templates / "email" / "_layout.txt", "{{ marking }}", "SECRET")
    with pytest.raises(RenderingFailed, match="protective marking"):
        Renderer(templates).email_for("holding", SharedView.of(incident()), person, link(0))
    assert marked.email_for("holding", SharedView.of(incident()), person, link(0)).text.startswith("NOT-IN-TEMPLATES")
