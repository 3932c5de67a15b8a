"""The review pack as one self-contained HTML file (inline CSS, no external resources), from templates/pack/."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from sims.review_pack import WITHHELD, Pack


def render_html(pack: Pack, templates_dir: Path, marking: str) -> str:
    """The pack as HTML a person can open, print or file: every value escaped, nothing fetched."""
    env = Environment(loader=FileSystemLoader(str(templates_dir)), autoescape=select_autoescape(("html",)),
                      undefined=StrictUndefined)
    return env.get_template("pack/pack.html").render(pack=pack.data, marking=marking, withheld=WITHHELD)


__all__ = ["render_html"]
