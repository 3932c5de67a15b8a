"""Messages from templates/: SMS and email for each kind, from views that hold no restricted text.

Templates see only `SharedView`, `RecipientView`, `Resources`, the recipient's link and a typed
`extra` whose fields are shareable by construction; an email subject sees `SharedView` alone. The
exercise prefix of SMS and subjects is added here, not left to each template.

`email_for` and `sms_for` give what `render_email` and `render_sms` give, from a stencil rendered once
per shared message and memoised, with each recipient's name, salutation and link filled in.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, fields, is_dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Generic, TypeVar
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template, meta, select_autoescape
from markupsafe import Markup, escape

from sims.errors import SimsError
from sims.gsm import GSM7_BASIC, SegmentInfo, segments, to_gsm7
from sims.model import Incident, Level, Restricted, State
from sims.views import (
    TYPE_LABELS,
    BriefingExtra,
    ClosureExtra,
    Extra,
    RecipientView,
    Resources,
    SharedView,
    SmsExtra,
    StandDownExtra,
    TaskExtra,
    UpdateExtra,
    as_utc,
)

__all__ = [
    "KINDS", "BriefingExtra", "ClosureExtra", "RenderedEmail", "RenderedSms", "Renderer", "RenderingFailed",
    "SampleContext", "SmsExtra", "SmsTooLong", "StandDownExtra", "TaskExtra", "UpdateExtra",
    "format_local_date", "format_local_time", "sample_context",
]

KINDS: tuple[str, ...] = ("holding", "briefing", "task", "update", "stand_down", "closure")
MAX_SMS_SEGMENTS = 2
MIN_SMS_FREE_TEXT = 24  # shorter than this, a shortened text says nothing: try the short prefix
SMS_EXERCISE_PREFIXES = ("EXERCISE EXERCISE EXERCISE\n", "[EXERCISE] ")
SUBJECT_EXERCISE_PREFIX = "EXERCISE: "
EXERCISE_BANNER = "EXERCISE EXERCISE EXERCISE"
DEFAULT_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTH_NAMES = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
                "October", "November", "December")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class RenderingFailed(SimsError):
    """A message could not be rendered as the protocol requires; `kind` says which."""

    code = "rendering_failed"

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        super().__init__(message)

    def to_dict(self) -> dict[str, object]:
        return {**super().to_dict(), "kind": self.kind}


class SmsTooLong(RenderingFailed):
    """The SMS needs more than `limit` parts even with its free text shortened; `info` says how long."""

    code = "sms_too_long"

    def __init__(self, kind: str, info: SegmentInfo, limit: int = MAX_SMS_SEGMENTS) -> None:
        self.info = info
        self.limit = limit
        super().__init__(kind, (
            f"The {kind.replace('_', ' ')} SMS would be {info.segments} parts ({info.units} {info.encoding} "
            f"units); the limit is {limit}. "
            + ("Remove emoji and non-Latin characters: any one of them makes every part less than half "
               "as long." if info.encoding == "UCS-2" else f"Shorten the template sms/{kind}.txt.")
        ))

    def to_dict(self) -> dict[str, object]:
        return {**super().to_dict(), "segments": self.info.segments, "units": self.info.units,
                "encoding": self.info.encoding, "limit": self.limit}


# kind -> (extra type, required?)
EXTRA_FOR: dict[str, tuple[type[Extra] | None, bool]] = {
    "holding": (None, False),
    "briefing": (BriefingExtra, False),
    "task": (TaskExtra, True),
    "update": (UpdateExtra, True),
    "stand_down": (StandDownExtra, True),
    "closure": (ClosureExtra, True),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class RenderedSms:
    body: str
    segments: SegmentInfo


@dataclass(frozen=True, slots=True, kw_only=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


def format_local_time(value: datetime, tz: ZoneInfo, *, year: bool = False) -> str:
    """A UTC-aware time as people in the borough read it: '21:40 GMT, Mon 30 Nov' (BST in summer)."""
    local = as_utc(value, "time").astimezone(tz)
    text = f"{local:%H:%M} {local.tzname()}, {_DAYS[local.weekday()]} {local.day} {_MONTHS[local.month - 1]}"
    return f"{text} {local.year}" if year else text


def format_local_date(value: datetime, tz: ZoneInfo) -> str:
    """The local day of a UTC-aware time, spelt out: 'Monday 30 November'."""
    local = as_utc(value, "time").astimezone(tz)
    return f"{_DAY_NAMES[local.weekday()]} {local.day} {_MONTH_NAMES[local.month - 1]}"


def _paragraphs(text: str) -> Markup:
    """Plain text as HTML paragraphs (blank lines split them, single newlines become <br>), escaped."""
    blocks = [b.strip() for b in re.split(r"\n\s*\n", text.strip()) if b.strip()]
    return Markup("\n").join(
        Markup("<p>%s</p>") % Markup("<br>\n").join(escape(line) for line in block.splitlines())
        for block in blocks
    )


def _href(address: str) -> str:
    """A web address from configuration as a link target; anything but http(s) gets https://."""
    return address if re.match(r"^https?://", address) else "https://" + address


def _fits(text: str) -> bool:
    return segments(text).segments <= MAX_SMS_SEGMENTS


def _shorten(text: str, limit: int | None) -> str:
    """`text` cut to at most `limit` characters, at a word where one is near, ending in '...'."""
    if limit is None or len(text) <= limit:
        return text
    cut = text[: max(limit - 3, 0)]
    word = cut.rsplit(" ", 1)[0]
    cut = word if len(cut) - len(word) <= 15 else cut
    return cut.rstrip(" ,;:.-") + "..."


_E = TypeVar("_E", bound=Extra)


def _texts(extra: Extra | None) -> list[str]:
    return [] if extra is None else [v for f in fields(extra) if isinstance(v := getattr(extra, f.name), str)]


def _map_text(extra: _E | None, change: Callable[[str], str]) -> _E | None:
    """`extra` with `change` applied to each of its text fields."""
    if extra is None:
        return None
    changed = {f.name: change(v) for f in fields(extra) if isinstance(v := getattr(extra, f.name), str)}
    return replace(extra, **changed)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _tidy_text(text: str) -> str:
    lines = [line.rstrip() for line in text.strip().splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)) + "\n"


# --- stencils: one render per shared message, the recipient's values put in afterwards ---------------
#
# A fan-out sends one message to many people; only the recipient's name, salutation and link differ.
# A stencil is the message rendered once with sentinels in their place, cut at each sentinel. It is
# kept only if a second render, with probe values full of characters that escaping, case changes or
# trimming would alter, equals the stencil filled with those probes (raw in text, escaped in HTML): a
# template that transforms a value, or text that happens to contain a sentinel, falls back to a full
# render. Values are filled in only if, like the probes, they are one line with no whitespace at
# either end, so `_tidy_text` and `.strip()` treat them exactly as they treat the sentinels.

STENCIL_MEMO_SIZE = 256
_NAME, _SALUTATION, _LINK = "Zq9xNameStencilQv", "Zq9xSalutationStencilQv", "Zq9xLinkStencilQv"
_SENTINELS = (_NAME, _SALUTATION, _LINK)
_PROBES = ("\u00c7a & <Probe> O'Neil \"Zo\u00eb\" x", "Dr <b>Sal</b> & Ag\u0306ao\u011flu's",
           "https://probe.example/l/a?b=1&c=<2>'\"")
_SMS_LINK_SENTINEL, _SMS_LINK_PROBE = "Zq9xLinkStencil", "Pr0b/E&:?=_-.x"
_LINK_CHARS = frozenset(c for c in GSM7_BASIC if not c.isspace())  # one septet each, kept by to_gsm7
_SMS_RECIPIENT = RecipientView(name="-", salutation="-")  # SMS templates that name nobody


def _cycle(pattern: str, length: int) -> str:
    return (pattern * (length // len(pattern) + 1))[:length]


def _plain(value: str) -> bool:
    """True if `value` is plain text on one line with no whitespace at either end (so not empty)."""
    return type(value) is str and value.splitlines() == [value] and value == value.strip()


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _memo_key(value: object) -> Hashable:
    """A key equal only for values that render the same: types are part of it (a `Markup` and a
    `str` are equal but escape differently; so are True and 1), times keep their offset and zone.
    TypeError for anything else, so the caller renders in full rather than guess."""
    kind = type(value)
    if kind is str:
        return value  # the only bare key: every other one is a tuple
    if value is None or isinstance(value, (str, bool, int)):
        return kind, value
    if isinstance(value, float):
        return kind, repr(value)
    if isinstance(value, datetime):
        return kind, value.isoformat(), value.fold, value.tzinfo
    if isinstance(value, tuple):
        return kind, tuple([_memo_key(v) for v in value])
    if is_dataclass(value) and not isinstance(value, type):
        names = _FIELD_NAMES.get(kind)
        if names is None:
            names = _FIELD_NAMES[kind] = tuple(f.name for f in fields(value))
        return kind, names, tuple([_memo_key(getattr(value, name)) for name in names])
    raise TypeError(f"no memo key for {kind.__name__}")


_V = TypeVar("_V")


class _Lru(Generic[_V]):
    """A bounded, thread-safe memo: the least recently used entry goes when it is full."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Hashable, _V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> tuple[bool, _V | None]:
        with self._lock:
            if key not in self._items:
                return False, None
            self._items.move_to_end(key)
            return True, self._items[key]

    def put(self, key: Hashable, value: _V) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


@dataclass(frozen=True, slots=True)
class _Cut:
    """Rendered text cut at its sentinels: `literals` around them, `slots` says which value goes where."""

    literals: tuple[str, ...]
    slots: tuple[int, ...]

    @classmethod
    def of(cls, text: str, sentinels: tuple[str, ...]) -> _Cut:
        parts = re.split("(" + "|".join(map(re.escape, sentinels)) + ")", text)
        return cls(tuple(parts[0::2]), tuple(sentinels.index(s) for s in parts[1::2]))

    def fill(self, values: tuple[str, ...]) -> str:
        out = [self.literals[0]]
        for slot, literal in zip(self.slots, self.literals[1:], strict=True):
            out += (values[slot], literal)
        return "".join(out)


@dataclass(frozen=True, slots=True)
class _Deps:
    """A template and those it extends, includes or imports, and the names they take from the context."""

    templates: tuple[Template, ...]
    variables: frozenset[str]


@dataclass(frozen=True, slots=True, kw_only=True)
class _EmailStencil:
    subject: str
    text: _Cut
    html: _Cut
    templates: tuple[Template, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class _SmsStencil:
    body: _Cut
    segments: SegmentInfo
    templates: tuple[Template, ...]


class Renderer:
    """Renders each message kind from `templates_dir` (sms/, email/) with undefined names refused."""

    def __init__(self, templates_dir: Path | str = DEFAULT_TEMPLATES,
                 protective_marking: str = "OFFICIAL-SENSITIVE", *, resources: Resources | None = None,
                 timezone: str = "Europe/London") -> None:
        if not protective_marking.strip():
            raise ValueError("protective_marking must not be empty (e.g. OFFICIAL-SENSITIVE)")
        self.protective_marking = protective_marking.strip()
        self.resources = resources or Resources()
        self.tz = ZoneInfo(timezone)
        self.env = Environment(
            loader=FileSystemLoader(str(templates_dir)),
            undefined=StrictUndefined,
            autoescape=select_autoescape(("html",), default_for_string=False, default=False),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.policies["truncate.leeway"] = 0
        self.env.filters.update(
            local_time=lambda value, year=False: format_local_time(value, self.tz, year=year),
            local_date=lambda value: format_local_date(value, self.tz),
            paragraphs=_paragraphs,
            href=_href,
        )
        self._email_stencils: _Lru[_EmailStencil | None] = _Lru(STENCIL_MEMO_SIZE)
        self._sms_stencils: _Lru[_SmsStencil | None] = _Lru(STENCIL_MEMO_SIZE)
        self._deps: dict[str, _Deps | None] = {}
        self._settings: tuple[tuple[object, ...], Hashable] | None = None

    def _context(self, kind: str, view: SharedView, recipient: RecipientView, link: str,
                 extra: SmsExtra | None) -> dict[str, Any]:
        if kind not in EXTRA_FOR:
            raise ValueError(f"unknown message kind {kind!r}; known: {', '.join(KINDS)}")
        if not isinstance(view, SharedView) or not isinstance(recipient, RecipientView):
            raise TypeError("messages are rendered from a SharedView and a RecipientView only")
        expected, required = EXTRA_FOR[kind]
        if extra is None and required:
            raise TypeError(f"a {kind} message needs its {expected.__name__ if expected else ''}")
        if extra is not None and (expected is None or not isinstance(extra, expected)):
            raise TypeError(f"a {kind} message takes {expected.__name__ if expected else 'no extra'}, "
                            f"not {type(extra).__name__}")
        if isinstance(link, Restricted) or not isinstance(link, str):
            raise TypeError("the link must be plain text")
        if not link.strip():
            raise ValueError("every message needs the recipient's link")
        return {"kind": kind, "view": view, "recipient": recipient, "link": link, "extra": extra,
                "resources": self.resources, "marking": self.protective_marking}

    def render_sms(self, kind: str, view: SharedView, recipient: RecipientView, link: str,
                   extra: SmsExtra | None = None) -> RenderedSms:
        """The SMS for `kind` in at most two parts, GSM-7 where possible; SmsTooLong if it cannot fit.

        If it would not fit, the free text of `extra` (task title, update, reason) is shortened at a
        word, then the exercise prefix falls back to `[EXERCISE]`; the link always stays whole.
        """
        context = self._context(kind, view, recipient, link, extra)
        template = self.env.get_template(f"sms/{kind}.txt")
        gsm_extra = _map_text(extra, to_gsm7)  # typography first, so shortening sees what is sent

        def body(prefix: str, limit: int | None) -> str:
            shortened = _map_text(gsm_extra, lambda v: _shorten(v, limit))
            return prefix + to_gsm7(_one_line(template.render({**context, "extra": shortened})))

        longest = max((len(v) for v in _texts(gsm_extra)), default=0)
        prefixes = SMS_EXERCISE_PREFIXES if view.exercise else ("",)
        for prefix in prefixes:
            whole = body(prefix, None)
            best = whole if _fits(whole) else None
            if best is None:
                lo, hi = MIN_SMS_FREE_TEXT, longest - 1
                while lo <= hi:  # the longest shortened free text that still fits
                    mid = (lo + hi) // 2
                    candidate = body(prefix, mid)
                    if _fits(candidate):
                        best, lo = candidate, mid + 1
                    else:
                        hi = mid - 1
            if best is not None:
                return RenderedSms(body=best, segments=segments(best))
        raise SmsTooLong(kind, segments(body(prefixes[-1], None)))

    def render_subject(self, kind: str, view: SharedView) -> str:
        """The email subject: it sees the SharedView and nothing else."""
        if not isinstance(view, SharedView):
            raise TypeError("an email subject is rendered from a SharedView only")
        subject = _one_line(self.env.get_template(f"email/{kind}.subject.txt").render(view=view))
        return SUBJECT_EXERCISE_PREFIX + subject if view.exercise else subject

    def default_talking_points(self, view: SharedView) -> str:
        """The starting draft of the members' briefing lines, from templates/email/_talking_points.txt."""
        template = self.env.get_template("email/_talking_points.txt")
        return _tidy_text(template.render({"view": view, "resources": self.resources})).strip()

    def render_email(self, kind: str, view: SharedView, recipient: RecipientView, link: str,
                     extra: SmsExtra | None = None) -> RenderedEmail:
        """Subject, plain text and HTML of the email for `kind`, marked at top and bottom."""
        context = self._context(kind, view, recipient, link, extra)
        subject = self.render_subject(kind, view)
        text, html = self._email_bodies(kind, context)
        return self._checked(kind, view, RenderedEmail(subject=subject, text=text, html=html))

    def _email_bodies(self, kind: str, context: dict[str, Any]) -> tuple[str, str]:
        return (_tidy_text(self.env.get_template(f"email/{kind}.txt").render(context)),
                self.env.get_template(f"email/{kind}.html").render(context).strip() + "\n")

    def _checked(self, kind: str, view: SharedView, email: RenderedEmail) -> RenderedEmail:
        for part, body in (("text", email.text), ("html", email.html)):
            if body.count(self.protective_marking) < 2:
                raise RenderingFailed(kind, f"the {kind} email {part} must show the protective marking "
                                            f"{self.protective_marking} at top and bottom")
            if view.exercise and EXERCISE_BANNER not in body:
                raise RenderingFailed(kind, f"the {kind} email {part} of an exercise lacks its banner")
        return email

    # --- one render per fan-out --------------------------------------------------------------------

    def email_for(self, kind: str, view: SharedView, recipient: RecipientView, link: str,
                  extra: SmsExtra | None = None) -> RenderedEmail:
        """The same as `render_email`, from a stencil rendered once per kind, view, roles and extra."""
        self._context(kind, view, recipient, link, extra)
        values = (recipient.name, recipient.salutation, link)
        try:
            key = (kind, _memo_key(view), _memo_key(recipient.roles), _memo_key(extra), self._settings_key())
        except TypeError:
            key = None
        if key is None or not all(_plain(v) for v in values):
            return self.render_email(kind, view, recipient, link, extra)
        found, stencil = self._email_stencils.get(key)
        if not found or (stencil is not None and not self._fresh(stencil.templates)):
            stencil = self._email_stencil(kind, view, recipient.roles, extra)
            self._email_stencils.put(key, stencil)
        if stencil is None:
            return self.render_email(kind, view, recipient, link, extra)
        html_values = tuple(str(escape(v)) for v in values)
        return self._checked(kind, view, RenderedEmail(
            subject=stencil.subject, text=stencil.text.fill(values), html=stencil.html.fill(html_values)))

    def sms_for(self, kind: str, view: SharedView, recipient: RecipientView, link: str,
                extra: SmsExtra | None = None) -> RenderedSms:
        """The same as `render_sms`, from a stencil rendered once per kind, view, extra and link length.

        The body's length decides how free text is shortened, so the stencil's link has the real
        link's length and, like it, only single-septet GSM-7 characters that `to_gsm7` keeps: every
        choice render_sms makes, and the parts it counts, are then the same for both.
        """
        self._context(kind, view, recipient, link, extra)
        try:
            key = (kind, _memo_key(view), _memo_key(extra), len(link), self._settings_key())
        except TypeError:
            key = None
        if key is None or type(link) is not str or not _LINK_CHARS.issuperset(link):
            return self.render_sms(kind, view, recipient, link, extra)
        found, stencil = self._sms_stencils.get(key)
        if not found or (stencil is not None and not self._fresh(stencil.templates)):
            stencil = self._sms_stencil(kind, view, extra, len(link))
            self._sms_stencils.put(key, stencil)
        if stencil is None:
            return self.render_sms(kind, view, recipient, link, extra)
        return RenderedSms(body=stencil.body.fill((link,)), segments=stencil.segments)

    def _settings_key(self) -> Hashable:
        """What else a message depends on: the marking, the resources and the timezone."""
        settings = (self.protective_marking, self.resources, self.tz)
        cached = self._settings
        if cached is None or any(a is not b for a, b in zip(cached[0], settings, strict=True)):
            cached = self._settings = (settings, (settings[0], _memo_key(settings[1]), settings[2]))
        return cached[1]

    def _fresh(self, templates: tuple[Template, ...]) -> bool:
        """False if a template file changed since it was loaded (when the environment reloads them)."""
        return not self.env.auto_reload or all(t.is_up_to_date for t in templates)

    def _dependencies(self, name: str) -> _Deps | None:
        """The templates `name` uses and the context names they read; None if one is chosen at run time."""
        deps = self._deps.get(name)
        if deps is not None and self._fresh(deps.templates):
            return deps
        loader = self.env.loader
        if loader is None:
            return None
        seen: dict[str, Template] = {}
        variables: set[str] = set()
        todo = [name]
        while todo:
            current = todo.pop()
            if current in seen:
                continue
            seen[current] = self.env.get_template(current)
            source, _filename, _uptodate = loader.get_source(self.env, current)
            tree = self.env.parse(source)
            variables |= meta.find_undeclared_variables(tree)
            for ref in meta.find_referenced_templates(tree):
                if ref is None:
                    self._deps[name] = None
                    return None
                todo.append(ref)
        self._deps[name] = _Deps(tuple(seen.values()), frozenset(variables))
        return self._deps[name]

    def _email_stencil(self, kind: str, view: SharedView, roles: tuple[str, ...],
                       extra: SmsExtra | None) -> _EmailStencil | None:
        try:
            parts = [self._dependencies(f"email/{kind}.{part}") for part in ("subject.txt", "txt", "html")]
            if any(deps is None for deps in parts):
                return None
            templates = tuple(dict.fromkeys(t for deps in parts if deps for t in deps.templates))

            def bodies(name: str, salutation: str, link: str) -> tuple[str, str]:
                person = RecipientView(name=name, salutation=salutation, roles=roles)
                return self._email_bodies(kind, self._context(kind, view, person, link, extra))

            text, html = bodies(*_SENTINELS)
            stencil = _EmailStencil(subject=self.render_subject(kind, view), text=_Cut.of(text, _SENTINELS),
                                    html=_Cut.of(html, _SENTINELS), templates=templates)
            probe_text, probe_html = bodies(*_PROBES)
        except Exception:  # noqa: BLE001 - the full render raises it, or succeeds where sentinels could not
            return None
        if (stencil.text.fill(_PROBES) != probe_text
                or stencil.html.fill(tuple(str(escape(p)) for p in _PROBES)) != probe_html):
            return None
        return stencil

    def _sms_stencil(self, kind: str, view: SharedView, extra: SmsExtra | None,
                     length: int) -> _SmsStencil | None:
        sentinel, probe = _cycle(_SMS_LINK_SENTINEL, length), _cycle(_SMS_LINK_PROBE, length)
        try:
            deps = self._dependencies(f"sms/{kind}.txt")
            if deps is None or "recipient" in deps.variables:
                return None
            sms = self.render_sms(kind, view, _SMS_RECIPIENT, sentinel, extra)
            probed = self.render_sms(kind, view, _SMS_RECIPIENT, probe, extra)
        except Exception:  # noqa: BLE001 - SmsTooLong and the like: the full render raises it again
            return None
        body = _Cut.of(sms.body, (sentinel,))
        if body.fill((probe,)) != probed.body or probed.segments != sms.segments:
            return None
        return _SmsStencil(body=body, segments=sms.segments, templates=deps.templates)


@dataclass(frozen=True, slots=True, kw_only=True)
class SampleContext:
    """Arguments for `render_sms` / `render_email`: `renderer.render_sms(kind, *sample.args())`."""

    view: SharedView
    recipient: RecipientView
    link: str
    extra: SmsExtra | None

    def args(self) -> tuple[SharedView, RecipientView, str, SmsExtra | None]:
        return self.view, self.recipient, self.link, self.extra


SAMPLE_LINK = "https://sims.southwark.gov.uk/a/" + "Xk7_pQ2-mZ9rT4vW8yB1cD6fG3hJ5kL0nP2sUa"
_SAMPLE_WORDS = (
    "Police have extended the cordon on Tower Bridge Road and the dispersal order now covers the "
    "estate and the surrounding streets until Thursday morning; officers will be at the community "
    "centre from nine, and the Wellbeing Hub will run a drop-in at the library after school."
)


def sample_context(kind: str) -> SampleContext:
    """Worst-case sample data for `kind` (longest ward, type and level, long texts, 70-char link,
    an exercise, a restricted name): for previews and for tests that every message still fits."""
    if kind not in EXTRA_FOR:
        raise ValueError(f"unknown message kind {kind!r}; known: {', '.join(KINDS)}")
    occurred = datetime(2026, 11, 30, 21, 40, tzinfo=UTC)
    state = {"stand_down": State.STOOD_DOWN, "closure": State.CLOSED}.get(kind, State.ESCALATED)
    incident = Incident(
        id="0" * 32, reference="SWK-2026-1130-0142", version=7, state=state,
        type=max(TYPE_LABELS, key=lambda t: len(TYPE_LABELS[t])), level=Level.BOROUGH,
        occurred_at=occurred, raised_at=occurred + timedelta(minutes=12),
        ward="London Bridge & West Bermondsey",
        location="Outside the Co-op on Tower Bridge Road, near the junction with Druid Street and the "
                 "entrance to the Arnold Estate",
        outline="A man in his twenties was found with stab wounds and taken to hospital; police are at "
                "the scene and a cordon is in place. " + _SAMPLE_WORDS,
        restricted=Restricted("Victim: John Smith, 24, of Druid Street; suspect known to police"),
        exercise=True, raised_by="duty.officer", gold=True, updated_at=occurred + timedelta(hours=3),
    )
    extras: dict[str, SmsExtra | None] = {
        "holding": None,
        "briefing": BriefingExtra(
            talking_points="I know many of you will be shocked and upset. " + _SAMPLE_WORDS),
        "task": TaskExtra(title="Wellbeing Hub outreach to residents of the estate and the streets around "
                                "the cordon, including the youth club and both primary schools nearby",
                          due_at=occurred + timedelta(hours=48)),
        "update": UpdateExtra(text=_SAMPLE_WORDS),
        "stand_down": StandDownExtra(reason="Police have confirmed the injury was not caused by an assault, "
                                            "so the protocol threshold is not met. " + _SAMPLE_WORDS),
        "closure": ClosureExtra(reason="The review is complete and the actions are handed to the "
                                       "Community Safety Partnership. " + _SAMPLE_WORDS),
    }
    return SampleContext(
        view=SharedView.of(incident),
        recipient=RecipientView(name="Councillor Oluwaseun Abdul-Rahman Fitzgerald-Okonkwo",
                                salutation="Cllr Fitzgerald-Okonkwo",
                                roles=("ward_councillor", "cabinet_member_community_safety")),
        link=SAMPLE_LINK, extra=extras[kind],
    )
