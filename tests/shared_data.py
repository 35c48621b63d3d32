"""Finds the real data sets in ../shared/data beside the repository, or skips (in CI: fails) the test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_data_dir() -> Path:
    """Returns ../shared/data; skips the test if absent, fails instead if FL_SWEEPS_REQUIRE_SHARED_DATA=1 or in CI
    (``CI`` set: tests/conftest.py fails every skipped test)."""
    if not SHARED_DATA.is_dir():
        message = f"../shared/data not found: {SHARED_DATA}"
        if os.environ.get("FL_SWEEPS_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return SHARED_DATA
