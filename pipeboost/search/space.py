"""Search spaces: which scenario fields a policy search varies, what it optimises, and what it must satisfy.

A space is one YAML file, parsed strictly (unknown keys, wrong types and impossible values raise
:class:`~pipeboost.errors.ScenarioError` naming the file, the key path and the fix)::

    params:
      policies.partition: [even_layers, balanced_bytes]      # a list: categorical
      serving.cold_start_gpus: {int: [1, 4]}                 # inclusive integer range (optional step, log)
      serving.keep_alive_s: {float: [1, 120], log: true}     # continuous range
    objectives:
      - {metric: ttft_p99_s, direction: minimize}
      - {metric: gpu_seconds, direction: minimize}
    constraints:
      - {metric: ttft_p99_s, max: 2.0}                       # max and/or min

Parameter names are ``section.field`` of :class:`~pipeboost.scenario_model.PolicySpec` (``policies.*``) and
:class:`~pipeboost.scenario_model.ServingSpec` (``serving.*``); metric names are those of
:func:`pipeboost.search.tidy.flat_metrics`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from pipeboost.config_reader import Node
from pipeboost.errors import ScenarioError
from pipeboost.plan import SERVING_MODES
from pipeboost.search.tidy import METRIC_NAMES

DIRECTIONS = ("minimize", "maximize")
SAMPLERS = ("auto", "grid", "tpe", "nsga2", "random")  # optuna samplers a search can use (see samplers.py)


def _choices(kind: str) -> Callable[[], tuple[str, ...]]:
    def names() -> tuple[str, ...]:
        from pipeboost.policies import policy_names

        return policy_names(kind)
    return names


# name -> (value type, categorical choices or None, lowest allowed value, highest allowed value)
PARAMS: dict[str, tuple[type, Callable[[], tuple[str, ...]] | None, float | None, float | None]] = {
    "policies.mode": (str, lambda: SERVING_MODES, None, None),
    "policies.partition": (str, _choices("partition"), None, None),
    "policies.loading_order": (str, _choices("loading_order"), None, None),
    "policies.recovery": (str, _choices("recovery"), None, None),
    "policies.num_stages": (int, None, 1, None),
    "serving.cold_start_gpus": (int, None, 1, None),
    "serving.max_batch_size": (int, None, 1, None),
    "serving.keep_alive_s": (float, None, 0.0, None),
    "serving.weight_memory_fraction": (float, None, 0.01, 1.0),
    "serving.source": (str, lambda: ("host", "nvme"), None, None),
}


@dataclass(frozen=True)
class ParamSpec:
    """One searched parameter: ``choices`` (categorical) or a ``low``..``high`` range of ``kind`` int/float."""

    name: str
    kind: str  # "categorical", "int" or "float"
    choices: tuple[Any, ...] = ()
    low: float = 0.0
    high: float = 0.0
    step: float | None = None
    log: bool = False

    def grid_values(self) -> tuple[Any, ...] | None:
        """Every value the parameter can take, or ``None`` for a continuous range."""
        if self.kind == "categorical":
            return self.choices
        if self.kind == "int":
            return tuple(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        return None


@dataclass(frozen=True)
class Objective:
    metric: str
    direction: str = "minimize"


@dataclass(frozen=True)
class Constraint:
    """``min <= metric <= max`` (either bound may be absent); optuna's convention: violation <= 0 is feasible."""

    metric: str
    max: float | None = None
    min: float | None = None

    def violation(self, value: float | None) -> float:
        """Amount by which ``value`` breaks the bounds (<= 0 when satisfied; +inf when the metric is missing)."""
        if value is None or not math.isfinite(value):
            return math.inf
        parts = []
        if self.max is not None:
            parts.append(value - self.max)
        if self.min is not None:
            parts.append(self.min - value)
        return max(parts)


@dataclass(frozen=True)
class SearchSpace:
    params: tuple[ParamSpec, ...]
    objectives: tuple[Objective, ...]
    constraints: tuple[Constraint, ...] = ()
    source_file: str | None = None

    @property
    def metric_names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([o.metric for o in self.objectives] + [c.metric for c in self.constraints]))

    @property
    def directions(self) -> tuple[str, ...]:
        return tuple(o.direction for o in self.objectives)

    def grid(self) -> dict[str, list[Any]] | None:
        """The full grid (name -> values) when every parameter is discrete, else ``None``."""
        values = {p.name: p.grid_values() for p in self.params}
        if any(v is None for v in values.values()):
            return None
        return {k: list(v) for k, v in values.items()}

    def grid_size(self) -> int | None:
        grid = self.grid()
        return None if grid is None else math.prod(len(v) for v in grid.values())


def load_space(path: str | Path) -> SearchSpace:
    """Read and validate a search-space YAML file."""
    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScenarioError("file does not exist", file=str(path), fix="check the path") from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"not valid YAML: {exc}", file=str(path), fix="fix the YAML syntax") from None
    return space_from_dict(doc, file=str(path))


def space_from_dict(doc: Any, file: str | None = None) -> SearchSpace:
    """Validate a parsed document into a :class:`SearchSpace` (raises :class:`ScenarioError` only)."""
    root = Node(doc, "", file)
    params_node = root.child("params")
    params = tuple(_parse_param(params_node, name) for name in params_node.data)
    if not params:
        raise root.error("is empty", "add at least one parameter, e.g. policies.partition: [even_layers, "
                         "balanced_bytes]", key="params")
    objectives = tuple(_parse_objective(n) for n in root.children("objectives"))
    if not objectives:
        raise root.error("is required", "add objectives: [{metric: ttft_p99_s, direction: minimize}]",
                         key="objectives")
    if len({o.metric for o in objectives}) < len(objectives):
        raise root.error("names a metric twice", "list each metric once", key="objectives")
    constraints = tuple(_parse_constraint(n) for n in root.children("constraints"))
    root.done()
    return SearchSpace(params, objectives, constraints, file)


def _parse_param(node: Node, name: str) -> ParamSpec:
    if name not in PARAMS:
        raise node.error(f"unknown parameter {name!r}", f"use one of: {', '.join(PARAMS)}", key=name)
    kind, choices, low, high = PARAMS[name]
    raw = node.data[name]
    node.get(name, object)  # mark as read
    if isinstance(raw, list):
        return _parse_categorical(node, name, raw, kind, choices() if choices else None, low, high)
    if choices is not None:
        raise node.error("must be a list of values", f"write {name}: [{', '.join(choices())}]", key=name)
    spec = node.child(name)
    rng = spec.raw_list(kind.__name__)
    if not spec.has(kind.__name__):
        raise spec.error(f"must be a list or {{{kind.__name__}: [low, high]}}",
                         f"write {name}: {{{kind.__name__}: [low, high]}}")
    if len(rng) != 2 or not all(_is_number(v, kind) for v in rng) or rng[0] > rng[1]:
        raise spec.error(f"range must be [low, high] with {kind.__name__} low <= high, got {rng!r}", None,
                         key=kind.__name__)
    _check_bounds(spec, kind.__name__, rng, low, high)
    step = spec.get("step", kind, None, check=lambda v: None if v > 0 else "must be greater than 0")
    log = spec.get("log", bool, False)
    if log and step is not None:
        raise spec.error("step and log cannot be combined", "drop one of them", key="log")
    if log and rng[0] <= 0:
        raise spec.error("log scale needs low > 0", "raise low or drop log", key="log")
    spec.done()
    return ParamSpec(name, kind.__name__, low=rng[0], high=rng[1], step=step, log=log)


def _parse_categorical(node: Node, name: str, raw: list, kind: type, choices: tuple[str, ...] | None,
                       low: float | None, high: float | None) -> ParamSpec:
    if not raw:
        raise node.error("is an empty list", "list at least one value", key=name)
    for i, value in enumerate(raw):
        if not _is_number(value, kind) and not (kind is str and isinstance(value, str)):
            raise node.error(f"value {value!r} is not {kind.__name__}", None, key=f"{name}[{i}]")
        if choices is not None and value not in choices:
            raise node.error(f"unknown value {value!r}", f"use one of: {', '.join(choices)}", key=f"{name}[{i}]")
    if kind is not str:
        _check_bounds(node, name, raw, low, high)
    if len(set(raw)) < len(raw):
        raise node.error("lists a value twice", "list each value once", key=name)
    return ParamSpec(name, "categorical", choices=tuple(raw))


def _is_number(value: Any, kind: type) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) if kind is int else kind is float and isinstance(value, (int, float))


def _check_bounds(node: Node, key: str, values: list, low: float | None, high: float | None) -> None:
    for v in values:
        if (low is not None and v < low) or (high is not None and v > high):
            bounds = f"at least {low}" if high is None else f"between {low} and {high}"
            raise node.error(f"value {v!r} out of range", f"use values {bounds}", key=key)


def _parse_objective(node: Node) -> Objective:
    obj = Objective(node.choice("metric", METRIC_NAMES), node.choice("direction", DIRECTIONS, "minimize"))
    node.done()
    return obj


def _parse_constraint(node: Node) -> Constraint:
    con = Constraint(node.choice("metric", METRIC_NAMES), node.get("max", float, None), node.get("min", float, None))
    if con.max is None and con.min is None:
        raise node.error("has no bound", "add max: <number> and/or min: <number>")
    node.done()
    return con
