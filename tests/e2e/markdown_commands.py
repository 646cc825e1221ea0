"""The commands a Markdown document shows, as a reader would copy them."""

from __future__ import annotations

import re

_FENCED_BLOCK = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
_INLINE_CODE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
_COMMENT = re.compile(r"\s+#.*$")


def fenced_blocks(markdown: str) -> list[str]:
    return _FENCED_BLOCK.findall(markdown)


def fenced_commands(markdown: str, program: str) -> list[str]:
    """Every `program …` command line of the fenced code blocks, in order: a line ending
    in `\\` joined with the next, the `# comment` after a command removed."""
    commands = []
    for block in fenced_blocks(markdown):
        logical: list[str] = []
        for line in block.splitlines():
            logical.append(line.strip())
            if line.rstrip().endswith("\\"):
                continue
            command = " ".join(part.removesuffix("\\").strip() for part in logical)
            logical = []
            command = _COMMENT.sub("", command).strip()
            if command.split(" ", 1)[0] == program:
                commands.append(command)
    return commands


def inline_commands(markdown: str, program: str) -> list[str]:
    """`program …` spans of inline code in the prose (outside fenced blocks)."""
    prose = _FENCED_BLOCK.sub("", markdown)
    return [span for span in _INLINE_CODE.findall(prose) if span.split(" ", 1)[0] == program]
