"""Fuzz tests (Hypothesis, schemathesis): part of the default run, bounded in examples and time."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fuzz: property-based fuzzing (runs by default; bounded)")
