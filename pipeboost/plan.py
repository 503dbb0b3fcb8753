"""Plans: what a cold start does, decided by policies and carried out unchanged by both engines.

* :class:`PartitionPlan` splits the decoder layers into contiguous stages; stage 0 also holds the
  embedding unit, the last stage the head unit.
* :class:`LoadPlan` gives each GPU the ordered list of stages it loads: its own stage first, then others
  until it holds a full replica (or its memory budget ends the list).
* :class:`RecoveryPlan` says, after a failure, which surviving GPU serves each stage and what each
  survivor loads first.
* :class:`Plan` bundles them with the GPUs used and the serving mode.

Plans are frozen, convert to and from plain dicts, and print compactly. :func:`validate_plan` checks the
invariants both engines rely on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from pipeboost.errors import PlanError
from pipeboost.spec import EMBED_UNIT, ModelSpec, iter_stage_units

SERVING_MODES = ("pipeboost", "pipeline_only", "load_then_run", "tensor_parallel")
"""``pipeboost``: pipeline while loading, then replicas. ``pipeline_only``: split load, fixed pipeline.
``load_then_run``: one GPU loads everything then serves. ``tensor_parallel``: each GPU loads 1/N of
every layer, then TP inference."""


@dataclass(frozen=True)
class PartitionPlan:
    """Stage ``s`` covers decoder layers ``[boundaries[s], boundaries[s+1])``.

    ``boundaries`` starts at 0, ends at ``num_layers`` and strictly increases, so every layer is in
    exactly one stage. The embedding is on stage 0 and the head on the last stage.
    """

    num_layers: int
    boundaries: tuple[int, ...]

    @property
    def num_stages(self) -> int:
        return len(self.boundaries) - 1

    def layer_range(self, stage: int) -> range:
        return range(self.boundaries[stage], self.boundaries[stage + 1])

    def units_of_stage(self, stage: int) -> tuple[int, ...]:
        """Units (embed -1, layers, head L) of ``stage`` in execution order."""
        return tuple(iter_stage_units(self.boundaries[stage], self.boundaries[stage + 1], stage == 0,
                                      stage == self.num_stages - 1, self.num_layers))

    def stage_of_unit(self, unit: int) -> int:
        if unit == EMBED_UNIT:
            return 0
        if unit >= self.num_layers:
            return self.num_stages - 1
        for stage in range(self.num_stages):
            if unit < self.boundaries[stage + 1]:
                return stage
        raise ValueError(f"unit {unit} beyond the model")

    def stage_bytes(self, model: ModelSpec, stage: int) -> int:
        return sum(model.unit_bytes(u) for u in self.units_of_stage(stage))

    def to_dict(self) -> dict[str, Any]:
        return {"num_layers": self.num_layers, "boundaries": list(self.boundaries)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PartitionPlan":
        return cls(int(data["num_layers"]), tuple(int(b) for b in data["boundaries"]))

    def __str__(self) -> str:
        spans = []
        for s in range(self.num_stages):
            r = self.layer_range(s)
            extra = ("E+" if s == 0 else "") + f"{r.start}-{r.stop - 1}" + ("+H" if s == self.num_stages - 1 else "")
            spans.append(f"s{s}[{extra}]")
        return " ".join(spans)


@dataclass(frozen=True)
class LoadPlan:
    """``orders[i]`` is the ordered tuple of stages GPU ``gpus[i]`` loads; ``orders[i][0]`` is its own stage."""

    gpus: tuple[int, ...]
    orders: tuple[tuple[int, ...], ...]

    def order_of(self, gpu: int) -> tuple[int, ...]:
        return self.orders[self.gpus.index(gpu)]

    def units_of(self, gpu: int, partition: PartitionPlan) -> tuple[int, ...]:
        """Units GPU ``gpu`` loads, in load order (stage by stage, execution order within a stage)."""
        return tuple(u for s in self.order_of(gpu) for u in partition.units_of_stage(s))

    def to_dict(self) -> dict[str, Any]:
        return {"gpus": list(self.gpus), "orders": [list(o) for o in self.orders]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LoadPlan":
        return cls(tuple(int(g) for g in data["gpus"]), tuple(tuple(int(s) for s in o) for o in data["orders"]))

    def __str__(self) -> str:
        return " ".join(f"g{g}:" + ",".join(map(str, o)) for g, o in zip(self.gpus, self.orders))


@dataclass(frozen=True)
class RecoveryPlan:
    """What the survivors do after ``failed_gpu`` fails.

    ``stage_gpus[s]`` is the GPU that now serves stage ``s``. ``load_first`` maps a survivor to the stages
    it must load before anything else in its remaining order (empty when it already holds them).
    """

    failed_gpu: int
    stage_gpus: tuple[int, ...]
    load_first: tuple[tuple[int, tuple[int, ...]], ...] = ()
    policy: str = ""

    def load_first_of(self, gpu: int) -> tuple[int, ...]:
        return dict(self.load_first).get(gpu, ())

    def to_dict(self) -> dict[str, Any]:
        return {"failed_gpu": self.failed_gpu, "stage_gpus": list(self.stage_gpus),
                "load_first": {str(g): list(s) for g, s in self.load_first}, "policy": self.policy}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RecoveryPlan":
        load_first = tuple((int(g), tuple(int(s) for s in st)) for g, st in data.get("load_first", {}).items())
        return cls(int(data["failed_gpu"]), tuple(int(g) for g in data["stage_gpus"]), load_first,
                   str(data.get("policy", "")))

    def __str__(self) -> str:
        first = " ".join(f"g{g}<-{list(s)}" for g, s in self.load_first)
        return f"fail g{self.failed_gpu}: stages->{list(self.stage_gpus)} {first}".rstrip()


@dataclass(frozen=True)
class Plan:
    """A complete cold-start plan: serving mode, partition, which GPU runs each stage, and load orders."""

    mode: str
    partition: PartitionPlan
    stage_gpus: tuple[int, ...]
    load: LoadPlan

    @property
    def gpus(self) -> tuple[int, ...]:
        return self.load.gpus

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "partition": self.partition.to_dict(), "stage_gpus": list(self.stage_gpus),
                "load": self.load.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Plan":
        return cls(str(data["mode"]), PartitionPlan.from_dict(data["partition"]),
                   tuple(int(g) for g in data["stage_gpus"]), LoadPlan.from_dict(data["load"]))

    def __str__(self) -> str:
        return (f"mode={self.mode}\npartition: {self.partition}\n"
                f"stage->gpu: {list(self.stage_gpus)}\nload: {self.load}")


def _check_partition(partition: PartitionPlan, model: ModelSpec) -> None:
    b = partition.boundaries
    if partition.num_layers != model.num_layers:
        raise PlanError(f"partition covers {partition.num_layers} layers but the model has {model.num_layers}")
    if len(b) < 2 or b[0] != 0 or b[-1] != model.num_layers:
        raise PlanError(f"partition boundaries {list(b)} must start at 0 and end at {model.num_layers}")
    if any(b[i] >= b[i + 1] for i in range(len(b) - 1)):
        raise PlanError(f"partition boundaries {list(b)} must strictly increase (no empty stage)")


def _check_load(plan: Plan, model: ModelSpec, memory_budget_bytes: int | None) -> None:
    n_stages = plan.partition.num_stages
    if len(set(plan.load.gpus)) != len(plan.load.gpus):
        raise PlanError(f"load plan lists a GPU twice: {list(plan.load.gpus)}")
    for gpu, order in zip(plan.load.gpus, plan.load.orders):
        if len(set(order)) != len(order) or any(not 0 <= s < n_stages for s in order):
            raise PlanError(f"GPU {gpu} load order {list(order)} must list distinct stages in 0..{n_stages - 1}")
        if memory_budget_bytes is not None:
            need = sum(plan.partition.stage_bytes(model, s) for s in order)
            if need > memory_budget_bytes:
                raise PlanError(f"GPU {gpu} load order {list(order)} needs {need / 1e9:.2f} GB but the weight "
                                f"budget is {memory_budget_bytes / 1e9:.2f} GB; load fewer stages")
    for stage, gpu in enumerate(plan.stage_gpus):
        if gpu not in plan.load.gpus:
            raise PlanError(f"stage {stage} runs on GPU {gpu}, which is not in the load plan")
        order = plan.load.order_of(gpu)
        if plan.mode != "tensor_parallel" and stage not in order:
            raise PlanError(f"GPU {gpu} serves stage {stage} but never loads it (order {list(order)})")


def validate_plan(plan: Plan, model: ModelSpec, memory_budget_bytes: int | None = None) -> None:
    """Raise :class:`PlanError` unless the plan's invariants hold.

    Invariants: every layer in exactly one stage; one serving GPU per stage; each GPU's order lists
    distinct valid stages and begins with a stage it serves; in ``pipeboost`` and ``load_then_run`` mode,
    a GPU whose order is complete is a permutation of all stages; the weights a GPU loads fit
    ``memory_budget_bytes``.
    """
    if plan.mode not in SERVING_MODES:
        raise PlanError(f"unknown serving mode {plan.mode!r}; valid: {', '.join(SERVING_MODES)}")
    _check_partition(plan.partition, model)
    if len(plan.stage_gpus) != plan.partition.num_stages:
        raise PlanError(f"{len(plan.stage_gpus)} stage GPUs for {plan.partition.num_stages} stages")
    if len(plan.load.orders) != len(plan.load.gpus):
        raise PlanError("load plan needs one order per GPU")
    _check_load(plan, model, memory_budget_bytes)
    for gpu, order in zip(plan.load.gpus, plan.load.orders):
        if not order:
            raise PlanError(f"GPU {gpu} has an empty load order")
        served = [s for s, g in enumerate(plan.stage_gpus) if g == gpu]
        if served and plan.mode in ("pipeboost", "pipeline_only") and order[0] not in served:
            raise PlanError(f"GPU {gpu} must load its own stage first; order {list(order)} starts elsewhere")


def relabel_plan(plan: Plan, gpus: tuple[int, ...]) -> Plan:
    """The same plan on other GPUs: the plan's i-th GPU becomes ``gpus[i]`` (for scheduling a cold start
    on whichever free group of GPUs a serving policy picks)."""
    if len(gpus) != len(plan.load.gpus):
        raise PlanError(f"relabel needs {len(plan.load.gpus)} GPUs, got {len(gpus)}")
    mapping = dict(zip(plan.load.gpus, gpus))
    return Plan(plan.mode, plan.partition, tuple(mapping[g] for g in plan.stage_gpus),
                LoadPlan(tuple(gpus), plan.load.orders))


def stages_served_by(stage_gpus: Iterable[int], gpu: int) -> tuple[int, ...]:
    """Stages whose serving GPU is ``gpu``."""
    return tuple(s for s, g in enumerate(stage_gpus) if g == gpu)
