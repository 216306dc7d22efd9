"""Shared fixtures and hooks. Tests run against the *installed* package (see README).

Tests that need a CUDA device carry the ``cuda`` marker (``helpers.needs_cuda``) and are skipped
here where there is none.

The shared third-party data (``CGNF_DATA_DIR``): tests that read it take the ``shared_data``
fixture and carry the ``data`` marker (checked at collection). Unset, they are skipped; set to a
path that is not a folder, the run stops at the start (a typo must not turn the data tests into
skips). With ``CGNF_REQUIRE_DATA=1`` (``.ci/run`` sets it) a skipped ``data`` test fails,
except where the skip is for a missing CUDA device (the ``cuda`` marker).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def _data_dir() -> str | None:
    return os.environ.get("CGNF_DATA_DIR") or None


def _require_data() -> bool:
    return os.environ.get("CGNF_REQUIRE_DATA", "") not in ("", "0")


def pytest_configure(config: pytest.Config) -> None:
    d = _data_dir()
    if d is not None and not Path(d).is_dir():
        raise pytest.UsageError(f"CGNF_DATA_DIR={d!r} is not a folder (from {os.getcwd()}): point it at the shared "
                                "data folder, or unset it to skip the tests that need the data")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skips the ``cuda`` tests (helpers.needs_cuda) where no CUDA device is usable; checks that
    the ``data`` marker and the ``shared_data`` fixture go together (``-m "not data"`` must
    leave out every test that reads the data, and only tests that read it)."""
    import cgnf_fast

    if not cgnf_fast.cuda_available():
        skip = pytest.mark.skip(reason="no CUDA device (or built without CUDA)")
        for item in items:
            if item.get_closest_marker("cuda") is not None:
                item.add_marker(skip)
    bad = [f"{item.nodeid}: {'uses shared_data without the data marker' if uses else 'has the data marker but does not use shared_data'}"
           for item in items
           for uses in ["shared_data" in getattr(item, "fixturenames", ())]
           if uses != (item.get_closest_marker("data") is not None)]
    if bad:
        raise pytest.UsageError("data tests must both carry @pytest.mark.data and take the shared_data fixture:\n  "
                                + "\n  ".join(bad))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if (report.skipped and _require_data() and item.get_closest_marker("data") is not None
            and item.get_closest_marker("cuda") is None and not hasattr(report, "wasxfail")):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"CGNF_REQUIRE_DATA is set, but this data test was skipped: {reason}"
    return report


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Tests that need a CUDA device carry the ``cuda`` marker (``helpers.needs_cuda``) and are skipped
here where there is none.

The shared third-party data folder (``CGNF_DATA_DIR``); skips when it is not set."""
    d = _data_dir()
    if d is None:
        pytest.skip("CGNF_DATA_DIR is not set to the shared data folder")
    return Path(d)
