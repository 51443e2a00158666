"""Show the Sphinx cross-reference roles of the provider's reST docstrings as inline code.

The docstrings name other objects the way Sphinx reads them (``:func:`~.layout.plan_key```);
Markdown has no such roles, so the API pages would print them literally. This Griffe
extension, loaded by mkdocstrings (``mkdocs.yml``), turns each into inline code with the name
Sphinx would show: the last part after ``~``, the name without leading dots otherwise, the
title of ``title <target>``.
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension, Object

_ROLE = re.compile(r":(?:py:)?(?:func|class|mod|meth|attr|data|exc|obj|const):`([^`]+)`")
_TITLED = re.compile(r"^(.*?)\s*<[^>]+>$")


def _shown(target: str) -> str:
    titled = _TITLED.match(target.strip())
    if titled:
        return titled.group(1)
    if target.startswith("~"):
        return target.lstrip("~").rsplit(".", 1)[-1]
    return target.lstrip(".")


def as_code(text: str) -> str:
    """``text`` with every Sphinx role replaced by inline code."""
    return _ROLE.sub(lambda match: f"`{_shown(match.group(1))}`", text)


class SphinxRolesAsCode(Extension):
    """Rewrites every object's docstring once the object tree is loaded."""

    def on_object(self, *, obj: Object, **kwargs: Any) -> None:
        if not obj.is_alias and obj.docstring is not None:
            obj.docstring.value = as_code(obj.docstring.value)
