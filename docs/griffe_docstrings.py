"""Griffe extension: render gapjax's reST-flavoured docstrings as Markdown.

The docstrings are written for reading in a terminal: Sphinx roles
(``:func:`name```) and bullet lists that start right after a line of prose.
At build time (the sources are not changed) this drops the roles, keeping the
name as code, and puts a blank line before a list that follows prose, which
Markdown needs to see a list.
"""

import re

import griffe

_ROLE = re.compile(r":(?:func|class|mod|meth|attr|data|obj|exc):`~?([^`]+)`")
_BULLET = re.compile(r"^\s*[*-] ")


def to_markdown(text: str) -> str:
    """Drops Sphinx roles; a blank line before a list that follows prose."""
    text = _ROLE.sub(r"`\1`", text)
    out, in_list = [], False
    for line in text.split("\n"):
        if _BULLET.match(line):
            if out and out[-1].strip() and not in_list:
                out.append("")
            in_list = True
        elif not line.strip():
            in_list = False
        out.append(line)
    return "\n".join(out)


class MarkdownDocstrings(griffe.Extension):
    """Rewrites every docstring with :func:`to_markdown` when it is loaded."""

    def on_instance(self, *, obj, **kwargs):
        if obj.docstring is not None:
            obj.docstring.value = to_markdown(obj.docstring.value)
