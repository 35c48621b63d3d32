"""The code blocks of README.md and docs/ marked as runnable run as a reader would type them.

A block is runnable when the HTML comment ``<!-- runnable -->`` (or ``<!-- runnable: slow -->``, for one that trains
or sweeps) stands on the line right before its ``bash`` or ``python`` fence (docs/testing.md, "Marking a block as
runnable"). A file's runnable blocks run in order in one fresh folder, so a block may use what an earlier one wrote;
a file with any slow block is a slow test.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LANGUAGES = ("bash", "python")
MARKER = re.compile(r"^(?P<indent> *)<!-- runnable(?:: (?P<lane>[a-z]+))? -->$")
# Any HTML comment that starts like a marker: it must be one, so a misspelt marker fails instead of being ignored.
LIKE_A_MARKER = re.compile(r"^\s*<!--\s*run", re.IGNORECASE)
FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)")
TIMEOUT_S = 900  # a hung block fails instead of stalling the suite


@dataclass(frozen=True)
class Block:
    """One runnable block: where it is, its language, its code (dedented), and whether it is slow."""

    source: str
    line: int
    language: str
    code: str
    slow: bool


def runnable_blocks(text: str, source: str) -> list[Block]:
    """The blocks of the Markdown ``text`` marked as runnable, in order.

    Raises:
        ValueError: A marker is malformed, names another lane than ``slow``, or is not on the line right before a
            ``bash`` or ``python`` fence at its own indentation (``source`` and the line number in the message).
    """
    lines = text.splitlines()
    blocks: list[Block] = []
    number = 0
    while number < len(lines):
        line = lines[number]
        fence = FENCE.match(line)
        if fence:  # a block, marked or not: skip to its end (a marker shown inside it is an example, not a marker)
            end = _closing_fence(lines, number, fence["fence"])
            number = end + 1
            continue
        if LIKE_A_MARKER.match(line):
            marker = MARKER.match(line)
            where = f"{source}:{number + 1}"
            if marker is None or marker["lane"] not in (None, "slow"):
                raise ValueError(
                    f"{where}: a marker is <!-- runnable --> or <!-- runnable: slow -->, not {line.strip()}"
                )
            opening = FENCE.match(lines[number + 1]) if number + 1 < len(lines) else None
            if opening is None or opening["info"] not in LANGUAGES or opening["indent"] != marker["indent"]:
                raise ValueError(f"{where}: a runnable marker must stand right before a bash or python fence")
            end = _closing_fence(lines, number + 1, opening["fence"])
            code = textwrap.dedent("\n".join(lines[number + 2 : end])) + "\n"
            blocks.append(Block(source, number + 2, opening["info"], code, slow=marker["lane"] == "slow"))
            number = end + 1
            continue
        number += 1
    return blocks


def _closing_fence(lines: list[str], opening: int, fence: str) -> int:
    """The line number of the fence that closes the block opened at ``opening`` (the last line if none does)."""
    for number in range(opening + 1, len(lines)):
        stripped = lines[number].strip()
        if stripped.startswith(fence) and set(stripped) == {fence[0]}:
            return number
    return len(lines) - 1


BLOCKS = {
    path.relative_to(ROOT).as_posix(): runnable_blocks(path.read_text(encoding="utf-8"), path.name)
    for path in DOCUMENTS
}
FILES_WITH_BLOCKS = [
    pytest.param(name, id=name, marks=[pytest.mark.slow] if any(block.slow for block in blocks) else [])
    for name, blocks in BLOCKS.items()
    if blocks
]


@pytest.mark.parametrize("name", FILES_WITH_BLOCKS)
def test_runnable_blocks_run(name, tmp_path):
    """Each block exits 0: bash with ``-euo pipefail`` (every command must succeed), python with the project's
    interpreter; ``uv run`` finds this project from the fresh folder (``UV_PROJECT``) and leaves its environment as
    it is (``UV_NO_SYNC``)."""
    if shutil.which("uv") is None:
        pytest.skip("uv is not on PATH: the docs' bash blocks run `uv run`")
    env = {**os.environ, "UV_PROJECT": str(ROOT), "UV_NO_SYNC": "1", "PYTHONUNBUFFERED": "1"}
    for block in BLOCKS[name]:
        command = {"bash": ["bash", "-euo", "pipefail", "-c"], "python": [sys.executable, "-c"]}[block.language]
        result = subprocess.run(
            [*command, block.code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
        )
        assert result.returncode == 0, (
            f"{name}:{block.line}: the {block.language} block exited {result.returncode}\n"
            f"{block.code}\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-6000:]}"
        )


def test_the_docs_have_runnable_blocks_in_both_lanes():
    """The README's tour runs in the slow lane, and the quick lane runs some page's blocks too."""
    assert any(block.slow for block in BLOCKS["README.md"])
    assert any(not any(block.slow for block in blocks) for blocks in BLOCKS.values() if blocks)


def test_a_marked_block_is_read_with_its_language_lane_and_line():
    text = (
        "Text.\n\n  <!-- runnable: slow -->\n  ```python\n  print(1)\n  ```\n\n"
        "<!-- runnable -->\n```bash\necho hi\n```\n"
    )
    assert runnable_blocks(text, "page.md") == [
        Block("page.md", 4, "python", "print(1)\n", slow=True),
        Block("page.md", 9, "bash", "echo hi\n", slow=False),
    ]


def test_a_marker_shown_inside_a_block_is_an_example():
    text = "````markdown\n<!-- runnable -->\n```bash\nfalse\n```\n````\n"
    assert runnable_blocks(text, "page.md") == []


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("<!-- runnable -->\n\n```bash\ntrue\n```\n", id="blank line between"),
        pytest.param("<!-- runnable -->\n```yaml\na: 1\n```\n", id="not bash or python"),
        pytest.param("<!-- runnable: fast -->\n```bash\ntrue\n```\n", id="no such lane"),
        pytest.param("<!-- runable -->\n```bash\ntrue\n```\n", id="misspelt"),
        pytest.param("<!-- runnable -->\n  ```bash\n  true\n  ```\n", id="another indentation than its fence"),
        pytest.param("Text.\n<!-- runnable -->\n", id="no block at all"),
    ],
)
def test_a_marker_that_marks_no_runnable_block_stops_with_its_place(text):
    with pytest.raises(ValueError, match=r"^page\.md:\d+: a .*marker"):
        runnable_blocks(text, "page.md")
