"""A compressor option of one's own with a mistake in its YAML stops ``fl-sweep`` with one line naming the key or the
stage and what is wrong, before any run is recorded, in a run and in a sweep that picks the option.

The option is a copy of ``conf/aggregate_encoder/uniform.yaml`` with one mistake, in a config directory of its own
added with ``--config-dir`` (docs/writing-a-compressor.md). The stages are built by the CLI's ``StageCheck``
callback (``fl_sweeps/compression/stage_check.py``) before the sweep opens its Optuna study or MLflow run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from cli_inprocess import fl_sweep
from conftest import TINY_LINEAR

import fl_sweeps.compression.stage_base  # noqa: F401  (TensorFlow, as the stage check imports it, at collection)
from fl_sweeps.cli import config_dir

UNIFORM = (config_dir() / "aggregate_encoder" / "uniform.yaml").read_text()
QUANTIZE = "fl_sweeps.compression.quantizers.UniformQuantize"
STAGE = "aggregate_encoder.stages[0] of aggregate_encoder=broken: "
MISTAKES = {  # what is changed in uniform.yaml -> the line fl-sweep prints
    "unknown key": (
        ("bits: 8\n", "bits: 8\nbitz: 4\n"),
        "aggregate_encoder.bitz is not a key: use one of name, stages, threshold, entropy_coding, bits, rounding, "
        "error_feedback, error_feedback_rule (did you mean bits?) (in aggregate_encoder/broken.yaml)",
    ),
    "misspelt stage argument": (
        ("    bits: ${...bits}\n    rounding", "    bitz: ${...bits}\n    rounding"),
        f"{STAGE}TypeError: UniformQuantize.__init__() got an unexpected keyword argument 'bitz'",
    ),
    "bad stage argument": (
        ("    rounding: ${...rounding}", "    rounding: sideways"),
        f"{STAGE}ValueError: rounding must be one of ('deterministic', 'stochastic'), got 'sideways'",
    ),
    "wrong _target_": (
        (QUANTIZE, f"{QUANTIZE}r"),
        f"{STAGE}_target_ {QUANTIZE}r cannot be imported: module fl_sweeps.compression.quantizers has no "
        "UniformQuantizer",
    ),
    "module not on the path": (
        (QUANTIZE, "my_compressors.quantizers.Quantize"),
        f"{STAGE}_target_ my_compressors.quantizers.Quantize cannot be imported: ModuleNotFoundError: No module named "
        "'my_compressors' (is its module on PYTHONPATH?)",
    ),
    "stage setting that refers to no key": (  # a run's config is validated first; a sweep's picks are read
        ("    bits: ${...bits}\n    rounding", "    bits: ${...bitz}\n    rounding"),
        {
            False: "Interpolation key 'bitz' not found (key aggregate_encoder.stages[0].bits)",
            True: f"{STAGE}Interpolation key 'bitz' not found",
        },
    ),
}


def _own_config(tmp_path: Path, mistake: str) -> Path:
    (old, new), _ = MISTAKES[mistake]
    assert old in UNIFORM
    folder = tmp_path / "my_conf" / "aggregate_encoder"
    folder.mkdir(parents=True)
    (folder / "broken.yaml").write_text(UNIFORM.replace(old, new).replace("name: uniform", "name: broken"))
    return tmp_path / "my_conf"


@pytest.mark.parametrize("multirun", [False, True], ids=["run", "sweep"])
@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_a_mistake_in_an_own_option_is_one_line_before_any_record(tmp_path, monkeypatch, mistake, multirun):
    for module in [name for name in sys.modules if name.split(".")[0] == "my_compressors"]:
        monkeypatch.delitem(sys.modules, module)  # as in a fresh process (another test imported its own)
    own = _own_config(tmp_path, mistake)
    picks = ["--multirun", "aggregate_encoder=choice(none,broken)"] if multirun else ["aggregate_encoder=broken"]
    done = fl_sweep(
        tmp_path,
        "--config-dir",
        str(own),
        *picks,
        f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        f"hydra.sweeper.storage=sqlite:///{tmp_path / 'optuna.db'}",
        *TINY_LINEAR,
    )
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    message = MISTAKES[mistake][1]
    expected = f"fl-sweep: error: {message[multirun] if isinstance(message, dict) else message}"
    # A sweep's check of its combinations adds the options it picked.
    assert line == expected or (multirun and line.startswith(f"{expected} (when the sweep picks ")), line
    assert any(name in line for name in ("aggregate_encoder=broken", "aggregate_encoder/broken.yaml", "stages[0]"))
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "optuna.db").exists()
