"""The TensorFlow, TFF and tensor_encoding versions this package's workarounds were written for, checked at import.

The modules of ``fl_sweeps.tff_runtime`` reach into TFF's execution internals (``sync_execution_context``, the
remote executor's gRPC stub, the native compiler's transformations), AutoGraph's conversion rules and CPython's exit
sequence, because none of these has a public API for what fl-sweeps needs. Such code breaks silently when the
libraries change, so another version stops the program at once with one line naming what was expected.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Mapping

from fl_sweeps.errors import UnsupportedVersionError

# Distribution -> the versions the workarounds were written and tested for (a prefix ending in "." is a series).
SUPPORTED: dict[str, str] = {
    "tensorflow": "2.14.",
    "tensorflow-federated": "0.87.0",
    "tensorflow-model-optimization": "0.7.5",  # tensor_encoding
}


def _installed(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def supports(supported: str, installed: str | None) -> bool:
    """Whether ``installed`` is the version ``supported`` names (or in its series, for a prefix ending in ".")."""
    if installed is None:
        return False
    return installed.startswith(supported) if supported.endswith(".") else installed == supported


def check_versions(
    installed: Callable[[str], str | None] = _installed, supported: Mapping[str, str] = SUPPORTED
) -> None:
    """Raise unless every distribution of ``supported`` is installed in its supported version.

    Args:
        installed: Distribution name -> its installed version, or None when missing (default: this environment).
        supported: Distribution name -> supported version (``SUPPORTED``).

    Raises:
        UnsupportedVersionError: One line naming every distribution found in another version, and what is needed.
    """
    wrong = {name: installed(name) for name, version in supported.items() if not supports(version, installed(name))}
    if wrong:
        found = ", ".join(f"{name} {version or 'missing'}" for name, version in wrong.items())
        needed = ", ".join(f"{name} {_label(version)}" for name, version in supported.items())
        raise UnsupportedVersionError(
            f"fl_sweeps.tff_runtime was written for {needed}, but found {found}: install those versions "
            "(uv sync) or port its workarounds"
        )


def _label(version: str) -> str:
    return f"{version}x" if version.endswith(".") else version
