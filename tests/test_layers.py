"""The one-way layers (``[tool.importlinter]`` in pyproject.toml) hold, and ``lint-imports`` catches a back edge."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = str(Path(sys.executable).parent / "lint-imports")
PACKAGES = ("fl_sweeps", "analysis", "hydra_plugins")


def _lint_imports(source_root: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` with the project's contracts over the packages found first in ``source_root``."""
    env = {**os.environ, "PYTHONPATH": str(source_root)}
    return subprocess.run(
        [LINT_IMPORTS, "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=source_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_layer_contracts_are_kept():
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def _copy_packages(target: Path) -> None:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, target / package, ignore=shutil.ignore_patterns("__pycache__", "*.ipynb"))


def _add_import(path: Path, line: str) -> None:
    text = path.read_text()
    head, _, rest = text.partition("from __future__ import annotations\n")
    path.write_text(f"{head}from __future__ import annotations\n{line}\n{rest}")


def test_a_back_edge_breaks_its_contract(tmp_path):
    """A copy of the packages with two back edges, one direct and one indirect: each breaks its contract."""
    _copy_packages(tmp_path)
    _add_import(tmp_path / "analysis" / "runs.py", "import fl_sweeps.errors  # noqa")
    _add_import(tmp_path / "fl_sweeps" / "data" / "partition.py", "import fl_sweeps.experiment  # noqa")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    broken = [line for line in result.stdout.splitlines() if line.rstrip().endswith("BROKEN")]
    assert len(broken) == 2, result.stdout[-3000:]
    assert "analysis.runs -> fl_sweeps.errors" in result.stdout
    assert "fl_sweeps.data.partition -> fl_sweeps.experiment" in result.stdout
    assert "Contracts: 5 kept, 2 broken." in result.stdout
