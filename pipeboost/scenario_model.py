"""The :class:`Scenario` dataclass: everything one run needs, as validated specs.

Parsing and validation live in :mod:`pipeboost.scenario` (the one place YAML is read); this module only
holds the resulting value objects so that engines can import them cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeboost.costs import CostParams
from pipeboost.faults import FaultSpec, RandomFailureSpec
from pipeboost.spec import ModelSpec, Topology
from pipeboost.workload import WorkloadSpec


@dataclass(frozen=True)
class PolicySpec:
    """Policy names (see ``pipeboost.policies``) and the serving mode.

    ``num_stages`` defaults to the number of cold-start GPUs; ``mode`` is one of
    ``pipeline.SERVING_MODES`` (``pipeboost`` is the system, the others are baselines).
    """

    mode: str = "pipeboost"
    partition: str = "even_layers"
    loading_order: str = "own_stage_first_then_next"
    recovery: str = "reroute_to_holder"
    num_stages: int | None = None


@dataclass(frozen=True)
class ServingSpec:
    """Serving limits.

    ``cold_start_gpus``: GPUs a cold start uses (N). ``max_batch_size``: continuous-batching limit per
    replica (and per pipeline micro-batch unless ``pipeline_micro_batch_size`` is set).
    ``pipeline_micro_batch_size``: requests per micro-batch while the instance serves through the pipeline
    (``None``: ``max_batch_size``; 1: every request is its own micro-batch, as in the executor). When set, a
    stage GPU also serves one micro-batch's stage at a time, in order, as the executor's workers do.
    ``pipeline_max_in_flight``: micro-batches in flight through the pipeline at once (``None``: the pipeline
    depth, ``num_stages``; a number at least the request count means no limit, as in the executor).
    ``replica_prefill``: how a replica (full copy or tensor-parallel group) runs the prefills it admits at
    an iteration: ``batched`` (default; all of them and one decode step of the running requests as one
    step, every new request's first token at its end) or ``sequential`` (as the executor: each prefill
    alone, in order, its first token at its own end, then one decode step of the requests already running;
    see ``sim.replica``).
    ``replica_dispatch``: how requests reach replicas: ``shared_queue`` (default; one FIFO that idle
    replicas take from) or ``least_busy`` (as the executor: a request is assigned when it arrives to the
    replica with the fewest unfinished requests, ties to the lowest GPU, and waits in that replica's own
    queue; see ``sim.pool``).
    ``keep_alive_s``: idle time after which a model instance is
    released, so a later burst cold-starts again. ``weight_memory_fraction``: share of GPU memory weights may
    use (the rest holds KV cache and activations). ``source``: where weights come from (``host`` or ``nvme``).

    LoRA adapters (``workload.adapters``): ``adapter_mode`` ``unmerged`` (per-request low-rank product, mixed
    adapters share a batch) or ``merged`` (one adapter folded into a replica's weights; it switches only at
    epoch boundaries every ``adapter_epoch_s`` seconds). ``adapter_placement``: ``all`` (every replica
    preloads every adapter after its base weights) or ``popular`` (each replica preloads the
    ``adapter_preload`` most popular adapters; the others load on first use).
    """

    cold_start_gpus: int = 1
    max_batch_size: int = 8
    keep_alive_s: float = 60.0
    weight_memory_fraction: float = 0.9
    source: str = "host"
    adapter_mode: str = "unmerged"
    adapter_epoch_s: float = 0.5
    adapter_placement: str = "all"
    adapter_preload: int = 1
    pipeline_micro_batch_size: int | None = None
    pipeline_max_in_flight: int | None = None
    replica_prefill: str = "batched"
    replica_dispatch: str = "shared_queue"


@dataclass(frozen=True)
class ExecutorSpec:
    """How the executor replays a scenario: devices (``cpu:N`` or ``cuda:0,1``), an optional emulated
    per-link cap, the model folder (made with ``make-checkpoint`` when absent), a time scale applied to
    arrival times and a cap on replayed requests (CPU replays stay small). The executor uses the
    model's dtype (``model.dtype``; float32 gives exact token equality on CPU)."""

    devices: str = "cpu:2"
    link_bandwidth_gbps: float | None = None
    model_dir: str | None = None
    time_scale: float = 1.0
    max_requests: int | None = 8


@dataclass(frozen=True)
class Scenario:
    """A complete, validated run description. ``rng(stream)`` gives independent seeded streams."""

    name: str
    seed: int
    model: ModelSpec
    model_config: dict[str, Any] = field(hash=False, compare=True)
    topology: Topology = field(hash=False)
    policies: PolicySpec = PolicySpec()
    serving: ServingSpec = ServingSpec()
    workload: WorkloadSpec = WorkloadSpec()
    faults: tuple[FaultSpec, ...] = ()
    random_failures: RandomFailureSpec | None = None
    params: CostParams = field(default_factory=CostParams, hash=False)
    executor: ExecutorSpec = ExecutorSpec()
    model_preset: str | None = None
    cluster_preset: str | None = None
    source_file: str | None = field(default=None, compare=False)

    @property
    def num_stages(self) -> int:
        return self.policies.num_stages or self.serving.cold_start_gpus

    @property
    def memory_budget_bytes(self) -> int:
        """Bytes of weights one GPU may hold."""
        return int(self.topology.gpu.memory_bytes * self.serving.weight_memory_fraction)

    @property
    def base_dir(self) -> Path | None:
        """Folder relative paths in the scenario (trace files, model folders) resolve against."""
        return Path(self.source_file).parent if self.source_file else None

    def rng(self, stream: str) -> np.random.Generator:
        """Independent generator per named stream ('arrivals', 'failures', ...), fixed by the seed."""
        streams = {"arrivals": 0, "failures": 1, "prompts": 2, "policy": 3}
        return np.random.default_rng([self.seed, streams.get(stream, sum(map(ord, stream)))])
