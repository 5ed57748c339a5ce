"""Suite-wide: say which rproxy build the tests run against, and refuse to
run against compiled modules older than their sources."""

from __future__ import annotations

import pytest

from rproxy.buildinfo import build_info


def pytest_report_header() -> str:
    return f"rproxy build: {build_info().describe()}"


def pytest_sessionstart(session: pytest.Session) -> None:
    stale = build_info().stale
    if stale:
        raise pytest.UsageError(
            f"compiled modules older than their sources: {', '.join(stale)}; "
            "the tests would run the old code. Rebuild them with "
            "'pip install -e .' (or go pure with 'RPROXY_PURE=1 pip install -e .')"
        )
