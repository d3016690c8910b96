"""Griffe extension for the API pages: read the package's reStructuredText habits as Markdown.

The package's Google-style docstrings name their doctests ``Example:`` (which Griffe reads as an admonition, so the
``>>>`` lines would render as nested quotes) and refer to objects with Sphinx roles (``:class:`~a.B` ``). This
extension rewrites, in the docstring text only (the source files are untouched):

- a section title ``Example:`` alone on its line to ``Examples:``, Griffe's examples section (doctests as code);
- ``:role:`~a.b.C` `` to ``C`` and ``:role:`a.b.C` `` to ``a.b.C`` as inline code;
- a paragraph ending in the reStructuredText literal marker ``::`` to a single ``:``.

Loaded by mkdocs.yml (``extensions: [docs/hooks/griffe_docstrings.py]``).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE_TITLE = re.compile(r"^([ \t]*)Example:[ \t]*$", re.MULTILINE)
_ROLE = re.compile(r":(?:class|func|meth|attr|mod|data|obj|exc|const):`(~?)([^`]+)`")
_LITERAL_MARKER = re.compile(r"(\S)::[ \t]*$", re.MULTILINE)


def _role_to_code(match: re.Match[str]) -> str:
    short, target = match.group(1), match.group(2)
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


def markdown_docstring(text: str) -> str:
    """Return ``text`` with the rewrites listed in the module docstring applied."""
    text = _EXAMPLE_TITLE.sub(r"\1Examples:", text)
    text = _ROLE.sub(_role_to_code, text)
    return _LITERAL_MARKER.sub(r"\1:", text)


class MarkdownDocstrings(griffe.Extension):
    """Apply :func:`markdown_docstring` to every docstring Griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown_docstring(obj.docstring.value)
