"""``pipeboost calibrate``: run the microbenchmarks on real devices, fit, write a params file.

:func:`calibrate` measures (in this order, each phase within its share of the time budget)

1. start-up: the engine's own start (tracer, loaders building meta modules) up to the first LOAD, plus the
   costs paid before time zero (arena first touch; a cold Python process start when the budget allows);
2. whole-unit loads of a seeded random checkpoint of the model on all devices at once (real unit sizes),
   at the link cap and without one (the loaders' own aggregate limit becomes the ``host_mem`` link);
3. copy time vs size (4 KiB upwards) per device alone, then all devices at once;
4. per-unit compute: prefill vs tokens for embedding, decoder layer and head; decode vs batch and context
   (one device alone, fitted), and a few points with every device computing at once (the slowdown is
   reported in the provenance; shared cores are modelled by ``host_cores``, step 7);
5. activation hops between devices vs bytes;
6. the executor runtime's own latencies outside the units (synthetic requests on a small model of the
   same family, :mod:`calibration.bench_runtime`): ``dispatch_s``, ``handoff_s``, ``step_start_s``, and a
   per-unit part added to ``unit_overhead_s`` (the fitted launch part and the runtime part are both in the
   provenance) and to the compute profiles; from the busy pipelines of step 9 (the concurrency runs) the
   workers' own time after a hand-off or a token before they serve the next queued request
   (``worker_after_hop_s``, ``worker_after_token_s``, :func:`calibration.bench_runtime.worker_switch_gaps`);
7. on CPU virtual devices, the host cores that compute threads share (:mod:`calibration.bench_host`:
   ``host_cores`` with one thread per device, ``host_cores_many`` with :data:`calibration.bench_host.MANY_THREADS`
   threads), how much slower the loaders copy while every device computes
   (``copy_interference_per_job``) and the loaders' per-unit work (``unit_load_cpu_s``; loader CPU per byte is
   kept in the provenance);
8. failure handling: an injected fault's detection delay and replan overhead
   (:mod:`calibration.bench_failure`: ``failure_detection_s``, ``replan_overhead_s``);
9. compute profiles (:mod:`calibration.bench_profile`) of the model and of every ``profile_presets`` model:
   measured per-unit prefill and decode times that the cost model uses instead of the roofline for models
   of those shapes (``CostParams.compute_profiles``, each with the runtime overhead of step 6);
10. on CPU virtual devices with a link cap, the slowdown of compute per GB/s copied while the devices load
   (requests prefilling as units land, on the executor): ``compute_interference_per_gbps``
   (:mod:`sim.interference`), and from the same runs the delay from a unit landing to the compute that
   waited for it (``unit_wake_s``); the same with 128-token prompts gives the copy term of long prefills
   (``compute_interference_per_gbps_long``, at least :data:`calibration.bench_profile.CONCURRENCY_MIN_CALLS`
   calls);

then assembles them (:func:`calibration.assemble.fit_measurements`, which fits with
:func:`calibration.fit.fit_cost_params`) and writes ``CostParams`` with provenance
(machine, devices, date, package versions, executor git revision, residuals, raw figures). The suite
scenarios under ``scenarios/validation/`` are never used here: calibration sees microbenchmarks only.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from calibration import (bench_compute, bench_failure, bench_host, bench_load, bench_profile, bench_runtime,
                         bench_transfer)
from calibration.budget import Budget, Deadline
from calibration.passes import median_params
from calibration.assemble import Measurements, fit_measurements
from calibration.progress import Progress
from calibration.provenance import build_provenance
from executor.checkpoint import cached_checkpoint
from executor.devices import parse_devices
from executor.hf import hf_config, torch_dtype
from pipeboost.compute_profile import ComputeProfile, shape_key
from pipeboost.costs import CostParams
from pipeboost.errors import PipeBoostError
from pipeboost.hardware import GPU_PRESETS
from pipeboost.model_config import model_spec_from_hf_config, preset_config
from pipeboost.scenario import load_params_file, save_params_file
from pipeboost.spec import GPUSpec

log = logging.getLogger(__name__)

SHARES = {"startup": 0.08, "loads": 0.12, "transfers": 0.22, "concurrent": 0.06, "compute": 0.22, "hops": 0.06,
          "runtime": 0.07, "profiles": 0.17}
MAX_COPY_BYTES = {"cpu": 256 << 20, "cuda": 1 << 30}
PROCESS_START_MIN_BUDGET_S = 120.0
MODEL_RUNS_S = 12.0
"""About the seconds a profiled model's executor runs take on 2 CPU virtual devices (in-run factors,
concurrency; or the copy-interference loading runs). A pass with less than this left per model still to
profile (plus the loading runs) gives each its minimum runs (:data:`SHORT_IN_RUN`, one concurrency run,
two loading runs), so that three passes of four models stay within the 300 s budget on a slower day."""
SHORT_IN_RUN = {"runs": 3, "long_runs": 1}


class CalibrationError(PipeBoostError):
    """Bad calibrate arguments (devices, model preset, GPU preset)."""


@dataclass(frozen=True)
class CalibrationRequest:
    """What to calibrate: ``devices`` (``cpu:N`` / ``cuda:0,1``), model ``preset``, ``dtype`` (None: float32
    on CPU, float16 on CUDA), ``budget_s``, emulated ``link_gbps`` cap (GB/s, CPU virtual links), the GPU
    preset the efficiencies refer to, where checkpoints are cached, and ``profile_presets``: more models
    (same dtype) whose compute is profiled (the main ``preset`` always is)."""

    devices: str
    preset: str
    budget_s: float = 300.0
    link_gbps: float | None = None
    dtype: str | None = None
    gpu_preset: str | None = None
    cache_dir: Path = Path("runs/checkpoints")
    progress: bool = True
    profile_presets: tuple[str, ...] = ()
    passes: int = 1
    """Full measurement passes, ``budget_s / passes`` each, merged by :func:`calibration.passes.median_params`."""


def executor_device_spec(spec: str) -> str:
    """``cuda:0,1`` (a list of GPU ids) -> the executor's ``cuda:2``; the ids must be 0..N-1."""
    kind, _, rest = spec.partition(":")
    if kind != "cuda" or "," not in rest:
        return spec
    ids = [int(x) for x in rest.split(",") if x.strip()]
    if ids != list(range(len(ids))):
        raise CalibrationError(f"devices {spec!r}: the executor addresses GPUs 0..N-1; use cuda:{len(ids)} "
                               "and CUDA_VISIBLE_DEVICES to pick others")
    return f"cuda:{len(ids)}"


def _resolve(req: CalibrationRequest) -> tuple[list[torch.device], dict[str, Any], str, GPUSpec]:
    try:
        devices = parse_devices(executor_device_spec(req.devices))
        config = preset_config(req.preset)
        for name in req.profile_presets:
            preset_config(name)
    except (KeyError, ValueError) as exc:
        raise CalibrationError(str(exc).strip("'\"")) from None
    kind = devices[0].type
    dtype = req.dtype or ("float32" if kind == "cpu" else "float16")
    gpu_name = req.gpu_preset or ("cpu-virtual" if kind == "cpu" else None)
    if gpu_name not in GPU_PRESETS:
        raise CalibrationError(f"GPU preset {gpu_name!r} unknown; give --gpu-preset, one of "
                               f"{', '.join(sorted(GPU_PRESETS))}")
    return devices, config, dtype, GPU_PRESETS[gpu_name]


def _max_copy_bytes(kind: str, link_bytes_per_s: float | None, phase_s: float, n_devices: int) -> int:
    """Largest sweep size whose copies (about 4 per device) fit the phase at the link cap."""
    cap = MAX_COPY_BYTES.get(kind, MAX_COPY_BYTES["cpu"])
    if link_bytes_per_s:
        cap = min(cap, int(phase_s * link_bytes_per_s / (6 * n_devices)))
    return max(cap, 256 << 10)


def _checkpoint(req: CalibrationRequest, config: dict[str, Any], dtype: str) -> Path:
    return cached_checkpoint(config, Path(req.cache_dir) / f"{req.preset}-{dtype}-seed0", seed=0, dtype=dtype)


def _phase_start_and_loads(req: CalibrationRequest, budget: Budget, devices: list[torch.device],
                           model_dir: Path, bar: Progress, config: dict[str, Any],
                           first_pass: bool = True) -> tuple[bench_load.UnitLoadRun, dict[str, Any]]:
    bar.stage("start-up")
    link = req.link_gbps * 1e9 if req.link_gbps else None
    extras: dict[str, Any] = {"arena_first_touch_s_per_GiB": bench_load.arena_first_touch(devices[0], 256 << 20) * 4}
    if req.budget_s >= PROCESS_START_MIN_BUDGET_S and first_pass:
        extras["process_start_s"] = bench_load.process_start_s()
    budget.phase(SHARES["startup"])
    bar.tick()
    bar.stage("unit loads")
    deadline = budget.phase(SHARES["loads"])
    runs = [bench_load.measure_unit_loads(model_dir, devices, link)]
    while not deadline.passed() and len(runs) < 5:
        runs.append(bench_load.measure_unit_loads(model_dir, devices, link))
    bar.tick()
    if devices[0].type == "cpu":  # loaders' CPU per byte (shared host cores, see calibration.bench_host)
        per_byte = [bench_host.loader_cpu_s_per_byte(r) for r in runs]
        extras["loader_cpu_s_wall_s_bytes"] = [[r.cpu_s, r.wall_s, sum(x[2] for x in r.loads)] for r in runs]
        extras["copy_cpu_s_per_byte"] = float(np.median(per_byte))
        extras["unit_load_cpu_s"] = _unit_load_cpu_s(req, config, devices, link)
    if link and len(devices) > 1:  # the loaders' own aggregate limit: all devices at once, no link cap
        extras["uncapped_load_aggregate_bytes_per_s"] = bench_host.uncapped_load_aggregate_bytes_per_s(model_dir,
                                                                                                 devices)
    loads = tuple(x for r in runs for x in r.loads)
    startup = float(np.median([r.startup_s for r in runs]))
    extras["startup_s_runs"] = [r.startup_s for r in runs]
    return bench_load.UnitLoadRun(loads, startup), extras


def _tiny_of_family(req: CalibrationRequest, config: dict[str, Any], dtype: str) -> tuple[str, Path]:
    """The tiny preset of ``config``'s family and its random checkpoint (made once under the cache)."""
    tiny = "llama-tiny" if config.get("model_type") == "llama" else "opt-tiny"
    return tiny, _checkpoint(dataclasses.replace(req, preset=tiny), preset_config(tiny), dtype)


def _unit_load_cpu_s(req: CalibrationRequest, config: dict[str, Any], devices: list[torch.device],
                     link: float | None) -> float:
    """Per-unit loader work from cold loads of a tiny model of the same family on one device (median of 3)."""
    _, tiny_dir = _tiny_of_family(req, config, "float32")
    values = [bench_host.unit_load_cpu_s(bench_load.measure_unit_loads(tiny_dir, devices[:1], link), link)
              for _ in range(3)]
    return float(np.median(values))


def _runtime_latencies(req: CalibrationRequest, config: dict[str, Any], devices: list[torch.device],
                       dtype: str) -> bench_runtime.RuntimeOverheads:
    """The runtime's latencies (:mod:`calibration.bench_runtime`) on a tiny model of the same family: they
    are Python and thread work, independent of the model's size, and a tiny model keeps requests short."""
    tiny, tiny_dir = _tiny_of_family(req, config, dtype)
    n = min(len(devices), int(preset_config(tiny)["num_hidden_layers"]))
    return bench_runtime.measure_runtime_overheads(tiny_dir, tiny, dtype, n, devices[0].type)


def _phase_transfers(req: CalibrationRequest, budget: Budget, devices: list[torch.device],
                     bar: Progress) -> tuple[list, list]:
    bar.stage("copy sweep")
    link = req.link_gbps * 1e9 if req.link_gbps else None
    deadline = budget.phase(SHARES["transfers"])
    max_bytes = _max_copy_bytes(devices[0].type, link, SHARES["transfers"] * req.budget_s, len(devices))
    rig = bench_transfer.CopyRig(devices, max_bytes, link)
    try:
        samples = bench_transfer.sweep_transfers(rig, bench_transfer.sweep_sizes(max_bytes), deadline, bar.tick)
        bar.stage("all devices at once")
        budget.phase(SHARES["concurrent"])
        top = max(s.nbytes for s in samples)
        concurrent = bench_transfer.concurrent_transfers(rig, top, 3) if len(devices) > 1 else []
    finally:
        rig.close()
    bar.tick()
    return samples, concurrent


def _copy_interference(benches: list, model_dir: Path, devices: list[torch.device], link: float | None,
                       extras: dict[str, Any], threads: int) -> None:
    """``copy_interference_per_job``: every device loads (at the link cap) alone, then while every device
    computes; rates and the coefficient into ``extras``, with the compute rate the copies cost
    (``copy_cores_per_byte``, recorded only: :func:`calibration.bench_host.copy_cores_per_byte`)."""
    alone = bench_load.measure_unit_loads(model_dir, devices, link)
    calls_per_s = bench_host.compute_calls_per_s(benches, threads=threads)
    call_ends: list[float] = []
    busy = bench_host.loads_while_computing(benches, lambda: bench_load.measure_unit_loads(model_dir, devices, link),
                                            threads=threads, call_ends=call_ends)
    compute_cores = min(float(len(benches)), extras.get("host_cores") or float(len(benches)))
    extras["copy_cores_per_byte"] = bench_host.copy_cores_per_byte(busy, call_ends, calls_per_s, compute_cores)
    extras["load_rate_alone_computing_bytes_per_s"] = [bench_host.load_rate_bytes_per_s(alone),
                                                       bench_host.load_rate_bytes_per_s(busy)]
    extras["copy_interference_per_job"] = bench_host.copy_interference_per_job(alone, busy, len(benches),
                                                                               extras.get("host_cores"))


def _phase_compute(budget: Budget, devices: list[torch.device], config: dict[str, Any], dtype: str,
                   bar: Progress, extras: dict[str, Any], model_dir: Path, link: float | None,
                   threads: int = 1) -> tuple[list, list, float | None]:
    """Compute and hop samples, the concurrent slowdown and (CPU devices) effective host cores into ``extras``."""
    bar.stage("compute")
    deadline = budget.phase(SHARES["compute"])
    hf = hf_config(config)
    tdtype = torch_dtype(dtype)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        tokens = bench_compute.CPU_PREFILL_TOKENS if devices[0].type == "cpu" else bench_compute.GPU_PREFILL_TOKENS
        benches = [bench_compute.UnitBench(hf, d, tdtype) for d in devices]
        computes = bench_compute.compute_samples(benches[0], tokens, deadline, bar.tick)
        slowdown = None
        if len(benches) > 1:  # every device at once: reported, not fitted (the executor rarely overlaps so)
            together = bench_compute.concurrent_compute_samples(benches, (1, 8, 32), Deadline(0.0), threads=threads)
            alone = {(s.unit, s.tokens, s.batch, s.context): s.seconds for s in computes}
            ratios = [s.seconds / alone[k] for s in together
                      if (k := (s.unit, s.tokens, s.batch, s.context)) in alone and s.unit == 0]
            slowdown = float(np.median(ratios)) if ratios else None
        if devices[0].type == "cpu":
            cores = bench_host.effective_cores(benches)  # see bench_host: what the simulator's cores stand for
            extras["effective_cores_threads_alone_together"] = [cores.effective_cores, cores.threads,
                                                                cores.alone_s, cores.together_s]
            extras["effective_cores_pairs"] = list(cores.pair_cores)
            extras["host_cores"] = bench_host.host_cores_param(cores)
            extras["host_cores_threads"] = cores.threads
            if len(benches) < bench_host.MANY_THREADS:  # with that many devices the measurement above is it
                many = bench_host.effective_cores(bench_host.more_benches(
                    benches, bench_host.MANY_THREADS, lambda d: bench_compute.UnitBench(hf, d, tdtype)))
                extras["effective_cores_many_pairs"] = list(many.pair_cores)
                extras["host_cores_many"] = bench_host.host_cores_param(many)
                extras["host_cores_many_threads"] = many.threads
            _copy_interference(benches, model_dir, devices, link, extras, threads)
        bar.stage("hops")
        deadline = budget.phase(SHARES["hops"])
        dst = devices[1] if len(devices) > 1 else devices[0]
        hops = bench_compute.hop_samples(devices[0], dst, hf.hidden_size, tdtype, 2048, deadline)
    finally:
        torch.set_num_threads(old_threads)
    bar.tick()
    return computes, hops, slowdown


def _phase_profiles(req: CalibrationRequest, budget: Budget, device: torch.device, dtype: str,
                    bar: Progress, threads: int = 1, n_devices: int = 1,
                    host_cores: float | None = None,
                    busy_traces: list | None = None) -> list[ComputeProfile]:
    """Compute profiles of ``req.preset`` and each ``req.profile_presets`` model on ``device`` (one thread
    count as a compute worker uses), sharing the phase's deadline (each model gets at least its minimum),
    each scaled by its in-run factors (:func:`calibration.bench_profile.in_run_factors`) and, on 2 or more
    CPU virtual devices, with its concurrency slowdown (:func:`calibration.bench_profile.concurrency_slowdown`),
    whose executor traces (busy pipelines) are appended to ``busy_traces`` when given."""
    bar.stage("compute profiles")
    deadline = budget.phase(SHARES["profiles"])
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    profiles = []
    names = list(dict.fromkeys((req.preset, *req.profile_presets)))
    try:
        for i, name in enumerate(names):
            short = budget.remaining_s() < MODEL_RUNS_S * (len(names) - i + 1)  # this, later models, loading runs
            config = preset_config(name)
            model = model_spec_from_hf_config(config, name=name, dtype=dtype)
            info = {"model": name, "device": str(device), "threads": threads}
            alone = bench_profile.measure_profile(hf_config(config), shape_key(model), device, torch_dtype(dtype),
                                                  deadline, 0.0, info, bar.tick)
            model_dir = _checkpoint(dataclasses.replace(req, preset=name), config, dtype)
            per_run: list[dict[str, float]] = []
            factors = bench_profile.in_run_factors(alone, model, model_dir, name, dtype, device.type, per_run=per_run,
                                                   **(SHORT_IN_RUN if short else {}))
            profile = bench_profile.scaled(alone, factors)
            info = {**profile.info, "in_run_factor_runs": per_run}
            slowdowns = {phase: 0.0 for phase in bench_profile.PHASES}
            n = min(n_devices, model.num_layers)
            if device.type == "cpu" and n >= 2:
                measured = bench_profile.concurrency_slowdown(profile, model, model_dir, name, dtype, n, host_cores,
                                                              runs=1 if short else bench_profile.CONCURRENCY_RUNS,
                                                              traces=busy_traces)
                slowdowns = {phase: value for phase, (value, _) in measured.items()}
                info["concurrency_slowdown_calls"] = {phase: [value, calls, n]
                                                      for phase, (value, calls) in measured.items()}
            profiles.append(dataclasses.replace(profile, concurrency_slowdown=slowdowns["decode"],
                                                prefill_concurrency_slowdown=slowdowns["prefill"], info=info))
    finally:
        torch.set_num_threads(old_threads)
    return profiles


def next_pass_budget_s(total_s: float, elapsed_s: float, pass_walls_s: list[float], passes: int) -> float | None:
    """Seconds for the next measurement pass, or None when it would not fit (``passes`` requested in all).

    The time left is shared by the passes still to run, so a pass that ran long shortens the later ones
    (each phase keeps its minimum). A pass after the first runs only if the time left is at least the
    shortest pass so far: the phases' minimum work (executor runs of every profiled model) does not shrink
    with the budget, and on a slow day three passes of four models took 365 s of the 300 s budget."""
    done = len(pass_walls_s)
    if done >= passes:
        return None
    left_s = max(0.0, total_s - elapsed_s)
    if done and left_s < min(pass_walls_s):
        return None
    return left_s / (passes - done)


def calibrate(req: CalibrationRequest, out: Path) -> CostParams:
    """Run every phase up to ``req.passes`` times within ``req.budget_s`` in all (:func:`next_pass_budget_s`:
    a pass that would not fit is skipped, with a warning), merge the passes (the median of each fitted value,
    :mod:`calibration.passes`), write ``out`` (YAML) and return the params.

    The written file loads with :func:`pipeboost.scenario.load_params_file` (checked before returning).
    """
    if req.passes < 1:
        raise CalibrationError(f"--passes {req.passes}: give 1 or more measurement passes")
    total = Budget(req.budget_s)
    passes: list[CostParams] = []
    walls_s: list[float] = []
    while (pass_budget_s := next_pass_budget_s(req.budget_s, total.elapsed_s(), walls_s, req.passes)) is not None:
        start_s = total.elapsed_s()
        passes.append(_measure(req, len(passes), pass_budget_s))
        walls_s.append(total.elapsed_s() - start_s)
    if len(passes) < req.passes:
        log.warning("calibrate: %d of %d passes fit in the %.0f s budget (passes took %s s); the file merges %d",
                    len(passes), req.passes, req.budget_s, ", ".join(f"{w:.0f}" for w in walls_s), len(passes))
    params = median_params(passes)
    wall_s = total.elapsed_s()
    params = params.with_(provenance={**params.provenance, "wall_s": wall_s, "budget_s": req.budget_s,
                                      "passes": len(passes), "passes_requested": req.passes,
                                      "pass_wall_s": walls_s})
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_params_file(params, out)
    load_params_file(out)
    log.info("wrote %s in %.1f s", out, wall_s)
    return params


def _measure(req: CalibrationRequest, pass_index: int, budget_s: float) -> CostParams:
    """One measurement pass within ``budget_s`` (:func:`next_pass_budget_s`): every phase, fitted."""
    devices, config, dtype, gpu = _resolve(req)
    model = model_spec_from_hf_config(config, name=req.preset, dtype=dtype)
    model_dir = _checkpoint(req, config, dtype)
    budget = Budget(budget_s)
    bar = Progress(total=24 + 14 * len(dict.fromkeys((req.preset, *req.profile_presets))), enabled=req.progress)
    try:
        unit_loads, extras = _phase_start_and_loads(req, budget, devices, model_dir, bar, config, pass_index == 0)
        sweep, concurrent = _phase_transfers(req, budget, devices, bar)
        computes, hops, slowdown = _phase_compute(budget, devices, config, dtype, bar, extras, model_dir,
                                                  req.link_gbps * 1e9 if req.link_gbps else None)
        bar.stage("runtime step overhead")
        budget.phase(SHARES["runtime"])
        runtime = _runtime_latencies(req, config, devices, dtype)
        extras.update({f"runtime_{k}": getattr(runtime, k) for k in ("dispatch_s", "handoff_s", "step_start_s")})
        extras["runtime_samples_s"] = runtime.samples
        runtime_s = runtime.per_unit_s
        n_stages = min(len(devices), int(config.get("num_hidden_layers", 1)))
        bar.stage("failure handling")
        extras.update(bench_failure.measure_failure(model_dir, req.preset, dtype, executor_device_spec(req.devices),
                                                    n_stages, link_gbps=req.link_gbps or 2.0))
        bar.tick()
        busy: list = []
        profiles = _phase_profiles(req, budget, devices[0], dtype, bar, n_devices=len(devices),
                                   host_cores=extras.get("host_cores"), busy_traces=busy)
        switch = bench_runtime.worker_switch_s(busy)  # the workers' own hand-off / token work, busy pipelines
        extras["worker_switch_s_samples"] = {k: list(v) for k, v in switch.items()}
        extras.update({f"runtime_worker_{k}": v for k, (v, _) in switch.items()})
    finally:
        bar.close()
    extras["runtime_overhead_per_unit_s"] = runtime_s
    if devices[0].type == "cpu" and req.link_gbps:  # compute slowed while weights are copied
        n = min(len(devices), int(config.get("num_hidden_layers", 1)))

        def copy_term(tokens: int, runs: int, max_runs: int | None = None,
                      min_calls: int = bench_profile.CONCURRENCY_MIN_CALLS) -> tuple[list, float, int]:
            """Loading runs with ``tokens``-token prompts, and the copy term and calls measured on them."""
            return bench_profile.copy_term_runs(model_dir, req.preset, dtype, req.link_gbps * 1e9, n, profiles[0],
                                                model, extras.get("host_cores"), devices[0].type, tokens, runs,
                                                max_runs, min_calls)

        # late in the pass two runs to start with, but runs are still added until the term has its calls
        # (session 13: a first pass with under 12 s left read it on 17 calls where 50 are asked for)
        base_runs = 2 if budget.remaining_s() < MODEL_RUNS_S else bench_profile.INTERFERENCE_RUNS
        traces, per_gbps, calls = copy_term(bench_profile.COPY_TERM_TOKENS, base_runs,
                                            bench_profile.COPY_TERM_MAX_RUNS, bench_profile.COPY_TERM_MIN_CALLS)
        extras["load_interference_per_gbps_calls"] = [per_gbps, calls]
        extras["compute_interference_per_gbps"] = per_gbps
        long_tokens = bench_profile.LONG_PROMPT_TOKENS  # the copy term of long prefills (their kernels lose less)
        _, per_gbps_long, calls_long = copy_term(long_tokens, bench_profile.LONG_INTERFERENCE_RUNS,
                                                 bench_profile.LONG_INTERFERENCE_MAX_RUNS)
        extras["load_interference_per_gbps_long_calls_tokens"] = [per_gbps_long, calls_long, long_tokens]
        extras["compute_interference_long_tokens"] = long_tokens
        if calls_long >= bench_profile.CONCURRENCY_MIN_CALLS:
            extras["compute_interference_per_gbps_long"] = per_gbps_long
        wake_s, waits = bench_profile.unit_wake_s(traces)
        extras["unit_wake_s_samples"] = [wake_s, waits]
        extras["runtime_unit_wake_s"] = wake_s
    m = Measurements(sweep, computes, hops, unit_loads, concurrent, extras, profiles)
    prov = build_provenance(req.devices, req.preset, dtype, {
        "link_cap_gbps": req.link_gbps, "budget_s": budget_s, "wall_s": budget.elapsed_s(),
        "compute_threads": 1, "concurrent_layer_compute_slowdown": slowdown,
        "profiled_models": list(dict.fromkeys((req.preset, *req.profile_presets)))})
    return fit_measurements(m, req.link_gbps, gpu, model, prov)
