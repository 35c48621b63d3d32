"""No file of ours reaches into Optuna's or Hydra's private parts: no private module, no private attribute.

Read from the syntax tree, not by text search, so neither formatting nor aliases hide a use:

- an import of a private module (``hydra._internal``, ``optuna.storages._cached_storage``) or of anything from
  ``hydra_plugins.hydra_optuna_sweeper`` (no longer a dependency);
- ``obj._name`` or ``getattr(obj, "_name")`` where ``_name`` is a private attribute, method or property of an
  Optuna or Hydra class (collected from their installed sources), unless ``obj`` is ``self``/``cls`` or one of our
  own modules.
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ("fl_sweeps", "hydra_plugins", "tests", "benchmarks", "analysis")
LIBRARIES = ("optuna", "hydra")
OURS = ("fl_sweeps", "hydra_plugins", "analysis", "conftest", "test_", "analysis_store", "shared_data")


# The public methods of every named tuple (collections.namedtuple documents them with a leading underscore).
NAMEDTUPLE_API = frozenset({"_asdict", "_replace", "_fields", "_field_defaults", "_make"})


def _private(name: str) -> bool:
    """``_name``, but not ``__dunder__``, Hydra's public config keys (``_target_``, ``_recursive_``) nor a named
    tuple's public methods (``_asdict``)."""
    return name.startswith("_") and not name.endswith("_") and name not in NAMEDTUPLE_API


@cache
def library_private_names() -> frozenset[str]:
    """Private names that Optuna's and Hydra's classes define (methods, properties, attributes set on self)."""
    names: set[str] = set()
    for library in LIBRARIES:
        spec = importlib.util.find_spec(library)
        assert spec is not None and spec.submodule_search_locations, library
        for path in Path(next(iter(spec.submodule_search_locations))).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef):
                    for item in node.body:
                        if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and _private(item.name):
                            names.add(item.name)
                        targets = item.targets if isinstance(item, ast.Assign) else [getattr(item, "target", None)]
                        names |= {t.id for t in targets if isinstance(t, ast.Name) and _private(t.id)}
                elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and _private(node.attr):
                    if isinstance(node.value, ast.Name) and node.value.id == "self":
                        names.add(node.attr)
    return frozenset(names)


def _our_files() -> list[Path]:
    return sorted(p for folder in CHECKED for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


def _own_module_names(tree: ast.AST) -> set[str]:
    """Names bound in this file to our own modules (``from fl_sweeps import runtime``, ``import conftest``)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0].startswith(OURS):
            names |= {alias.asname or alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0].startswith(OURS):
                    names.add(alias.asname or alias.name.split(".")[0])
    return names


def private_uses(source: str) -> Iterator[tuple[int, str]]:
    """``(line, what)`` for every private Optuna/Hydra module import or attribute read in ``source``."""
    tree = ast.parse(source)
    own = _own_module_names(tree) | {"self", "cls"}
    library_names = library_private_names()
    for node in ast.walk(tree):
        modules = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for module in modules:
            parts = module.split(".")
            if parts[0] in LIBRARIES and any(_private(part) for part in parts):
                yield node.lineno, f"private module {module}"
            if module.startswith("hydra_plugins.hydra_optuna_sweeper"):
                yield node.lineno, f"{module} (hydra-optuna-sweeper is not a dependency)"
        attribute = None
        if isinstance(node, ast.Attribute) and _private(node.attr):
            attribute, receiver = node.attr, node.value
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and _private(node.args[1].value)
        ):
            attribute, receiver = node.args[1].value, node.args[0]
        if attribute is None or attribute not in library_names:
            continue
        if isinstance(receiver, ast.Name) and receiver.id in own:
            continue
        yield node.lineno, f"{ast.unparse(receiver)}.{attribute}"


def test_the_check_finds_what_it_looks_for():
    """The check itself, on the forms of private access the sweeper used to make."""
    source = """
import optuna
from hydra._internal.callbacks import Callbacks
from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides
from optuna.storages import _cached_storage
trial_id = trial._trial_id
storage = study._storage
number = self.link.study._study_id
value = getattr(ret, "_return_value")
trial._suggest("lr", distribution)
"""
    found = [what for _, what in private_uses(source)]
    assert "private module hydra._internal.callbacks" in found
    assert any("hydra-optuna-sweeper" in what for what in found)
    assert "private module optuna.storages._cached_storage" in found
    for expected in ("trial._trial_id", "study._storage", "self.link.study._study_id", "ret._return_value"):
        assert expected in found
    assert "trial._suggest" in found
    clean = """
from fl_sweeps import experiment
experiment._BUILT.clear()
self._storage.record_heartbeat(trial_id)
storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
"""
    assert list(private_uses(clean)) == []


@pytest.mark.parametrize("path", _our_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_private_optuna_or_hydra_access(path):
    uses = [f"{path.relative_to(ROOT)}:{line}: {what}" for line, what in private_uses(path.read_text())]
    assert not uses, "\n".join(uses)
