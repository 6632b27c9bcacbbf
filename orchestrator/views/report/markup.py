"""Markup that cannot forget to escape: elements built from data, templates filled with them.

Every text and attribute value passed to :func:`el` is escaped; only
:class:`Markup` (what :func:`el` and :func:`fill` return) goes in as is. SVG
shapes without children are written self-closed (``<rect .../>``), every
other element with its end tag, so the page parses the same in a browser and
in an XML or HTML parser.
"""

from __future__ import annotations

import functools
import html
from collections.abc import Iterable, Mapping
from importlib import resources
from string import Template
from typing import Any


class Markup(str):
    """Text that is already HTML: inserted as is, never escaped again."""

    __slots__ = ()


_EMPTY = frozenset({"rect", "line", "path", "circle", "polyline", "polygon"})
"""Elements written self-closed when they have no children."""


def esc(value: Any) -> Markup:
    """``value`` as HTML text (None is empty); Markup passes through."""
    if isinstance(value, Markup):
        return value
    return Markup(html.escape("" if value is None else str(value), quote=True))


def join(parts: Iterable[Any], separator: str = "") -> Markup:
    """Several children as one: Markup as is, anything else escaped; None skipped."""
    return Markup(separator.join(esc(part) for part in parts if part is not None))


def el(tag: str, attrs: Mapping[str, Any] | None = None, *children: Any) -> Markup:
    """``<tag attrs>children</tag>``; ``<tag attrs/>`` for an SVG shape without children.

    Attribute values are escaped (None drops the attribute, a float is written
    with 3 decimals); children are escaped unless Markup, None skipped.
    """
    text = "".join(f' {name}="{esc(_attr(value))}"' for name, value in (attrs or {}).items()
                   if value is not None)
    body = join(children)
    if not body and tag in _EMPTY:
        return Markup(f"<{tag}{text}/>")
    return Markup(f"<{tag}{text}>{body}</{tag}>")


def _attr(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") or "0"
    return value


@functools.cache
def template(name: str) -> Template:
    """The template file ``name`` of this package (``string.Template``, ``$name`` holes)."""
    return Template(resources.files(__package__).joinpath(name).read_text(encoding="utf-8"))


@functools.cache
def resource(name: str) -> str:
    """The text of this package's file ``name`` (the stylesheet), to inline in a page."""
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def fill(name: str, **parts: Markup) -> Markup:
    """The template ``name`` with every hole filled; a hole left empty is a KeyError."""
    return Markup(template(name).substitute({key: esc(value) for key, value in parts.items()}))


__all__ = ["Markup", "el", "esc", "fill", "join", "resource", "template"]
