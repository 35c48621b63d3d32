"""Finding one part of an encoded message (a nested dict of tensors) by the end of its key, for compressor tests."""

from __future__ import annotations

import numpy as np


def find_part(message: dict, suffix: str) -> np.ndarray:
    """The one tensor of a (nested) message whose key path ends with ``suffix``."""
    found, stack = [], [("", message)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict):
            stack.extend((f"{path}/{key}", value) for key, value in node.items())
        elif path.endswith(suffix):
            found.append(node)
    assert len(found) == 1, (suffix, list(message))
    return found[0]
