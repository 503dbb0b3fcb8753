"""The cost model: :class:`CostParams` and pure functions returning seconds.

Each duration is split into named components that add up to the total (``latency_s + transfer_s`` for a
copy, ``overhead_s + roofline_s`` for compute), so a prediction can be explained and calibrated part by
part. The simulator calls these functions; calibration fits the parameters to executor traces.

Default parameters and where they come from:

* ``link_efficiency = 0.8``: pinned host-to-device copies reach ~80% of PCIe raw bandwidth
  (~25 GB/s of 31.5 on Gen4 x16, ~50 of 63 on Gen5; NVIDIA bandwidthTest figures widely reported);
* ``transfer_latency_s = 10 us``: per-copy launch + DMA setup of ``cudaMemcpyAsync``;
* ``compute_efficiency = 0.6`` of peak tensor FLOP/s for prefill GEMMs and ``memory_efficiency = 0.8`` of
  HBM bandwidth for memory-bound decode (typical of cuBLAS on A100/H100);
* ``unit_overhead_s = 30 us``: kernel launches of one decoder layer at batch 1 (eager PyTorch);
* ``hop_*``: device-to-device activation copy through PCIe P2P or host (20 us + 20 GB/s);
* ``startup_s = 0.05``: a pre-started worker process whose CUDA context exists (ServerlessLLM-style);
  set it to ~1-2 s to model a cold process start.
* ``replan_overhead_s = 0``: time from detecting a failure to the recovery plan taking effect (REPLAN).
* ``host_cores = None``: GPUs compute and copy without host CPU. A number (cores) makes compute and copies
  of all GPUs of a node share that many host cores, processor-sharing style (CPU virtual devices, see
  :mod:`sim.hostcpu`): a unit's compute is a job of its duration x 1 core, capped at 1 core; a copy
  occupies ``copy_cpu_s_per_byte`` x its byte rate cores (CPU-seconds per byte copied).
  ``host_cores_many = None``: the cores' worth with ``host_cores_many_threads`` (4) compute threads busy,
  when measured: more threads than cores get less out of them (OPT-125M decoder layers on the 2-core VM:
  1.84 with two threads, 1.70 with three, 1.57 with four); the node's host-CPU capacity then follows the
  GPUs computing, linear between ``host_cores_threads`` (2: the threads ``host_cores`` was measured with,
  one per calibrated device) and ``host_cores_many_threads`` (:meth:`CostParams.host_cores_for`).
* ``unit_load_cpu_s = 0``: per-unit software work of a load (reading the checkpoint, building and
  materialising the module) that overlaps the unit's link time: a unit load ends when both its bytes and
  this work are done (a CPU job on the host cores when ``host_cores`` is set). Exposed for tiny units only.
* ``compute_interference_per_job = compute_interference_per_gbps = 0``: the linear interference model of
  :mod:`sim.interference` (CPU virtual devices): a compute job is slowed by this fraction per other device
  computing on the node and per GB/s being copied to the node when it starts. With ``host_cores`` only
  the copy term may be set (core sharing already slows devices against each other), and it caps the job's
  thread at ``1 / (1 + beta x GB/s)`` of a core instead of stretching its work: where the cores are
  oversubscribed (the copies' ``copy_cpu_s_per_byte`` included) the fair share sets the pace.
  ``compute_interference_per_gbps_long = None``: the copy term of prefill jobs of
  ``compute_interference_long_tokens`` (128) tokens or more, when measured (a long prefill's larger kernels
  lose less to the loaders' memory traffic: 0.024 against 0.035 per GB/s at 32 tokens on the CPU
  executor); ``compute_interference_per_gbps`` holds up to ``compute_interference_base_tokens`` (32) and
  for decode; linear in log(tokens) between (:meth:`CostParams.copy_term_per_gbps`).
  ``copy_interference_per_job = 0``: the other direction: every weight copy to a node runs at its links'
  capacity / (1 + this x GPUs of the node computing), changing as compute jobs start and end; with
  ``host_cores``, that count is multiplied by the cores' oversubscription ``max(1, computing /
  host_cores)`` (the loaders wait for a core).
* ``dispatch_s = handoff_s = step_start_s = 0``: the serving runtime's own latencies outside compute and
  copies (GPU servers: host-side launch and synchronisation; the CPU executor: thread wake-ups between
  its per-device workers). ``dispatch_s``: a request's arrival to its first unit on an idle device;
  ``handoff_s``: a stage's output reaching the next stage's worker on another device, beyond the hop copy
  (and a token reaching stage 0 on another device for the next step); ``step_start_s``: a token to the next
  step on the same device. ``unit_wake_s = 0``: a unit landing on a device to the start of the compute that
  waited for it (execute-while-load: the waiting worker's wake-up; 1-2 ms on the CPU executor).
  ``worker_after_hop_s = worker_after_token_s = 0``: the device worker's own time after it handed a stage's
  output to another device, or after its last stage emitted a token (the greedy pick, the next step queued),
  before it starts the units of another micro-batch already waiting for it (0.1-0.2 ms on the CPU executor,
  while the other devices compute); the micro-batch it served does not wait for it.
* ``compute_profiles = ()``: measured per-unit compute of model shapes on this machine
  (:mod:`pipeboost.compute_profile`, written by ``pipeboost calibrate``). A model whose shape has a profile
  is costed from the measurements (``profiled_s`` plus the profile's runtime overhead); others use the
  roofline above.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Mapping

from pipeboost.compute_profile import ComputeProfile, find_profile
from pipeboost.spec import EMBED_UNIT, GPUSpec, ModelSpec, Topology


@dataclass(frozen=True)
class CostParams:
    """Calibratable cost parameters (SI units) and the provenance of their values."""

    link_efficiency: float = 0.8
    link_bandwidth_overrides_bytes_per_s: Mapping[str, float] = field(default_factory=dict, hash=False)
    transfer_latency_s: float = 10e-6
    compute_efficiency: float = 0.6
    memory_efficiency: float = 0.8
    unit_overhead_s: float = 30e-6
    hop_latency_s: float = 20e-6
    hop_bandwidth_bytes_per_s: float = 20e9
    allreduce_latency_s: float = 10e-6
    startup_s: float = 0.05
    failure_detection_s: float = 0.025
    replan_overhead_s: float = 0.0
    host_cores: float | None = None
    host_cores_many: float | None = None
    host_cores_threads: int = 2
    host_cores_many_threads: int = 4
    copy_cpu_s_per_byte: float = 0.0
    unit_load_cpu_s: float = 0.0
    compute_interference_per_job: float = 0.0
    compute_interference_per_gbps: float = 0.0
    compute_interference_per_gbps_long: float | None = None
    compute_interference_base_tokens: int = 32
    compute_interference_long_tokens: int = 128
    copy_interference_per_job: float = 0.0
    dispatch_s: float = 0.0
    handoff_s: float = 0.0
    step_start_s: float = 0.0
    unit_wake_s: float = 0.0
    worker_after_hop_s: float = 0.0
    worker_after_token_s: float = 0.0
    compute_profiles: tuple[ComputeProfile, ...] = field(default=(), hash=False)
    provenance: Mapping[str, Any] = field(default_factory=lambda: {"source": "defaults (datasheets)"},
                                          hash=False, compare=False)
    """Where the values come from (free-form metadata, not compared: it may hold NaN residuals)."""

    def copy_term_per_gbps(self, prefill_tokens: int | None = None) -> float:
        """The copy term (compute slowdown per GB/s copied to the node) of a prefill job of ``prefill_tokens``
        tokens: ``compute_interference_per_gbps`` up to ``compute_interference_base_tokens`` (and without a
        long value or a token count), ``compute_interference_per_gbps_long`` from
        ``compute_interference_long_tokens`` on, linear in log(tokens) between."""
        base, long = self.compute_interference_per_gbps, self.compute_interference_per_gbps_long
        t0, t1 = self.compute_interference_base_tokens, self.compute_interference_long_tokens
        if long is None or prefill_tokens is None or prefill_tokens <= t0 or t1 <= t0:
            return base
        if prefill_tokens >= t1:
            return long
        w = math.log(prefill_tokens / t0) / math.log(t1 / t0)
        return base + w * (long - base)

    @property
    def host_cores_vary(self) -> bool:
        """Whether the host cores' worth depends on the threads computing (``host_cores`` and
        ``host_cores_many`` both set; :meth:`host_cores_for`)."""
        return self.host_cores is not None and self.host_cores_many is not None

    def host_cores_for(self, threads: int) -> float | None:
        """Cores' worth of the host with ``threads`` compute threads busy: ``host_cores`` (measured with
        ``host_cores_threads``) up to that many, ``host_cores_many`` from ``host_cores_many_threads`` on,
        linear between (None without ``host_cores``; ``host_cores`` throughout without ``host_cores_many``)."""
        base, many = self.host_cores, self.host_cores_many
        low, at = self.host_cores_threads, self.host_cores_many_threads
        if not self.host_cores_vary or threads <= low or at <= low:
            return base
        if threads >= at:
            return many
        return base + (threads - low) / (at - low) * (many - base)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["link_bandwidth_overrides_bytes_per_s"] = dict(self.link_bandwidth_overrides_bytes_per_s)
        data["provenance"] = dict(self.provenance)
        data["compute_profiles"] = [p.to_dict() for p in self.compute_profiles]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CostParams":
        values = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in data.items()}
        values["compute_profiles"] = tuple(p if isinstance(p, ComputeProfile) else ComputeProfile.from_dict(p)
                                           for p in data.get("compute_profiles", ()))
        return cls(**values)

    def profile_for(self, model: ModelSpec) -> ComputeProfile | None:
        """The measured compute profile of ``model``'s shape, or None (roofline)."""
        return find_profile(self.compute_profiles, model) if self.compute_profiles else None

    def with_(self, **changes: Any) -> "CostParams":
        return replace(self, **changes)


@dataclass(frozen=True)
class TransferCost:
    """An uncontended copy: fixed ``latency_s`` plus ``transfer_s`` at the bottleneck bandwidth."""

    latency_s: float
    transfer_s: float

    @property
    def total_s(self) -> float:
        return self.latency_s + self.transfer_s


@dataclass(frozen=True)
class ComputeCost:
    """One unit's compute: launch ``overhead_s`` plus ``roofline_s = max(flop time, memory time)``, or, for
    a profiled model shape, ``overhead_s`` (the executor runtime's per-call work) plus ``profiled_s`` (the
    measured module time; the roofline terms are then 0)."""

    overhead_s: float
    flop_s: float
    memory_s: float
    profiled_s: float = 0.0

    @property
    def roofline_s(self) -> float:
        return max(self.flop_s, self.memory_s)

    @property
    def total_s(self) -> float:
        return self.overhead_s + self.roofline_s + self.profiled_s


def link_bandwidth_bytes_per_s(params: CostParams, link_name: str, nominal_bytes_per_s: float) -> float:
    """Achieved bandwidth of a link: an override by name (node prefix stripped) or nominal x efficiency."""
    short = link_name.split(".", 1)[-1]
    overrides = params.link_bandwidth_overrides_bytes_per_s
    if link_name in overrides:
        return float(overrides[link_name])
    if short in overrides:
        return float(overrides[short])
    return nominal_bytes_per_s * params.link_efficiency


def load_cost(params: CostParams, topology: Topology, gpu: int, nbytes: int, source: str = "host") -> TransferCost:
    """Uncontended time to copy ``nbytes`` from ``source`` to ``gpu`` (no other transfer running)."""
    path = topology.path(gpu, source)
    bandwidth = min(link_bandwidth_bytes_per_s(params, name, bw) for name, bw, _ in path)
    latency = params.transfer_latency_s + sum(lat for _, _, lat in path)
    return TransferCost(latency, nbytes / bandwidth)


def _layer_flops(model: ModelSpec, tokens: int, batch: int, context: int) -> float:
    """FLOPs of one decoder layer for ``tokens`` new tokens per sequence after ``context`` cached ones."""
    q_dim = model.num_heads * model.head_dim
    dense = 2.0 * model.layer_params() * tokens * batch
    attended = context + (tokens + 1) / 2.0
    attention = 4.0 * batch * tokens * attended * q_dim
    return dense + attention


def unit_compute_cost(params: CostParams, gpu: GPUSpec, model: ModelSpec, unit: int, tokens: int,
                      batch: int = 1, context: int = 0) -> ComputeCost:
    """Time for ``unit`` to process ``tokens`` new tokens for each of ``batch`` sequences.

    Prefill is ``tokens = prompt length, context = 0``; a decode step is ``tokens = 1, context = cached
    length``. The head computes logits for the last token of each sequence only. A profiled shape
    (``params.compute_profiles``) is costed from its measurements instead of the roofline.
    """
    profile = params.profile_for(model)
    if profile is not None:
        return ComputeCost(profile.runtime_overhead_s, 0.0, 0.0, profile.unit_s(model, unit, tokens, batch, context))
    flops_per_s = gpu.peak_flops * params.compute_efficiency
    bytes_per_s = gpu.memory_bandwidth_bytes_per_s * params.memory_efficiency
    weight_bytes = model.unit_bytes(unit)
    if unit == EMBED_UNIT:
        moved = model.activation_bytes(tokens * batch)
        return ComputeCost(params.unit_overhead_s, 0.0, moved / bytes_per_s)
    if unit == model.head_unit:
        flops = 2.0 * model.vocab_size * model.word_embed_proj_dim * batch
        return ComputeCost(params.unit_overhead_s, flops / flops_per_s, weight_bytes / bytes_per_s)
    kv_read = batch * context * model.kv_bytes_per_token()
    flops = _layer_flops(model, tokens, batch, context)
    return ComputeCost(params.unit_overhead_s, flops / flops_per_s, (weight_bytes + kv_read) / bytes_per_s)


def unit_compute_s(params: CostParams, gpu: GPUSpec, model: ModelSpec, unit: int, tokens: int,
                   batch: int = 1, context: int = 0) -> float:
    """Total seconds of :func:`unit_compute_cost`."""
    return unit_compute_cost(params, gpu, model, unit, tokens, batch, context).total_s


def hop_cost(params: CostParams, nbytes: int) -> TransferCost:
    """Activation hand-off between two pipeline stages on different GPUs."""
    return TransferCost(params.hop_latency_s, nbytes / params.hop_bandwidth_bytes_per_s)


def allreduce_cost(params: CostParams, nbytes: int, num_gpus: int) -> TransferCost:
    """Ring all-reduce of ``nbytes`` over ``num_gpus``: 2(n-1) steps of nbytes/n each."""
    if num_gpus <= 1:
        return TransferCost(0.0, 0.0)
    steps = 2 * (num_gpus - 1)
    return TransferCost(steps * params.allreduce_latency_s,
                        steps * (nbytes / num_gpus) / params.hop_bandwidth_bytes_per_s)


def unit_weights_for_partition(params: CostParams, gpu: GPUSpec, model: ModelSpec, tokens: int = 128) -> dict[int, float]:
    """Per-unit prefill seconds for ``tokens`` tokens: the weights ``balanced_compute`` partitions by."""
    return {u: unit_compute_s(params, gpu, model, u, tokens) for u in model.units()}


# ---- LoRA adapters -------------------------------------------------------------------------------
ADAPTER_LAUNCH_OVERHEAD_S = 4e-6
"""Launch overhead of one unmerged adapter on one target module of one layer (the x·Aᵀ and ·Bᵀ kernels
plus the add; eager PyTorch, ~2 us per small kernel launch)."""


def _adapter_modules(model: ModelSpec, target_modules: tuple[str, ...]) -> list[tuple[int, int]]:
    from pipeboost.lora import module_shape
    return [module_shape(model, m) for m in target_modules]


def adapter_compute_cost(params: CostParams, gpu: GPUSpec, model: ModelSpec, rank: int,
                         target_modules: tuple[str, ...], tokens: int, layers: int | None = None,
                         adapters: int = 1) -> ComputeCost:
    """Extra time of unmerged adapters for ``tokens`` tokens (summed over the batch) through ``layers``.

    FLOPs: ``2 r (in + out)`` per token per target module per layer. Memory: the adapters' A and B read
    once per step (``adapters`` distinct adapters in the batch, each ``r (in + out)`` elements per module).
    Overhead: :data:`ADAPTER_LAUNCH_OVERHEAD_S` per distinct adapter per target module per layer.
    """
    n_layers = model.num_layers if layers is None else layers
    shapes = _adapter_modules(model, target_modules)
    per_layer_elems = sum(rank * (fan_in + fan_out) for fan_in, fan_out in shapes)
    flops = 2.0 * per_layer_elems * tokens * n_layers
    moved = adapters * per_layer_elems * model.dtype_bytes * n_layers
    overhead = ADAPTER_LAUNCH_OVERHEAD_S * adapters * len(shapes) * n_layers
    return ComputeCost(overhead, flops / (gpu.peak_flops * params.compute_efficiency),
                       moved / (gpu.memory_bandwidth_bytes_per_s * params.memory_efficiency))


def adapter_compute_s(params: CostParams, gpu: GPUSpec, model: ModelSpec, rank: int,
                      target_modules: tuple[str, ...], tokens: int, layers: int | None = None,
                      adapters: int = 1) -> float:
    """Total seconds of :func:`adapter_compute_cost` (0 when there are no tokens or no adapters)."""
    if tokens <= 0 or adapters <= 0:
        return 0.0
    return adapter_compute_cost(params, gpu, model, rank, target_modules, tokens, layers, adapters).total_s


def adapter_merge_cost(params: CostParams, gpu: GPUSpec, model: ModelSpec, rank: int,
                       target_modules: tuple[str, ...], layers: int | None = None) -> ComputeCost:
    """Folding ``(alpha/r) B A`` into (or out of) the target weights of ``layers`` layers.

    Memory: each target weight read and written (``2 in out`` elements) plus A and B read. FLOPs:
    ``2 r in out`` per module for ``B A``. Overhead: one unit launch overhead per layer.
    """
    n_layers = model.num_layers if layers is None else layers
    shapes = _adapter_modules(model, target_modules)
    elems = sum(2 * fan_in * fan_out + rank * (fan_in + fan_out) for fan_in, fan_out in shapes)
    flops = sum(2.0 * rank * fan_in * fan_out for fan_in, fan_out in shapes) * n_layers
    return ComputeCost(params.unit_overhead_s * n_layers, flops / (gpu.peak_flops * params.compute_efficiency),
                       elems * model.dtype_bytes * n_layers / (gpu.memory_bandwidth_bytes_per_s
                                                                * params.memory_efficiency))


def adapter_merge_s(params: CostParams, gpu: GPUSpec, model: ModelSpec, rank: int,
                    target_modules: tuple[str, ...], layers: int | None = None) -> float:
    """Total seconds of :func:`adapter_merge_cost`."""
    return adapter_merge_cost(params, gpu, model, rank, target_modules, layers).total_s
