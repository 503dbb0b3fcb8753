"""A strict reader over parsed YAML: typed getters that know the file and key path of every value.

Every problem raises :class:`ScenarioError` with the file, the key path (``cluster.links[2].bandwidth_gbps``)
and what to change. :meth:`Node.done` rejects keys nobody asked for, listing the valid ones.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator

from pipeboost.errors import ScenarioError

_MISSING = object()
_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
               dict: "a mapping", list: "a list"}


class Node:
    """A mapping in the document at ``path``; getters record which keys were read."""

    def __init__(self, data: Any, path: str = "", file: str | None = None) -> None:
        self.path = path
        self.file = file
        self._seen: set[str] = set()
        if not isinstance(data, dict):
            raise self.error(f"must be a mapping, got {_describe(data)}", "write key: value pairs here",
                             key_path=path or "(document)")
        self.data = data
        for key in data:
            if not isinstance(key, str):
                raise self.error(f"key {key!r} is not a string", "quote the key", key_path=path or "(document)")

    def key_path(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, problem: str, fix: str | None = None, key: str | None = None,
              key_path: str | None = None) -> ScenarioError:
        return ScenarioError(problem, file=self.file, key_path=key_path or (self.key_path(key) if key else self.path),
                             fix=fix)

    def has(self, key: str) -> bool:
        return key in self.data

    def get(self, key: str, kind: type, default: Any = _MISSING, *,
            check: Callable[[Any], str | None] | None = None) -> Any:
        """Value of ``key`` as ``kind`` (int accepted for float; bool never for numbers).

        ``check(value)`` returns a problem text or ``None``. A missing key without default is an error.
        """
        self._seen.add(key)
        if key not in self.data or self.data[key] is None:
            if default is _MISSING:
                raise self.error("is required", f"add {key}: <{_TYPE_NAMES.get(kind, kind.__name__)}>", key)
            return default
        value = _coerce(self.data[key], kind)
        if value is _MISSING:
            raise self.error(f"must be {_TYPE_NAMES.get(kind, kind.__name__)}, got {_describe(self.data[key])}",
                             None, key)
        if check is not None:
            problem = check(value)
            if problem:
                raise self.error(f"{problem} (got {value!r})", None, key)
        return value

    def choice(self, key: str, options: tuple[str, ...] | list[str], default: Any = _MISSING) -> str:
        value = self.get(key, str, default)
        if value not in options and value is not default:
            raise self.error(f"unknown value {value!r}", f"use one of: {', '.join(options)}", key)
        return value

    def child(self, key: str, default: Any = _MISSING) -> "Node | None":
        self._seen.add(key)
        if key not in self.data or self.data[key] is None:
            if default is _MISSING:
                raise self.error("is required", "add this section", key)
            return default
        return Node(self.data[key], self.key_path(key), self.file)

    def children(self, key: str) -> Iterator["Node"]:
        """Each element of the list at ``key`` as a Node (missing key: nothing)."""
        for i, item in enumerate(self.raw_list(key)):
            yield Node(item, f"{self.key_path(key)}[{i}]", self.file)

    def raw_list(self, key: str) -> list:
        self._seen.add(key)
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.error(f"must be a list, got {_describe(value)}", "write a YAML list (- item)", key)
        return value

    def quantity(self, base: str, units: dict[str, float], default: Any = _MISSING, *,
                 strictly_positive: bool = True) -> Any:
        """A physical quantity given under exactly one of ``base + suffix`` for suffix in ``units``.

        ``units`` maps suffixes to the factor converting to SI (e.g. ``{"_bytes_per_s": 1, "_gbps": 1e9}``).
        """
        given = [base + s for s in units if base + s in self.data and self.data[base + s] is not None]
        for s in units:
            self._seen.add(base + s)
        if len(given) > 1:
            raise self.error(f"both {' and '.join(given)} given", "keep only one", given[0])
        if not given:
            if default is _MISSING:
                raise self.error("is required", f"add {base}{next(iter(units))}", base + next(iter(units)))
            return default
        key = given[0]
        check = positive if strictly_positive else non_negative
        return self.get(key, float, check=check) * units[key[len(base):]]

    def done(self) -> None:
        """Raise for keys that were never read (typos, unsupported options)."""
        unknown = [k for k in self.data if k not in self._seen]
        if unknown:
            valid = ", ".join(sorted(self._seen)) or "(none)"
            raise self.error(f"unknown key {unknown[0]!r}", f"valid keys here: {valid}", unknown[0])


def _coerce(value: Any, kind: type) -> Any:
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return _MISSING
        value = float(value)
        return value if math.isfinite(value) else _MISSING
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            return _MISSING
        return value
    return value if isinstance(value, kind) else _MISSING


def _describe(value: Any) -> str:
    if value is None:
        return "nothing"
    return f"{type(value).__name__} {value!r}"[:80]


def positive(value: float) -> str | None:
    """Check for :meth:`Node.get`: the value must be greater than 0."""
    return None if value > 0 else "must be greater than 0"


def non_negative(value: float) -> str | None:
    """Check for :meth:`Node.get`: the value must not be negative."""
    return None if value >= 0 else "must not be negative"


def at_least(low: float) -> Callable[[float], str | None]:
    return lambda v: None if v >= low else f"must be at least {low}"


def in_range(low: float, high: float) -> Callable[[float], str | None]:
    return lambda v: None if low <= v <= high else f"must be between {low} and {high}"
