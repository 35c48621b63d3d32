"""In CI (``CI`` set) a test whose prerequisite is missing fails instead of skipping (tests/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import in_ci

TESTS = Path(__file__).resolve().parent
SKIPPING_TEST = """
import pytest

def test_needs_a_server():
    pytest.skip("no server here")

@pytest.mark.xfail(reason="a known bug", strict=True)
def test_known_bug():
    assert False
"""


def _pytest(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess:
    (tmp_path / "test_prerequisite.py").write_text(SKIPPING_TEST)
    env = {k: v for k, v in os.environ.items() if k != "CI"} | ({"CI": ci} if ci is not None else {})
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    args = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "conftest",
        "-p",
        "no:randomly",
        "-q",
        "-rA",
        "--rootdir",
        str(tmp_path),
    ]
    return subprocess.run([*args, str(tmp_path)], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize(
    ("ci", "expected"),
    [
        ("true", True),
        ("1", True),
        ("TRUE ", True),
        (None, False),
        ("", False),
        ("false", False),
        ("0", False),
        ("no", False),
    ],
)
def test_which_values_of_ci_mean_ci(ci, expected):
    assert in_ci(ci) is expected


def test_a_skip_fails_in_ci(tmp_path):
    """A pytest session of its own (the conftest reads ``CI`` once, at import)."""
    result = _pytest(tmp_path, "true")
    assert result.returncode == 1, result.stdout
    assert "1 failed, 1 xfailed" in result.stdout
    assert "skipped in CI, where every prerequisite must be there: Skipped: no server here" in result.stdout


def test_a_skip_skips_elsewhere(tmp_path):
    result = _pytest(tmp_path, None)
    assert result.returncode == 0, result.stdout
    assert "1 skipped, 1 xfailed" in result.stdout
