"""``analysis/pareto.ipynb`` and ``analysis/``: stored without outputs, run top to bottom against a real sweep's
store, and import nothing of fl_sweeps in any form (statically, and in the running kernel)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import nbformat
import pytest
from nbclient import NotebookClient

if TYPE_CHECKING:
    from analysis_store import Store

pytest_plugins = ["analysis_store"]  # the session's one real sweep store (fixture ``analysis_store``)
ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "analysis" / "pareto.ipynb"
OURS = ("fl_sweeps", "hydra_plugins")
# Ways to import a module by name at run time: a module name in a string would get past an import statement check.
DYNAMIC_IMPORTS = {"import_module", "__import__", "run_module", "run_path", "exec", "eval", "compile", "find_spec"}
LOADED_CHECK = "import sys\nprint('loaded:', sorted(m for m in sys.modules if m.split('.')[0] in {ours!r}))"


def import_problems(source: str) -> list[str]:
    """Imports of fl_sweeps (or hydra_plugins) and any run-time import by name, found in Python source."""
    problems = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            names = []
        problems += [f"import {name}" for name in names if name.split(".")[0] in (*OURS, "importlib", "runpy")]
        if isinstance(node, ast.Call):
            called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            if called in DYNAMIC_IMPORTS:
                problems.append(f"{called}(...) at line {node.lineno}")
    return problems


def _code(notebook: nbformat.NotebookNode) -> str:
    """The notebook's code cells as one Python source (IPython magics dropped)."""
    lines = [line for cell in notebook.cells if cell.cell_type == "code" for line in cell.source.splitlines()]
    return "\n".join(line for line in lines if not line.lstrip().startswith(("%", "!")))


def test_the_check_finds_every_form():
    for source in (
        "import fl_sweeps",
        "from fl_sweeps.data import digits",
        "import fl_sweeps.data.digits as d",
        "from fl_sweeps import data",
        "import importlib",
        "m = __import__('fl' + '_sweeps')",
        "loader = getattr(lib.import_module(module), name)",
        "exec(code)",
    ):
        assert import_problems(source), source
    assert import_problems("from analysis import runs\nprint('fl_sweeps.role')") == []


def test_notebook_is_stored_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.outputs == [] and cell.execution_count is None for cell in code)
    assert notebook.metadata.kernelspec.name == "python3"
    source = "\n".join(cell.source for cell in code)
    assert "FL_SWEEPS_TRACKING_URI" in source
    assert import_problems(_code(notebook)) == []


def test_analysis_imports_nothing_of_fl_sweeps():
    """Statically (every module of analysis/) and at run time (importing all of them loads no fl_sweeps module)."""
    modules = sorted(ROOT.joinpath("analysis").glob("*.py"))
    assert {path.stem for path in modules} >= {"runs", "pareto", "plots", "report", "sweep_report"}
    for path in modules:
        assert import_problems(path.read_text()) == [], path.name
    imports = "; ".join(f"import analysis.{path.stem}" for path in modules if path.stem != "__init__")
    check = LOADED_CHECK.format(ours=OURS)
    result = subprocess.run(
        [sys.executable, "-c", f"{imports}\n{check}"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "loaded: []"


@pytest.mark.slow
@pytest.mark.parametrize("chosen", ["study", "newest"])
def test_notebook_runs_top_to_bottom_on_a_real_sweep(analysis_store: Store, tmp_path, monkeypatch, chosen):
    """On the sweep named, and by default on the newest sweep: the store's sweep with repeats, whose configuration
    runs hold no curves, config or model (their repeats' runs do)."""
    monkeypatch.setenv("FL_SWEEPS_TRACKING_URI", analysis_store.tracking_uri)
    if chosen == "study":
        monkeypatch.setenv("FL_SWEEPS_STUDY", analysis_store.study)
    else:
        monkeypatch.delenv("FL_SWEEPS_STUDY", raising=False)
    monkeypatch.delenv("FL_SWEEPS_EXPERIMENT", raising=False)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(LOADED_CHECK.format(ours=OURS)))  # whatever the import form
    # The kernel inherits this process's environment; cwd is a scratch folder (MLflow makes ./mlruns there).
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()

    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    expected = (
        f"study {analysis_store.study}: 6 trials"
        if chosen == "study"
        else (f"study {analysis_store.repeats_study}: 4 trials")
    )
    assert expected in text
    assert "hypervolume:" in text and "baseline: trial 0" in text
    assert "data: digits (" in text and "num_clients=6" in text  # read from MLflow
    assert "every trial of the sweep trained on this data" in text and "config.yaml of trial 0:" in text
    assert "_target_" not in text and "_partial_" not in text
    assert "INFO" not in text  # no MLflow/alembic chatter in the outputs
    assert text.strip().splitlines()[-1] == "loaded: []"  # the kernel never loaded fl_sweeps
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 5  # front, curves, parameters, bits per direction, loss and accuracy per round
