"""Griffe extension for the API pages: show doctest examples as code.

The package's docstrings carry runnable ``>>>`` examples as plain paragraphs (pytest runs them with
``--doctest-modules``). Markdown would read ``[[2, 4], [3, 0]]`` in their output as reference links, so
each run of ``>>>`` lines and their output is fenced as a ``pycon`` code block before rendering.
Blocks that are already literal (after a ``::`` line, indented) are left alone.
"""
from typing import Any, List

from griffe import Extension, Object

__all__ = ["DoctestAsCode"]


def fence_doctests(text: str) -> str:
    """Wrap every ``>>>`` block that is not already a literal block in a fenced ``pycon`` block."""
    lines, out, i = text.splitlines(), [], 0
    literal_indent = None  # indentation of the paragraph that ended with "::"
    while i < len(lines):
        line = lines[i]
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        if stripped and literal_indent is not None and indent <= literal_indent:
            literal_indent = None
        if stripped.startswith(">>>") and literal_indent is None:
            block: List[str] = []
            while i < len(lines) and lines[i].strip():
                block.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i].lstrip())
                i += 1
            pad = " " * indent
            out += [pad + "```pycon"] + [pad + b for b in block] + [pad + "```"]
            continue
        if stripped.endswith("::") and literal_indent is None:
            literal_indent = indent
        out.append(line)
        i += 1
    return "\n".join(out)


class DoctestAsCode(Extension):
    """Fence the ``>>>`` examples of every loaded docstring (see the module doc)."""

    def on_object(self, *, obj: Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = fence_doctests(obj.docstring.value)
