"""Measurements of ``pipeboost calibrate`` assembled into :class:`~pipeboost.costs.CostParams`.

:func:`fit_measurements` takes the raw results of every phase (:class:`Measurements`) and returns the fitted
parameters: transfers and hops from :func:`calibration.fit.fit_cost_params` (whole-unit loads when unit sizes
differ enough, else the copy sweep), the link cap turned into an efficiency, a shared ``host_mem`` limit,
the runtime's latencies, CPU contention terms, failure handling and the compute profiles, with raw figures and
residuals in the provenance.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from calibration import bench_load
from calibration.fit import TransferSample, fit_compute, fit_cost_params, fit_transfers
from pipeboost.compute_profile import ComputeProfile
from pipeboost.costs import CostParams
from pipeboost.spec import HOST_MEM_LINK, GPUSpec

log = logging.getLogger(__name__)


@dataclass
class Measurements:
    """Raw results of all phases (plain values for the provenance)."""

    sweep: list
    computes: list
    hops: list
    unit_loads: bench_load.UnitLoadRun | None = None
    concurrent: list | None = None
    extras: dict[str, Any] | None = None
    profiles: list[ComputeProfile] | None = None


def _plain(value: Any) -> Any:
    """numpy scalars and tuples to plain YAML-safe values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


def unit_load_samples(run: bench_load.UnitLoadRun) -> list[TransferSample]:
    """LOAD records of real units (real sizes, all devices loading at once) as transfer samples per link.

    They are fitted when unit sizes differ by 2x or more (embedding vs layer); otherwise the copy sweep
    gives the bandwidth and the unit loads only the per-unit latency."""
    return [TransferSample(f"gpu{g}", n, sec) for g, _, n, sec in run.loads]


def _link_terms(params: CostParams, m: Measurements, link_gbps: float | None) -> dict[str, Any]:
    """Link bandwidth as an efficiency of the emulated cap (so other caps scale) or per-link overrides,
    and a shared ``host_mem`` limit when all devices at once are slower than alone. The copy sweep's own
    fit (time vs size, each device alone) goes to the provenance."""
    bws = dict(params.link_bandwidth_overrides_bytes_per_s)
    changes: dict[str, Any] = {}
    overrides = dict(bws)
    if link_gbps:
        changes["link_efficiency"] = min(1.0, float(np.median(list(bws.values()))) / (link_gbps * 1e9))
        overrides = {}
    shared = None
    if m.concurrent:
        aggregate = float(np.median([c.aggregate_bytes_per_s for c in m.concurrent]))
        shared = {"aggregate_bytes_per_s": aggregate, "sum_alone_bytes_per_s": sum(bws.values())}
        if aggregate < 0.9 * sum(bws.values()):
            overrides[HOST_MEM_LINK] = aggregate
    uncapped = (m.extras or {}).get("uncapped_load_aggregate_bytes_per_s")
    if uncapped:  # more devices or faster links than calibrated meet the loaders' own limit
        overrides[HOST_MEM_LINK] = min(overrides.get(HOST_MEM_LINK, uncapped), uncapped)
    changes["link_bandwidth_overrides_bytes_per_s"] = overrides
    if m.unit_loads is not None:
        changes["startup_s"] = m.unit_loads.startup_s
    sweep = {k: [v.intercept_s, v.bandwidth_bytes_per_s, v.residual_median, v.residual_p95]
             for k, v in fit_transfers(m.sweep).items()} if m.sweep else {}
    changes["provenance"] = {**params.provenance, "shared_upstream": shared, "link_bandwidth_bytes_per_s": bws,
                             "copy_sweep_fit_latency_s_bandwidth_residuals": sweep}
    return changes


def _bound_check(params: CostParams, m: Measurements, gpu: GPUSpec, model: Any) -> dict[str, Any] | None:
    """When an efficiency hits its bound of 1, refit against a 10x peak and report the adjusted peaks."""
    if max(params.compute_efficiency, params.memory_efficiency) < 0.99 or not m.computes:
        return None
    big = GPUSpec(gpu.name, gpu.memory_bytes, gpu.peak_flops * 10, gpu.memory_bandwidth_bytes_per_s * 10)
    fit = fit_compute(m.computes, big, model)
    note = {"efficiency_at_bound": True,
            "adjusted_peak_flops": big.peak_flops * fit["compute_efficiency"],
            "adjusted_memory_bandwidth_bytes_per_s": big.memory_bandwidth_bytes_per_s * fit["memory_efficiency"],
            "adjusted_fit_residuals_rel_median_p95": [fit["residual_median"], fit["residual_p95"]]}
    log.warning("an efficiency hit its bound of 1 against %s; adjusted peaks: %s", gpu.name, note)
    return note


def weighted_computes(samples: list, num_layers: int) -> list:
    """Decoder-layer samples repeated ``num_layers`` times: the fit weighs each unit kind by how often a
    forward pass runs it (the cost model has one launch overhead for all kinds, so the layers should win)."""
    return [s for s in samples for _ in range(num_layers if s.unit >= 0 and s.unit < num_layers else 1)]


def _optional(extras: dict[str, Any], key: str) -> float | None:
    """``extras[key]`` as a float, None when absent."""
    return None if extras.get(key) is None else float(extras[key])


def fit_measurements(m: Measurements, link_gbps: float | None, gpu: GPUSpec, model: Any,
                     provenance: dict[str, Any]) -> CostParams:
    """CostParams from all measurements, with raw figures and residuals in the provenance."""
    sizes = [n for _, _, n, _ in m.unit_loads.loads] if m.unit_loads else []
    from_units = bool(sizes) and max(sizes) >= 2 * min(sizes)
    transfers = unit_load_samples(m.unit_loads) if from_units else m.sweep
    params = fit_cost_params(transfers, weighted_computes(m.computes, model.num_layers), m.hops, gpu, model,
                             provenance=provenance)
    params = params.with_(**_link_terms(params, m, link_gbps))
    if not from_units and m.unit_loads:  # units of one size: bandwidth from the sweep, latency from units
        bws = dict(params.provenance["link_bandwidth_bytes_per_s"])
        params = params.with_(transfer_latency_s=bench_load.unit_latency_s(m.unit_loads, bws)[0])
    runtime_s = (m.extras or {}).get("runtime_overhead_per_unit_s")
    latencies = {k: float((m.extras or {}).get(f"runtime_{k}") or 0.0)
                 for k in ("dispatch_s", "handoff_s", "step_start_s", "unit_wake_s", "worker_after_hop_s",
                           "worker_after_token_s")}
    prov = dict(params.provenance)
    prov["fitted_unit_overhead_s"] = params.unit_overhead_s
    if runtime_s:  # the runtime's work between two units of a step
        params = params.with_(unit_overhead_s=params.unit_overhead_s + runtime_s)
    params = params.with_(**latencies)
    if m.profiles:  # measured compute of these shapes replaces the roofline for them
        params = params.with_(compute_profiles=tuple(dataclasses.replace(p, runtime_overhead_s=float(runtime_s or 0.0))
                                                     for p in m.profiles))
    extras = m.extras or {}
    if extras.get("host_cores") is not None:  # CPU virtual devices: compute jobs share the host's cores with
        # the copies' own CPU; the copy term caps a compute thread's speed (sim.interference)
        params = params.with_(host_cores=float(extras["host_cores"]),
                              host_cores_many=_optional(extras, "host_cores_many"),
                              host_cores_threads=int(extras.get("host_cores_threads", params.host_cores_threads)),
                              host_cores_many_threads=int(extras.get("host_cores_many_threads",
                                                                     params.host_cores_many_threads)),
                              copy_cpu_s_per_byte=float(extras.get("copy_cpu_s_per_byte", 0.0)),
                              compute_interference_per_gbps=float(extras.get("compute_interference_per_gbps", 0.0)),
                              compute_interference_per_gbps_long=_optional(extras,
                                                                           "compute_interference_per_gbps_long"),
                              compute_interference_long_tokens=int(extras.get("compute_interference_long_tokens",
                                                                              params.compute_interference_long_tokens)),
                              copy_interference_per_job=float(extras.get("copy_interference_per_job", 0.0)),
                              unit_load_cpu_s=float(extras.get("unit_load_cpu_s", 0.0)))
    if extras.get("failure_detection_s") is not None:
        params = params.with_(failure_detection_s=float(extras["failure_detection_s"]),
                              replan_overhead_s=float(extras.get("replan_overhead_s", 0.0)))
    prov["gpu_spec"] = {"name": gpu.name, "peak_flops": gpu.peak_flops,
                        "memory_bandwidth_bytes_per_s": gpu.memory_bandwidth_bytes_per_s}
    prov["bound"] = _bound_check(params, m, gpu, model)
    prov["raw"] = {"copy_sweep": [[s.link, s.nbytes, s.seconds] for s in m.sweep],
                   "computes": [[s.unit, s.tokens, s.batch, s.context, s.seconds] for s in m.computes],
                   "hops": [[s.nbytes, s.seconds] for s in m.hops],
                   "unit_loads_gpu_unit_bytes_s": list(m.unit_loads.loads) if m.unit_loads else [],
                   "concurrent": [[c.nbytes, list(c.seconds), c.wall_s] for c in (m.concurrent or [])]}
    prov.update(m.extras or {})
    return params.with_(provenance=_plain(prov))
