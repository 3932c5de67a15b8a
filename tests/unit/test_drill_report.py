"""The drill report's HTML: one self-contained file with the figures and three SVG charts made by matplotlib."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from sims import drill_report, readiness
from tests.unit.test_readiness import drill


def test_the_html_report_is_self_contained_with_three_svg_charts_and_the_figures() -> None:
    report = drill()
    html = drill_report.render_html(report, readiness.trend([report]))
    assert "EXERCISE EXERCISE EXERCISE" in html and "OFFICIAL-SENSITIVE" in html
    assert html.count("<svg") == 3 and "<script" not in html
    assert not re.search(r'(src|href)="(https?:)?//', html)  # nothing fetched from elsewhere
    for name in drill_report.CHARTS:
        assert f'data-chart="{name}"' in html
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids))  # charts sharing the page do not share ids
    assert '<dd data-figure="acknowledged">3 of 5 (60%)</dd>' in html
    assert "Cllr Jessop - sms: not a valid phone number (code 21211)" in html
    assert "nothing earlier to compare with" in html


def test_each_chart_is_valid_svg_with_its_labels_as_text() -> None:
    report = drill()
    svgs = drill_report.charts(report, readiness.trend([report]))
    for svg in svgs.values():
        ET.fromstring(svg)  # well-formed
    assert "police lead" in svgs["acknowledge"] and "sms" in svgs["acknowledge"]
    assert "on time" in svgs["tasks"] and "never" in svgs["tasks"]
    assert "SWK-2026-0001" in svgs["trend"]
