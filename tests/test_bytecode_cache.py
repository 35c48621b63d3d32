"""Python's bytecode cache stays on where ``PYTHONDONTWRITEBYTECODE`` is set: importing fl_sweeps (or analysis)
turns it back on, so that only the first process compiles TensorFlow's and TFF's sources (fl_sweeps/__init__.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize("package", ["fl_sweeps", "analysis"])
def test_a_module_imported_after_the_package_is_cached_despite_the_environment(tmp_path: Path, package: str):
    (tmp_path / "some_module.py").write_text("VALUE = 1\n")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(tmp_path)}
    before = "import sys, some_module; assert sys.dont_write_bytecode"
    subprocess.run([sys.executable, "-c", before], env=env, check=True, timeout=60)
    assert not (tmp_path / "__pycache__").exists()  # the environment's setting holds without the package

    after = f"import {package}, some_module"
    subprocess.run([sys.executable, "-c", after], env=env, check=True, timeout=60)
    assert [p.name.split(".")[0] for p in (tmp_path / "__pycache__").iterdir()] == ["some_module"]
