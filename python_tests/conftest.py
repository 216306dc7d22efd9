"""Shared fixtures. Tests run against the *installed* package (see README)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared third-party data folder (``CGNF_DATA_DIR``); skips when it is absent."""
    d = os.environ.get("CGNF_DATA_DIR")
    if not d or not Path(d).is_dir():
        pytest.skip("CGNF_DATA_DIR is not set to the shared data folder")
    return Path(d)
