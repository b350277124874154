"""Typed checks of what lkca-edge reads back (manifests, run records, bench options): every field
against its dataclass annotation, one line naming the file and the field on a mismatch.

``check_fields(Manifest, data, path)`` reads the annotations (``str``, ``int``, ``float``,
``dict``, ``list[str]``, ``X | None``, ...) so a field added to a dataclass is checked too,
without a second table to keep in step. Standard library only.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing

from lkca_edge.errors import UserError, brief

_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
          dict: "a mapping", list: "a list", tuple: "a list", type(None): "null"}


def describe(hint) -> str:
    """'an integer', 'a list of strings', 'a string or null', ..."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in typing.get_args(hint))
    if origin in (list, tuple):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        inner = describe(args[0]) if args else "values"
        return f"a list of {inner.removeprefix('a ').removeprefix('an ')}s" if args else "a list"
    if origin is dict:
        return "a mapping"
    return _NAMES.get(hint, getattr(hint, "__name__", str(hint)))


def conforms(value, hint) -> bool:
    """Does ``value`` (parsed JSON/YAML) have the type ``hint``? Numbers must be finite; an
    integer is never a bool; a float field takes an integer."""
    if hint is typing.Any or hint is object:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, a) for a in typing.get_args(hint))
    if hint is type(None) or hint is None:
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return (isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value))
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return not args or all(conforms(v, args[0]) for v in value)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            return False
        args = typing.get_args(hint)
        return not args or all(conforms(k, args[0]) and conforms(v, args[1]) for k, v in value.items())
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def field_hints(cls) -> dict[str, object]:
    """A dataclass's field types, with ``from __future__ import annotations`` strings resolved."""
    return typing.get_type_hints(cls)


def check_value(value, hint, source, field: str) -> None:
    if not conforms(value, hint):
        raise UserError(f"{source}: field {field!r} must be {describe(hint)}, got {brief(value)}")


def check_fields(cls, data: dict, source, *, prefix: str = "", required: bool = True,
                 unknown: bool = False) -> None:
    """Check ``data`` against dataclass ``cls``: unknown keys refused (unless ``unknown``),
    fields without a default required (when ``required``), every present field's type."""
    if not isinstance(data, dict):
        raise UserError(f"{source}: {prefix.rstrip('.') or 'the file'} must be a JSON object, "
                        f"got {brief(data)}")
    hints = field_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    if not unknown:
        extra = sorted(brief(k) for k in data if k not in names)
        if extra:
            raise UserError(f"{source}: unknown field(s) {', '.join(prefix + e for e in extra)}")
    if required:
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in data
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise UserError(f"{source}: missing field(s) {', '.join(prefix + m for m in missing)}")
    for name in names:
        if name in data:
            check_value(data[name], hints[name], source, prefix + name)


__all__ = ["check_fields", "check_value", "conforms", "describe", "field_hints"]
