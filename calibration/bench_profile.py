"""Compute profiles of model shapes: the executor's unit modules timed on one device, then fitted.

For each unit kind (embedding, decoder layer 0, head) of a model, built as the executor builds it
(:class:`calibration.bench_compute.UnitBench`: meta modules materialised from device memory, the model's
dtype, ``threads`` torch threads as a compute worker runs):

* prefill vs tokens (batch 1, empty cache), the runtime's call of :meth:`executor.pipeline.Runtime.run_unit`;
* decode steps vs batch ``B`` and cached context per sequence, as :func:`executor.batching.run_batch` runs
  them: ``B = 1`` with the request's :class:`~executor.kvcache.RequestKVCache`, ``B > 1`` as one call with
  a :class:`~executor.batching.RowsCache` over ``B`` per-request caches (per-row attention);

then :func:`fit_decode` fits ``step(B) + c S`` (a time per batch size at no context, plus ``c`` per
cached token, ``S`` cached tokens in all) with relative residuals and
:func:`profile_from_samples` builds a :class:`pipeboost.compute_profile.ComputeProfile`. Residuals of the
decode fits go into the profile's ``info``. :func:`in_run_factors` then runs a few requests through the
executor itself and :func:`scaled` carries the ratio of in-run to alone unit times into the profile.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch
from transformers import PretrainedConfig

from calibration.bench_compute import UnitBench
from calibration.bench_runtime import pipeline_plan
from calibration.budget import Deadline, median_s, time_call
from executor.batching import RowsCache
from executor.kvcache import RequestKVCache
from pipeboost.compute_profile import UNIT_KINDS, ComputeProfile, KindProfile, unit_kind
from pipeboost.spec import EMBED_UNIT, ModelSpec
from pipeboost.trace import TraceKind, TraceRecord
from pipeboost.workload import Request
from sim.hostcpu import oversubscription

log = logging.getLogger(__name__)

CPU_PROFILE_TOKENS = (1, 4, 16, 32, 64, 128, 256, 512, 1024, 2048)
GPU_PROFILE_TOKENS = (1, 4, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
DECODE_BATCHES = (1, 2, 3, 4, 6, 8)
DECODE_CONTEXTS = (16, 128, 512)
MIN_PREFILL_POINTS = 4
COLD_CACHE_BYTES = 128 << 20
"""Layer weights cycled through on CPU: four times a 32 MiB L3 cache."""
MAX_LAYER_COPIES = 8


@dataclass(frozen=True)
class ProfileSample:
    """One timed call: ``kind`` (embed/layer/head), ``tokens`` new tokens (1: decode), ``batch``,
    ``context`` cached tokens per sequence, median ``seconds``."""

    kind: str
    tokens: int
    batch: int
    context: int
    seconds: float


def _repeats(seconds_guess: float) -> int:
    return 3 if seconds_guess > 0.05 else (7 if seconds_guess > 0.002 else 15)


class DecodeBench:
    """Decode steps of one unit kind through the executor's batch-of-one or rows-cache path."""

    def __init__(self, bench: UnitBench) -> None:
        self.bench = bench

    def _layer_fn(self, batch: int, context: int) -> Callable[[], torch.Tensor]:
        b = self.bench
        layer = b.units[0]  # fills the caches; the timed calls cycle through b.layers
        caches = []
        for _ in range(batch):
            cache = RequestKVCache()
            layer(b._hidden(context), b._positions(0, context), cache)
            caches.append(cache)
        saved = [c._layers[0] for c in caches]
        hidden, positions = b._hidden(1, batch), b._positions(context, 1, batch)

        def fn() -> torch.Tensor:
            for cache, entry in zip(caches, saved):
                cache._layers[0] = entry  # same context every call
            return b.layer()(hidden, positions, caches[0] if batch == 1 else RowsCache(caches))
        return fn

    def step_fn(self, kind: str, batch: int, context: int) -> Callable[[], torch.Tensor]:
        b = self.bench
        if kind == "layer":
            return self._layer_fn(batch, context)
        if kind == "embed":
            ids = torch.randint(0, b.config.vocab_size, (batch, 1), device=b.device)
            positions = b._positions(context, 1, batch)
            return lambda: b.units[EMBED_UNIT](ids, positions)
        hidden = b._hidden(1, batch)
        return lambda: b.units[b.head_unit](hidden)

    def time(self, kind: str, batch: int, context: int, repeats: int) -> float:
        return median_s(time_call(self.step_fn(kind, batch, context), repeats, warmup=2, sync=self.bench.sync))


def profile_samples(bench: UnitBench, tokens: tuple[int, ...], deadline: Deadline,
                    tick: Callable[[], None] = lambda: None) -> list[ProfileSample]:
    """Prefill vs tokens, then decode vs (batch, context), for the three unit kinds, until ``deadline``
    (at least :data:`MIN_PREFILL_POINTS` token counts and every decode batch size at the first context)."""
    samples: list[ProfileSample] = []
    unit_of = {"embed": EMBED_UNIT, "layer": 0, "head": bench.head_unit}
    last = dict.fromkeys(unit_of, 0.0)
    with torch.inference_mode():
        for k, t in enumerate(x for x in tokens if x <= bench.max_positions):
            if k >= MIN_PREFILL_POINTS and deadline.passed():
                break
            for kind, unit in unit_of.items():
                last[kind] = bench.prefill(unit, t, _repeats(last[kind]))
                samples.append(ProfileSample(kind, t, 1, 0, last[kind]))
            tick()
        decode = DecodeBench(bench)
        contexts = [c for c in DECODE_CONTEXTS if c < bench.max_positions]
        for j, context in enumerate(contexts):
            if j >= 1 and deadline.passed():
                break
            for batch in DECODE_BATCHES:
                for kind in ("layer", "embed", "head") if j == 0 else ("layer",):
                    guess = next((s.seconds for s in samples if s.kind == kind and s.tokens == 1), 0.0)
                    samples.append(ProfileSample(kind, 1, batch, context,
                                                 decode.time(kind, batch, context, _repeats(guess * batch))))
            tick()
    return samples


def fit_decode(samples: list[ProfileSample], with_context: bool
               ) -> tuple[tuple[int, ...], tuple[float, ...], float, list[float]]:
    """``(batches, step_s, c, [median, p95])``: ``step(B) + c S`` by linear least squares on relative
    residuals (one unknown per batch size, plus ``c`` per cached token). Without ``with_context``
    (embedding, head: no attention) ``c = 0`` and ``step(B)`` is the median over the contexts measured."""
    batches = tuple(sorted({s.batch for s in samples}))
    y = np.array([s.seconds for s in samples])
    if not with_context:
        step = tuple(float(np.median([s.seconds for s in samples if s.batch == b])) for b in batches)
        rel = np.abs(np.array([step[batches.index(s.batch)] for s in samples]) - y) / y
        return batches, step, 0.0, [float(np.median(rel)), float(np.percentile(rel, 95))]
    a = np.zeros((len(samples), len(batches) + 1))
    for i, s in enumerate(samples):
        a[i, batches.index(s.batch)] = 1.0
        a[i, -1] = float(s.batch * s.context)
    coef, *_ = np.linalg.lstsq(a / y[:, None], np.ones_like(y), rcond=None)
    coef = np.maximum(coef, 0.0)
    rel = np.abs(a @ coef - y) / y
    return batches, tuple(float(x) for x in coef[:-1]), float(coef[-1]), \
        [float(np.median(rel)), float(np.percentile(rel, 95))]


def profile_from_samples(shape: str, samples: list[ProfileSample], runtime_overhead_s: float,
                         info: dict | None = None) -> ComputeProfile:
    """A :class:`ComputeProfile` from :func:`profile_samples` (prefill points as measured; decode fitted)."""
    kinds = {}
    residuals = {}
    for kind in ("embed", "layer", "head"):
        prefill = sorted((s.tokens, s.seconds) for s in samples if s.kind == kind and s.batch == 1 and s.context == 0)
        decode = [s for s in samples if s.kind == kind and s.tokens == 1 and s.context > 0]
        batches, step, per_token, res = fit_decode(decode, with_context=kind == "layer")
        kinds[kind] = KindProfile(tuple(t for t, _ in prefill), tuple(s for _, s in prefill), batches, step,
                                  per_token)
        residuals[kind] = res
    return ComputeProfile(shape, kinds["embed"], kinds["layer"], kinds["head"], float(runtime_overhead_s),
                          {**(info or {}), "decode_fit_residuals_rel_median_p95": residuals,
                           "samples_kind_tokens_batch_context_s": [[s.kind, s.tokens, s.batch, s.context, s.seconds]
                                                                   for s in samples]})


def layer_copies(config: PretrainedConfig, dtype: torch.dtype, device: torch.device) -> int:
    """Decoder-layer copies to cycle through so their weights together exceed :data:`COLD_CACHE_BYTES`
    (CPU; at most :data:`MAX_LAYER_COPIES`, and no more than the model has layers). One on GPUs."""
    if device.type != "cpu":
        return 1
    h, f = config.hidden_size, getattr(config, "intermediate_size", None) or getattr(config, "ffn_dim")
    layer_bytes = (4 * h * h + 3 * h * f) * dtype.itemsize
    want = -(-COLD_CACHE_BYTES // max(layer_bytes, 1))
    return int(max(1, min(want, MAX_LAYER_COPIES, config.num_hidden_layers)))


def measure_profile(config: PretrainedConfig, shape: str, device: torch.device, dtype: torch.dtype,
                    deadline: Deadline, runtime_overhead_s: float, info: dict | None = None,
                    tick: Callable[[], None] = lambda: None) -> ComputeProfile:
    """Build the units of ``config`` on ``device``, time them and return the fitted profile."""
    bench = UnitBench(config, device, dtype, layer_copies(config, dtype, device))
    tokens = CPU_PROFILE_TOKENS if device.type == "cpu" else GPU_PROFILE_TOKENS
    samples = profile_samples(bench, tokens, deadline, tick)
    log.info("profiled %s: %d samples", shape, len(samples))
    return profile_from_samples(shape, samples, runtime_overhead_s, info)


def _prediction_s(profile: ComputeProfile, model: ModelSpec, rec: TraceRecord, prompt_tokens: int) -> float:
    step = int(rec.attrs.get("step", 0))
    if rec.kind is TraceKind.PREFILL:
        return profile.unit_s(model, int(rec.layer), prompt_tokens)
    return profile.unit_s(model, int(rec.layer), 1, 1, prompt_tokens + step - 1)


IN_RUN_RUNS = 5
"""Executor runs the in-run factors are taken over: one run's units share that run's speed (thread
placement, memory layout: +-5-10% between runs on a 2-core VM), so one run is one noisy sample."""
INTERFERENCE_RUNS = 3
"""Executor runs the copy-on-compute coefficient pools its layer calls over (same reason)."""
COPY_TERM_TOKENS = 32
"""Prompt tokens of the loading runs that measure ``compute_interference_per_gbps`` (the simulator's
``CostParams.compute_interference_base_tokens``)."""
COPY_TERM_MIN_CALLS = 50
"""Calls the 32-token copy term wants (one device computing alone while loads run: 8-10 per OPT-125M run);
loading runs are added one at a time up to :data:`COPY_TERM_MAX_RUNS` until that many overlap the copies.
Session 13: three runs' 25-31 such calls gave 0.046-0.11 per GB/s on four tries, six runs' 55-58 calls
0.044-0.104 on three (the suite's own traces, by the same estimator, 0.074-0.088)."""
COPY_TERM_MAX_RUNS = 6
LONG_INTERFERENCE_RUNS = 2
"""The same with :data:`LONG_PROMPT_TOKENS`-token prompts (``compute_interference_per_gbps_long``): 19-38
layer calls of OPT-125M overlap the copies per run, so two runs even when the budget runs late (~3 s)."""
LONG_INTERFERENCE_MAX_RUNS = 4
"""Loading runs with long prompts at most: after :data:`LONG_INTERFERENCE_RUNS`, one more at a time while
fewer than :data:`CONCURRENCY_MIN_CALLS` calls overlap the copies (session 11: two runs gave 17 calls, the
term was left unset and the 32-token term, 0.063 against the measured 0.041, charged the long prompts)."""


LONG_PROMPT_TOKENS = 128
"""Second prompt length of the in-run factors' prefills (the first is ``prompt_tokens``, 32): a layer's
in-run factor changes with the tokens it computes (0.91-0.95x of the 32-token factor at 128 tokens for
OPT-125M, 0.79-0.87x for its head)."""
LONG_PROMPT_RUNS = 2


def in_run_factors(profile: ComputeProfile, model: ModelSpec, model_dir: Path, preset: str, dtype: str,
                   device_kind: str = "cpu", requests: int = 3, prompt_tokens: int = 32,
                   output_tokens: int = 6, runs: int = IN_RUN_RUNS,
                   per_run: list[dict[str, float]] | None = None,
                   long_prompt_tokens: int | None = LONG_PROMPT_TOKENS,
                   long_runs: int = LONG_PROMPT_RUNS) -> dict[str, float]:
    """Ratio of the executor's unit durations in a run to the profile's, per ``kind/phase``
    (``layer/prefill``, ``head/decode``, ...): one device, one request at a time, after the load; the
    median over each run's units, then the median over ``runs`` runs (each run's factors are appended to
    ``per_run`` when given). With ``long_prompt_tokens``, ``long_runs`` more runs with prompts of that length
    give the prefill factors at it, keyed ``kind/prefill@TOKENS`` (:func:`scaled` interpolates between the
    two lengths).

    A module timed alone runs faster than inside a forward pass (its caches and the allocator's are warm,
    the worker thread has just run it); the factors carry the difference into the profile
    (:func:`scaled`)."""
    samples = [_one_run_factors(profile, model, model_dir, preset, dtype, device_kind, requests, prompt_tokens,
                                output_tokens) for _ in range(max(1, runs))]
    if long_prompt_tokens and long_prompt_tokens != prompt_tokens and long_runs > 0:
        for _ in range(long_runs):
            run = _one_run_factors(profile, model, model_dir, preset, dtype, device_kind, requests,
                                   long_prompt_tokens, 2)
            samples.append({f"{k}@{long_prompt_tokens}": v for k, v in run.items() if k.endswith("/prefill")})
    if per_run is not None:
        per_run.extend(samples)
    keys = sorted({k for run in samples for k in run})
    return {k: float(np.median([run[k] for run in samples if k in run])) for k in keys}


def _one_run_factors(profile: ComputeProfile, model: ModelSpec, model_dir: Path, preset: str, dtype: str,
                     device_kind: str, requests: int, prompt_tokens: int, output_tokens: int) -> dict[str, float]:
    """The per-``kind/phase`` median ratio of one executor run (see :func:`in_run_factors`)."""
    from executor.engine import run_executor

    plan = pipeline_plan(preset, dtype, 1)
    step_s = sum(profile.unit_s(model, u, 1, 1, prompt_tokens) for u in model.units())
    request_s = 1.5 * (sum(profile.unit_s(model, u, prompt_tokens) for u in model.units())
                       + output_tokens * step_s) + 0.02
    first_s = 0.2 + model.total_bytes / 1e9  # after the whole model is resident
    reqs = [Request(i, first_s + i * request_s, prompt_tokens, output_tokens) for i in range(requests)]
    result = run_executor(plan, model_dir, reqs, devices=f"{device_kind}:1", seed=0, timeout_s=300.0)
    ratios: dict[str, list[float]] = {}
    for rec in result.trace:
        if rec.kind in (TraceKind.PREFILL, TraceKind.DECODE) and rec.layer is not None:
            key = f"{unit_kind(model, int(rec.layer))}/{'prefill' if rec.kind is TraceKind.PREFILL else 'decode'}"
            ratios.setdefault(key, []).append(rec.duration_s / _prediction_s(profile, model, rec, prompt_tokens))
    return {k: float(np.median(v)) for k, v in sorted(ratios.items())}


CONCURRENCY_RUNS = 2
"""Executor runs :func:`concurrency_slowdown` pools its unit calls over."""
PHASES = ("prefill", "decode")
CONCURRENCY_MIN_CALLS = 20
"""Fewer overlapping calls of a phase than this: no evidence of a slowdown, 0 (a tiny model's 0.1 ms units
rarely overlap: one call once gave 1.37)."""


def concurrency_slowdown(profile: ComputeProfile, model: ModelSpec, model_dir: Path, preset: str, dtype: str,
                         n_devices: int, host_cores: float | None, device_kind: str = "cpu", requests: int = 8,
                         prompt_tokens: int = 32, output_tokens: int = 4, runs: int = CONCURRENCY_RUNS,
                         traces: list[list[TraceRecord]] | None = None) -> dict[str, tuple[float, int]]:
    """Per phase (``prefill``, ``decode``): the slowdown of ``model``'s units per other device computing,
    beyond host-core sharing, on the executor, and the number of samples
    (:attr:`ComputeProfile.prefill_concurrency_slowdown`, :attr:`ComputeProfile.concurrency_slowdown`).

    ``requests`` requests arrive at once after the whole model is resident on a pipeline over ``n_devices``
    (no copies run), so the stages compute different requests at the same time; see
    :func:`concurrency_slowdowns` for how one run's calls are read. The median over the calls of ``runs``
    runs (0 when negative, or with fewer than :data:`CONCURRENCY_MIN_CALLS` calls). On the CPU executor
    the workers share one interpreter besides the cores: a decode step, mostly Python around small
    kernels, loses to that (SmolLM2-135M's 30 thin layers more than OPT-125M's 12), a prefill, mostly
    kernels that release the interpreter, hardly. Each run's trace is appended to ``traces`` when given."""
    from executor.engine import run_executor

    plan = pipeline_plan(preset, dtype, n_devices)
    first_s = 0.2 + model.total_bytes / 1e9  # after every stage is resident (uncapped copies)
    reqs = [Request(i, first_s, prompt_tokens, output_tokens) for i in range(requests)]
    values: dict[str, list[float]] = {phase: [] for phase in PHASES}
    for _ in range(max(1, runs)):
        trace = run_executor(plan, model_dir, reqs, devices=f"{device_kind}:{n_devices}", seed=0,
                             timeout_s=300.0).trace
        if traces is not None:
            traces.append(trace)
        for phase, run_values in concurrency_slowdowns(trace, profile, model, host_cores, prompt_tokens).items():
            values[phase].extend(run_values)
    return phase_slowdowns(values)


def phase_slowdowns(values: dict[str, list[float]]) -> dict[str, tuple[float, int]]:
    """Per phase, the median of its calls' values clipped at 0 and their number; 0 with fewer than
    :data:`CONCURRENCY_MIN_CALLS` calls."""
    return {phase: _nonnegative_median(v) if len(v) >= CONCURRENCY_MIN_CALLS else (0.0, len(v))
            for phase, v in values.items()}


def concurrency_slowdowns(trace: list[TraceRecord], profile: ComputeProfile, model: ModelSpec,
                          host_cores: float | None, prompt_tokens: int) -> dict[str, list[float]]:
    """Per phase, one value per decoder-layer call of one run made while ``k >= 2`` devices compute: its
    time over the ``profile``'s, divided by the core-sharing factor ``max(1, k / host_cores)`` that
    :mod:`sim.hostcpu` charges and by the run's own speed (:func:`_run_speed`: the same ratio over the
    run's calls of that phase made while one device computes), minus 1, per other device computing.

    Dividing by the run's own single-device calls makes it a difference measured within one run: each run
    has its own speed (+-5-10% between runs on a 2-core VM), which is the in-run factors' business."""
    layers = _layer_calls(trace, model, (TraceKind.PREFILL, TraceKind.DECODE))
    ratios: dict[str, list[tuple[float, int]]] = {phase: [] for phase in PHASES}
    for rec in layers:
        computing, cores = _devices_computing(rec, layers, host_cores)
        phase = "prefill" if rec.kind is TraceKind.PREFILL else "decode"
        ratios[phase].append((rec.duration_s / _prediction_s(profile, model, rec, prompt_tokens) / cores, computing))
    out = {}
    for phase, calls in ratios.items():
        speed = _run_speed([r for r, k in calls if k < 2])
        out[phase] = [(r / speed - 1.0) / (k - 1) for r, k in calls if k >= 2]
    return out


RUN_SPEED_MIN_CALLS = 5
"""Fewer reference calls than this in a run: its speed is taken as 1 (the profile's)."""


def _run_speed(reference_ratios: list[float]) -> float:
    """A run's own speed: the median of its reference calls' time-over-profile ratios (1 with fewer than
    :data:`RUN_SPEED_MIN_CALLS`)."""
    return float(np.median(reference_ratios)) if len(reference_ratios) >= RUN_SPEED_MIN_CALLS else 1.0


def _layer_calls(trace: list[TraceRecord], model: ModelSpec, kinds: tuple[TraceKind, ...]) -> list[TraceRecord]:
    """The decoder-layer calls (not the embedding or head) of ``kinds`` in ``trace``, in trace order."""
    return [r for r in trace if r.kind in kinds and r.layer is not None and 0 <= int(r.layer) < model.num_layers]


def _devices_computing(rec: TraceRecord, calls: list[TraceRecord], host_cores: float | None) -> tuple[int, float]:
    """Devices computing at the middle of ``rec`` (its own included, from ``calls``) and the core-sharing
    factor ``max(1, devices / host_cores)`` that :mod:`sim.hostcpu` charges for them (1 without host cores)."""
    mid = (rec.t_start_s + rec.t_end_s) / 2
    computing = 1 + len({o.gpu for o in calls if o.gpu != rec.gpu and o.t_start_s <= mid <= o.t_end_s})
    return computing, oversubscription(computing, host_cores)


def _nonnegative_median(values: list[float]) -> tuple[float, int]:
    """The median of ``values`` clipped at 0 (0 without values), and how many there are."""
    return (max(0.0, float(np.median(values))) if values else 0.0), len(values)


def _prefill_factor(factors: dict[str, float], kind: str, tokens: int, base_tokens: int) -> float:
    """The prefill factor of ``kind`` at ``tokens``: ``kind/prefill`` at ``base_tokens`` and below; with a
    ``kind/prefill@T`` factor, that one at ``T`` and above, linear in log(tokens) between."""
    base = factors.get(f"{kind}/prefill", 1.0)
    longer = [(int(k.rsplit("@", 1)[1]), v) for k, v in factors.items() if k.startswith(f"{kind}/prefill@")]
    if not longer or tokens <= base_tokens:
        return base
    t_long, f_long = max(longer)
    if tokens >= t_long:
        return f_long
    w = (np.log(tokens) - np.log(base_tokens)) / (np.log(t_long) - np.log(base_tokens))
    return float(base + w * (f_long - base))


def scaled(profile: ComputeProfile, factors: dict[str, float], base_tokens: int = 32) -> ComputeProfile:
    """``profile`` with each kind's prefill table times its prefill factor at each token count
    (:func:`_prefill_factor`: ``factors[kind/prefill]``, measured at ``base_tokens``, and
    ``factors[kind/prefill@T]`` when present) and its decode table and per-token cost times
    ``factors[kind/decode]`` (missing factors: 1); the factors go into ``info``."""
    kinds = {}
    for kind in UNIT_KINDS:
        k = profile.kind(kind)
        fd = factors.get(f"{kind}/decode", 1.0)
        prefill = tuple(s * _prefill_factor(factors, kind, t, base_tokens) for t, s in zip(k.prefill_tokens,
                                                                                             k.prefill_s))
        kinds[kind] = KindProfile(k.prefill_tokens, prefill, k.decode_batches,
                                  tuple(s * fd for s in k.decode_s), k.decode_context_s * fd)
    return dataclasses.replace(profile, embed=kinds["embed"], layer=kinds["layer"], head=kinds["head"],
                               info={**profile.info, "in_run_factors": dict(factors)})


def loading_runs(model_dir: Path, preset: str, dtype: str, link_bytes_per_s: float, n_devices: int,
                 device_kind: str = "cpu", requests: int = 12, prompt_tokens: int = COPY_TERM_TOKENS,
                 runs: int = INTERFERENCE_RUNS) -> list[list[TraceRecord]]:
    """Executor traces of ``runs`` runs in which ``requests`` requests arrive at time zero on a PipeBoost plan
    over ``n_devices`` (each device loads its own stage, then the rest, at ``link_bytes_per_s``) and prefill
    each decoder layer as it lands: the material of :func:`load_interference_per_gbps` and
    :func:`unit_wake_s`."""
    from executor.engine import run_executor

    plan = pipeline_plan(preset, dtype, n_devices, "pipeboost", "own_stage_first_then_next")
    reqs = [Request(i, 0.0, prompt_tokens, 2) for i in range(requests)]
    return [run_executor(plan, model_dir, reqs, devices=f"{device_kind}:{n_devices}", seed=0, timeout_s=300.0,
                         link_bandwidth_bytes_per_s=link_bytes_per_s).trace for _ in range(max(1, runs))]


def load_interference_per_gbps(traces: list[list[TraceRecord]], profile: ComputeProfile, model: ModelSpec,
                               link_bytes_per_s: float, host_cores: float | None = None,
                               prompt_tokens: int = COPY_TERM_TOKENS) -> tuple[float, int]:
    """Compute slowdown per GB/s copied to the node, measured on the executor, and the number of samples.

    For every decoder-layer call of :func:`loading_runs` made while loads run: its time over the (in-run
    scaled) ``profile``, divided by the core-sharing factor ``max(1, devices computing / host_cores)`` that
    :mod:`sim.hostcpu` already charges and by the run's own speed (:func:`_run_speed` of the same ratio
    over the run's layer calls made while no load runs), minus 1, minus the profile's prefill concurrency
    slowdown when another device computes too (the simulator charges it besides this term:
    :meth:`sim.interference.Interference.factor`), per GB/s being copied; the median over the calls of all
    runs. With ``host_cores`` only calls of a device computing alone, against the run's alone calls without
    copies (:func:`_alone_copy_calls`: where the simulator's copy term sets the pace)."""
    values = [v for trace in traces
              for v in _copy_slowdowns(trace, profile, model, link_bytes_per_s, host_cores, prompt_tokens)]
    return _nonnegative_median(values)


def copy_term_runs(model_dir: Path, preset: str, dtype: str, link_bytes_per_s: float, n_devices: int,
                   profile: ComputeProfile, model: ModelSpec, host_cores: float | None, device_kind: str = "cpu",
                   prompt_tokens: int = COPY_TERM_TOKENS, runs: int = INTERFERENCE_RUNS,
                   max_runs: int | None = None, min_calls: int = CONCURRENCY_MIN_CALLS
                   ) -> tuple[list[list[TraceRecord]], float, int]:
    """:func:`loading_runs` and the copy term measured on them (:func:`load_interference_per_gbps`): the
    traces, the term and its number of calls. With ``max_runs``, one more run at a time while fewer than
    ``min_calls`` calls overlap the copies, up to ``max_runs`` runs in all."""
    traces: list[list[TraceRecord]] = []
    while True:
        traces += loading_runs(model_dir, preset, dtype, link_bytes_per_s, n_devices, device_kind,
                               prompt_tokens=prompt_tokens, runs=runs if not traces else 1)
        value, calls = load_interference_per_gbps(traces, profile, model, link_bytes_per_s, host_cores,
                                                  prompt_tokens=prompt_tokens)
        if max_runs is None or calls >= min_calls or len(traces) >= max_runs:
            return traces, value, calls


WAKE_WINDOW_S = 0.02
"""A call starting later than this after its unit landed waited for something else (its turn, a hop)."""


def unit_wake_s(traces: list[list[TraceRecord]]) -> tuple[float, int]:
    """Median seconds from a unit landing to the start of the compute that waited for it, and the number of
    samples: decoder-layer and head calls whose unit landed after the device's previous call ended (the
    worker was waiting for it) and that started within :data:`WAKE_WINDOW_S` of the landing."""
    lags = []
    for trace in traces:
        landed = {(r.gpu, r.layer): r.t_end_s for r in trace if r.kind is TraceKind.LOAD}
        previous_end: dict[int | None, float] = {}
        calls = sorted((r for r in trace if r.kind in (TraceKind.PREFILL, TraceKind.DECODE)
                        and r.layer is not None and int(r.layer) >= 0), key=lambda r: r.t_start_s)
        for rec in calls:
            t_landed = landed.get((rec.gpu, rec.layer))
            if (t_landed is not None and t_landed > previous_end.get(rec.gpu, 0.0)
                    and 0.0 <= rec.t_start_s - t_landed <= WAKE_WINDOW_S):
                lags.append(rec.t_start_s - t_landed)
            previous_end[rec.gpu] = max(previous_end.get(rec.gpu, 0.0), rec.t_end_s)
    return (float(np.median(lags)) if lags else 0.0), len(lags)


def prefill_layer_regimes(trace: list[TraceRecord], model: ModelSpec, host_cores: float | None
                          ) -> list[tuple[TraceRecord, int, float, int]]:
    """Every decoder-layer prefill call of ``trace`` with its regime at the call's middle: ``(call, devices
    computing (itself included), their core-sharing factor, loaders copying)``
    (:func:`_devices_computing`)."""
    loads = [(r.t_start_s, r.t_end_s) for r in trace if r.kind is TraceKind.LOAD]
    layers = _layer_calls(trace, model, (TraceKind.PREFILL,))
    out = []
    for rec in layers:
        mid = (rec.t_start_s + rec.t_end_s) / 2
        computing, cores = _devices_computing(rec, layers, host_cores)
        out.append((rec, computing, cores, sum(1 for a, b in loads if a <= mid <= b)))
    return out


def _copy_slowdowns(trace: list[TraceRecord], profile: ComputeProfile, model: ModelSpec, link_bytes_per_s: float,
                    host_cores: float | None, prompt_tokens: int) -> list[float]:
    """Per layer call of one run made while loads run: its slowdown per GB/s copied (see
    :func:`load_interference_per_gbps`). With ``host_cores`` only the calls of a device computing alone count,
    against the run's calls alone without copies (:func:`_alone_copy_calls`)."""
    model_slowdown = profile.concurrency_slowdown_for(1.0)
    calls = []
    for rec, computing, cores, copying in prefill_layer_regimes(trace, model, host_cores):
        concurrency = model_slowdown if computing >= 2 else 0.0
        calls.append(_CopyCall(rec.duration_s / _prediction_s(profile, model, rec, prompt_tokens) / cores,
                               concurrency, copying, computing))
    if host_cores is not None:
        calls = _alone_copy_calls(calls)
    speed = _run_speed([c.ratio / (1.0 + c.concurrency) for c in calls if not c.copying])
    return [(c.ratio / speed - 1.0 - c.concurrency) / (c.copying * link_bytes_per_s / 1e9) for c in calls if c.copying]


class _CopyCall(NamedTuple):
    """A layer call of :func:`_copy_slowdowns`: time over profile (core sharing divided out), the profile's
    concurrency slowdown it carries, loaders copying and devices computing (itself included)."""

    ratio: float
    concurrency: float
    copying: int
    computing: int


def _alone_copy_calls(calls: list[_CopyCall]) -> list[_CopyCall]:
    """The calls of a device computing alone, where the run has :data:`RUN_SPEED_MIN_CALLS` such calls
    without copies to measure its speed against (else all calls).

    With host cores the simulator charges the copy term as a cap on the job's thread, ``1 / (1 + beta x
    GB/s)`` of a core, which sets a job's pace only where the job has a core to itself; with two or more
    devices computing their fair share of the cores left by the copies (``copy_cpu_s_per_byte``) sets it
    (:mod:`sim.interference`). So the term is measured where it acts. Read over every call instead (most
    of a busy pipeline's calls have both devices computing) it took the core sharing the simulator
    charges as well: 0.12-0.14 per GB/s in session 13's calibration, where the suite's one-device calls
    while copying lost 0.03-0.05 (OPT-125M and SmolLM2-135M), and the two-device OPT-125M rows ran 6-10%
    late."""
    alone = [c for c in calls if c.computing == 1]
    if sum(1 for c in alone if not c.copying) < RUN_SPEED_MIN_CALLS:
        return calls
    return alone
