"""Shared fixtures, and the rule that under CI nothing may skip."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

ON_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    # A test that needs a component the machine lacks may skip for a user; under CI a
    # missing component is a failure.
    if ON_CI and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"skipped under CI=true (nothing may skip): {reason}"
