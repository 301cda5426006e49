"""Typed, range-checked settings dataclasses: the machinery behind every config section.

A section is a frozen dataclass deriving from :class:`Validated`, each field declared with
:func:`bounded` (a default and an optional numeric range) and a docstring. Sections live
next to their users (``MAMLConfig`` in :mod:`maml_rl.agents.maml`, ``TRPOConfig`` next to
MAML-TRPO, ...); :mod:`maml_rl.config` assembles them into the run's ``Config``.
:func:`build` validates a nested mapping before construction, so that each error is one
line naming the dotted key, what was expected and what was given.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal

__all__ = ["Validated", "bounded", "build", "check_bounds", "coerce", "got", "type_name"]


def bounded(
    default: Any = dataclasses.MISSING,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Any:
    """A dataclass field with an optional numeric range (checked on construction)."""
    bounds = {k: v for k, v in {"ge": ge, "gt": gt, "le": le, "lt": lt}.items() if v is not None}
    return dataclasses.field(default=default, metadata={"bounds": bounds})


class Validated:
    """Checks every field's type and range when a section is constructed directly.

    (:func:`config_from_dict` checks before construction, so that its errors carry the
    full dotted key; this catches ``MAMLConfig(meta_batch_size=0)`` in code.)
    """

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value):
                continue
            value = coerce(hints[f.name], value, f.name)
            check_bounds(value, f.metadata.get("bounds", {}), f.name)
            object.__setattr__(self, f.name, value)


def type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin is tuple:
        inner = typing.get_args(tp)[0]
        plural = {int: "integers", float: "numbers", str: "strings"}.get(inner, str(inner))
        return f"a list of {plural}"
    if origin is dict:
        return "a mapping"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def got(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def all_keys(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key of a config dataclass (sections and leaves)."""
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        keys.append(prefix + f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            keys.extend(all_keys(hints[f.name], f"{prefix}{f.name}."))
    return keys


def unknown_key(cls: type, key: str, prefix: str, root: type) -> ValueError:
    """The error for ``prefix + key``, not a field of ``cls``, with the likeliest key meant:
    the same name in another section (a key put in the wrong section: ``fast_lr=0.1`` for
    ``maml.fast_lr=0.1``), else the closest name in the key's own section, else the closest
    dotted key anywhere."""
    names = [f.name for f in dataclasses.fields(cls)]
    dotted = prefix + key
    everywhere = all_keys(root)
    same_leaf = [k for k in everywhere if k.rsplit(".", 1)[-1] == key]
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    suggestion = same_leaf[0] if same_leaf else prefix + close[0] if close else None
    if suggestion is None:
        close = difflib.get_close_matches(dotted, everywhere, n=1, cutoff=0.6)
        suggestion = close[0] if close else None
    where = f"in section '{prefix[:-1]}'" if prefix else "at the top level"
    hint = f"; did you mean '{suggestion}'?" if suggestion else f" (valid: {', '.join(names)})"
    return ValueError(f"unknown config key '{dotted}' {where}{hint}")


def coerce(tp: Any, value: Any, key: str, root: type | None = None) -> Any:
    """Check ``value`` against the annotation ``tp``; return it in canonical form."""
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ValueError(f"{key} must be a section (a mapping of keys), got {got(value)}")
        return build(tp, value, f"{key}.", root)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ValueError(f"{key} must be {type_name(tp)}, got null")
        (inner,) = [a for a in args if a is not type(None)]
        try:
            return coerce(inner, value, key, root)
        except ValueError:
            raise ValueError(f"{key} must be {type_name(tp)}, got {got(value)}") from None
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed or isinstance(value, bool):
            close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"{key} must be {type_name(tp)}, got {got(value)}{hint}")
        return value
    if origin is tuple:
        (inner, _) = typing.get_args(tp)
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
            raise ValueError(f"{key} must be {type_name(tp)}, got {got(value)}")
        return tuple(coerce(inner, v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise ValueError(f"{key} must be a mapping with string keys, got {got(value)}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{key} must be a boolean (true/false), got {got(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{key} must be an integer, got {got(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{key} must be a number, got {got(value)}")
        if not math.isfinite(value):
            raise ValueError(f"{key} must be finite, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{key} must be a string, got {got(value)}")
        return value
    raise TypeError(f"unsupported config annotation {tp!r} for {key}")  # pragma: no cover


_SYMBOLS = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
_CHECKS = {
    "ge": lambda v, lim: v >= lim,
    "gt": lambda v, lim: v > lim,
    "le": lambda v, lim: v <= lim,
    "lt": lambda v, lim: v < lim,
}


def check_bounds(value: Any, bounds: Mapping[str, float], key: str) -> None:
    if not bounds or value is None:
        return
    for v in value if isinstance(value, tuple) else (value,):
        if not all(_CHECKS[op](v, lim) for op, lim in bounds.items()):
            allowed = " and ".join(f"{_SYMBOLS[op]} {lim:g}" for op, lim in bounds.items())
            raise ValueError(f"{key} must be {allowed}, got {value!r}")


def build(cls: type, data: Mapping[str, Any], prefix: str = "", root: type | None = None) -> Any:
    """``cls(**data)`` with every key, type and range checked first (errors name the
    dotted key ``prefix + key``; ``root`` is the top-level class, for suggestions)."""
    root = root or cls
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise unknown_key(cls, str(key), prefix, root)
    kwargs = {}
    for name, value in data.items():
        key = prefix + name
        coerced = coerce(hints[name], value, key, root)
        check_bounds(coerced, fields[name].metadata.get("bounds", {}), key)
        kwargs[name] = coerced
    return cls(**kwargs)
