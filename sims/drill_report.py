"""Charts (matplotlib, SVG) and the self-contained HTML of a drill's readiness report."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any, cast

import matplotlib

matplotlib.use("Agg")  # no display: render to files and strings only
import matplotlib.pyplot as plt
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup
from matplotlib.ticker import MaxNLocator

from sims.readiness import Outcome, ReadinessReport, TrendPoint, change

PAGES = Path(__file__).resolve().parent.parent / "templates" / "pages"
CHARTS = ("acknowledge", "tasks", "trend")
CHART_TITLES = {"acknowledge": "Median time to acknowledge per role and channel (minutes)",
                "tasks": "Tasks done on time, late and never, per role",
                "trend": "Trend across drills"}
COLOURS = {"sms": "#1d70b8", "email": "#f47738", "whatsapp": "#00703c",
           Outcome.ON_TIME: "#00703c", Outcome.LATE: "#f47738", Outcome.NEVER: "#d4351c",
           Outcome.OPEN: "#b1b4b6", Outcome.WAIVED: "#6f777b"}
_RC: dict[str, Any] = {"svg.fonttype": "none", "svg.hashsalt": "sims", "font.size": 10, "font.family": "sans-serif"}


def _svg(fig: Any) -> str:
    out = io.StringIO()
    fig.savefig(out, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = out.getvalue()
    return text[text.index("<svg"):]  # no XML prolog or doctype: the SVG can sit inside HTML


def _minutes(value: float | None) -> float:
    return 0.0 if value is None else value / 60


def _line(value: float | None) -> float:
    """Minutes for a trend line; a gap (NaN) where a drill has no figure, rather than a false zero."""
    return float("nan") if value is None else value / 60


def acknowledge_chart(report: ReadinessReport) -> str:
    """Horizontal bars: each role's median time to acknowledge, one bar per channel."""
    roles = [r for r in report.roles if r.ack_seconds] or list(report.roles[:1])
    channels = sorted({c.channel for r in roles for c in r.channels if c.ack_seconds}) or ["sms"]
    with plt.rc_context(cast(Any, _RC)):
        fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * max(len(roles), 1) * max(len(channels), 1)))
        height = 0.8 / len(channels)
        for n, channel in enumerate(channels):
            values = [_minutes(next((c.median_ack for c in r.channels if c.channel == channel), None)) for r in roles]
            ax.barh([i + n * height for i in range(len(roles))], values, height=height, label=channel,
                    color=COLOURS.get(channel, "#505a5f"))
        ax.set_yticks([i + height * (len(channels) - 1) / 2 for i in range(len(roles))],
                      [r.name for r in roles])
        ax.invert_yaxis()
        ax.set_xlabel("minutes from the first message to the acknowledgement")
        ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1, 1))
        ax.spines[["top", "right"]].set_visible(False)
        if not any(r.ack_seconds for r in roles):
            ax.set_xlim(0, 1)
            ax.text(0.5, 0.5, "nobody acknowledged", transform=ax.transAxes, ha="center")
        return _svg(fig)


def tasks_chart(report: ReadinessReport) -> str:
    """Stacked horizontal bars: each role's tasks on time, late, never (and open, waived)."""
    roles = [r for r in report.roles if r.tasks.total]
    with plt.rc_context(cast(Any, _RC)):
        fig, ax = plt.subplots(figsize=(7, 0.6 + 0.4 * max(len(roles), 1)))
        left = [0] * len(roles)
        for outcome in Outcome.ALL:
            values = [getattr(r.tasks, outcome) for r in roles]
            if any(values):
                ax.barh(range(len(roles)), values, left=left, label=outcome.replace("_", " "),
                        color=COLOURS[outcome])
                left = [a + b for a, b in zip(left, values)]
        ax.set_yticks(range(len(roles)), [r.name for r in roles])
        ax.invert_yaxis()
        ax.set_xlabel("tasks")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1, 1))
        ax.spines[["top", "right"]].set_visible(False)
        if not roles:
            ax.text(0.5, 0.5, "no tasks in this drill", transform=ax.transAxes, ha="center")
        return _svg(fig)


def trend_chart(points: list[TrendPoint]) -> str:
    """Two panels over the drills, oldest first: median delivery and acknowledgement times; task outcomes."""
    labels = [p.reference for p in points]
    xs = list(range(len(points)))
    with plt.rc_context(cast(Any, _RC)):
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
        top.plot(xs, [_line(p.median_delivery) for p in points], marker="o", label="median time to delivery",
                 color="#1d70b8")
        top.plot(xs, [_line(p.median_ack) for p in points], marker="s", label="median time to acknowledge",
                 color="#f47738")
        top.set_ylabel("minutes")
        top.legend(frameon=False, loc="upper left", bbox_to_anchor=(1, 1))
        bottom_ = [0] * len(points)
        for outcome in (Outcome.ON_TIME, Outcome.LATE, Outcome.NEVER):
            values = [getattr(p, outcome) for p in points]
            bottom.bar(xs, values, bottom=bottom_, width=0.5, label=outcome.replace("_", " "), color=COLOURS[outcome])
            bottom_ = [a + b for a, b in zip(bottom_, values)]
        bottom.set_ylabel("tasks")
        bottom.legend(frameon=False, loc="upper left", bbox_to_anchor=(1, 1))
        bottom.set_xlim(-0.75, max(len(points), 3) - 0.25)
        bottom.set_xticks(xs, labels, rotation=20, ha="right")
        for ax in (top, bottom):
            ax.spines[["top", "right"]].set_visible(False)
        return _svg(fig)


def charts(report: ReadinessReport, points: list[TrendPoint]) -> dict[str, str]:
    """Every chart of the report as SVG text, by name."""
    return {"acknowledge": acknowledge_chart(report), "tasks": tasks_chart(report), "trend": trend_chart(points)}


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _signed(value: float | None, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "rate":
        return f"{100 * value:+.0f} points"
    if kind == "seconds":
        return ("+" if value >= 0 else "-") + _duration(abs(value))
    return f"{value:+.0f}"


def environment(pages: Path = PAGES) -> Environment:
    """Jinja over templates/pages with the report's filters (the console adds them to its own too)."""
    env = Environment(loader=FileSystemLoader(str(pages)), autoescape=select_autoescape(("html",)),
                      undefined=StrictUndefined)
    add_filters(env)
    return env


def add_filters(env: Environment) -> None:
    env.filters.update(duration=_duration, percent=_percent, signed=_signed,
                       label=lambda v: str(v).replace("_", " "))


_SVG_ID = re.compile(r'\bid="([^"]+)"')


def context(report: ReadinessReport, points: list[TrendPoint]) -> dict[str, Any]:
    """What both the HTML file and the console page show."""
    return {"report": report, "points": points, "change": change(points, report.reference),
            "titles": CHART_TITLES}


def _prefixed(svg: str, name: str) -> Markup:
    """`svg` with each id (and each reference to one) prefixed by `name`: several charts share one page."""
    renamed = _SVG_ID.sub(lambda m: f'id="{name}-{m.group(1)}"', svg)
    return Markup(renamed.replace("url(#", f"url(#{name}-").replace('xlink:href="#', f'xlink:href="#{name}-'))


def render_html(report: ReadinessReport, points: list[TrendPoint], env: Environment | None = None) -> str:
    """The report as one HTML file: styles and SVG charts inline, nothing fetched."""
    svgs = {name: _prefixed(svg, name) for name, svg in charts(report, points).items()}
    env = env or environment()
    return env.get_template("drills/report.html").render(svgs=svgs, **context(report, points))
