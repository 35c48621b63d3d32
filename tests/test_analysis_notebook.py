"""``analysis/pareto.ipynb``: stored without outputs, and runs top to bottom against a real sweep's store."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import nbformat
import pytest
from nbclient import NotebookClient

if TYPE_CHECKING:
    from analysis_store import Store

pytest_plugins = ["analysis_store"]  # the session's one real sweep store (fixture ``analysis_store``)
NOTEBOOK = Path(__file__).resolve().parents[1] / "analysis" / "pareto.ipynb"


def test_notebook_is_stored_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.outputs == [] and cell.execution_count is None for cell in code)
    assert notebook.metadata.kernelspec.name == "python3"
    source = "\n".join(cell.source for cell in code)
    assert "FL_SWEEPS_TRACKING_URI" in source and "import fl_sweeps" not in source


@pytest.mark.slow
def test_notebook_runs_top_to_bottom_on_a_real_sweep(analysis_store: Store, tmp_path, monkeypatch):
    monkeypatch.setenv("FL_SWEEPS_TRACKING_URI", analysis_store.tracking_uri)
    monkeypatch.setenv("FL_SWEEPS_STUDY", analysis_store.study)
    monkeypatch.delenv("FL_SWEEPS_EXPERIMENT", raising=False)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # The kernel inherits this process's environment; cwd is a scratch folder (MLflow makes ./mlruns there).
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()

    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert f"study {analysis_store.study}: 6 trials" in text
    assert "hypervolume:" in text and "baseline: trial 0" in text
    assert "fl_sweeps.data.digits.load_digits(" in text and "num_clients=6" in text
    assert "INFO" not in text  # no MLflow/alembic chatter in the outputs
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 6  # front, curves, parameters, examples per client, labels per client, one client's images
