"""Strict, typed conversion of plain YAML values into frozen dataclasses (no other kdpipe imports).

Every params block in kdpipe is a frozen dataclass. `from_dict(cls, mapping, where)` builds one
strictly: an unknown key, a missing required key, a wrong type or a value out of its declared range
raises `KdpipeError` naming the key path (`where`). Ranges are declared on the field with
`bounded(default, ge=..., gt=..., le=..., lt=...)` so the check lives next to the field's comment.
Modules that own a params block (data sources, model init, methods) import this module only, so
`pipeline.params` can import them without cycles.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal

from pipeline.errors import KdpipeError

_OPS = {
    "ge": (lambda v, b: v >= b, ">="),
    "gt": (lambda v, b: v > b, ">"),
    "le": (lambda v, b: v <= b, "<="),
    "lt": (lambda v, b: v < b, "<"),
}


def bounded(default: Any, **bounds: float) -> Any:
    """A dataclass field with a default and numeric bounds (ge/gt/le/lt) checked by `from_dict`."""
    unknown = set(bounds) - set(_OPS)
    if unknown:
        raise ValueError(f"unknown bound(s) {sorted(unknown)}; use {sorted(_OPS)}")
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"bounds": bounds})
    return dataclasses.field(default=default, metadata={"bounds": bounds})


def check_bounds(value: Any, bounds: dict[str, float], where: str) -> None:
    """Raise KdpipeError if a number (or every number of a list) breaks one of `bounds`."""
    values = value if isinstance(value, (list, tuple)) else [value]
    for v in values:
        if v is None or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        for op, b in bounds.items():
            ok, sym = _OPS[op]
            if not ok(v, b):
                raise KdpipeError(f"{where}: must be {sym} {b:g}, got {v!r}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def convert(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp` and convert it; raise KdpipeError naming `where`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return convert(value, a, where)
            except KdpipeError as e:
                errors.append(str(e))
        raise KdpipeError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is Literal:
        if value not in args:
            raise KdpipeError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise KdpipeError(f"{where}: expected a list, got {value!r}")
        return [convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise KdpipeError(f"{where}: expected a mapping, got {value!r}")
        return {str(k): convert(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    return _scalar(value, tp, where)


def _scalar(value: Any, tp: Any, where: str) -> Any:
    if tp is bool:
        if not isinstance(value, bool):
            raise KdpipeError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise KdpipeError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise KdpipeError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise KdpipeError(f"{where}: expected a string, got {value!r}")
        return value
    raise KdpipeError(f"{where}: unsupported type {_type_name(tp)}")


def from_dict(cls: type, data: Any, where: str) -> Any:
    """Build dataclass `cls` from a mapping, strictly (unknown keys, wrong types, out-of-range values)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise KdpipeError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise KdpipeError(f"{where}.{unknown[0]}: unknown key; known keys: {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = convert(data[name], hints[name], f"{where}.{name}")
            check_bounds(kwargs[name], f.metadata.get("bounds", {}), f"{where}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise KdpipeError(f"{where}.{name}: required key is missing")
    try:
        return cls(**kwargs)
    except KdpipeError as e:  # a __post_init__ check: prefix where it happened
        msg = str(e)
        raise KdpipeError(msg if msg.startswith(where) else f"{where}: {msg}") from None


def to_dict(obj: Any) -> Any:
    """Plain-Python view of a params object (for artifacts and logs)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj
