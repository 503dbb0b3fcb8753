"""Fit :class:`~pipeboost.costs.CostParams` to measurements with scipy (robust least squares).

Measurements are plain records (seconds, bytes, token counts), produced by the microbenchmarks on the
executor or, in tests, by the cost model itself plus noise. Three independent fits:

* transfers ``t = latency_s + nbytes / bandwidth`` per link (robust linear fit, ``soft_l1`` loss);
* unit compute ``t = overhead_s + max(flops / (peak * compute_eff), bytes / (mem_bw * memory_eff))``
  with the roofline of :func:`pipeboost.costs.unit_compute_cost` (bounded nonlinear fit);
* activation hops ``t = hop_latency_s + nbytes / hop_bandwidth``.

Each fit reports residuals (relative, median and p95) that go into the provenance of the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from scipy.optimize import least_squares

from pipeboost.costs import CostParams, unit_compute_cost
from pipeboost.spec import GPUSpec, ModelSpec


@dataclass(frozen=True)
class TransferSample:
    """One host-to-device copy: ``link`` names the GPU link (``gpu0``), ``seconds`` measured."""

    link: str
    nbytes: int
    seconds: float


@dataclass(frozen=True)
class ComputeSample:
    """One unit's compute: ``tokens`` new tokens per sequence, ``batch`` sequences, ``context`` cached."""

    unit: int
    tokens: int
    batch: int
    context: int
    seconds: float


@dataclass(frozen=True)
class HopSample:
    nbytes: int
    seconds: float


@dataclass(frozen=True)
class LinearFit:
    """``t = intercept_s + nbytes / bandwidth_bytes_per_s`` with relative residual statistics."""

    intercept_s: float
    bandwidth_bytes_per_s: float
    residual_median: float
    residual_p95: float


def _residual_stats(predicted: np.ndarray, measured: np.ndarray) -> tuple[float, float]:
    rel = np.abs(predicted - measured) / np.maximum(measured, 1e-12)
    return float(np.median(rel)), float(np.percentile(rel, 95))


def fit_linear_transfer(nbytes: Sequence[float], seconds: Sequence[float]) -> LinearFit:
    """Robust fit of latency + size / bandwidth; residuals are relative to the measured time.

    Uses relative residuals so that small (latency-bound) and large (bandwidth-bound) transfers weigh alike.
    """
    x = np.asarray(nbytes, dtype=float)
    y = np.asarray(seconds, dtype=float)
    if len(x) < 2 or np.ptp(x) == 0:
        raise ValueError("need transfers of at least two different sizes to fit latency and bandwidth")
    slope0 = max(float(np.polyfit(x, y, 1)[0]), float(y.max() / x.max()) * 1e-3, 1e-18)
    t0 = float(y.min())

    def residuals(p: np.ndarray) -> np.ndarray:  # parameters scaled to O(1) for the solver
        return (p[0] * t0 + x * p[1] * slope0 - y) / y

    result = least_squares(residuals, x0=[0.5, 1.0], bounds=([0.0, 1e-9], [np.inf, np.inf]),
                           loss="soft_l1", f_scale=0.05)
    intercept, slope = result.x[0] * t0, result.x[1] * slope0
    med, p95 = _residual_stats(intercept + x * slope, y)
    return LinearFit(float(intercept), float(1.0 / slope), med, p95)


def fit_transfers(samples: Sequence[TransferSample]) -> dict[str, LinearFit]:
    """One :class:`LinearFit` per link name."""
    links = sorted({s.link for s in samples})
    return {link: fit_linear_transfer([s.nbytes for s in samples if s.link == link],
                                      [s.seconds for s in samples if s.link == link]) for link in links}


def _compute_predictions(p: np.ndarray, gpu: GPUSpec, model: ModelSpec, samples: Sequence[ComputeSample]) -> np.ndarray:
    params = CostParams(compute_efficiency=float(p[0]), memory_efficiency=float(p[1]), unit_overhead_s=float(p[2]))
    return np.array([unit_compute_cost(params, gpu, model, s.unit, s.tokens, s.batch, s.context).total_s
                     for s in samples])


def fit_compute(samples: Sequence[ComputeSample], gpu: GPUSpec, model: ModelSpec,
                start: tuple[float, float, float] = (0.3, 0.5, 1e-4)) -> dict[str, float]:
    """Fit ``compute_efficiency``, ``memory_efficiency`` and ``unit_overhead_s`` (relative residuals).

    Efficiencies are bounded to (0, 1]; the GPU's peak figures stay as the datasheet gives them.
    """
    measured = np.array([s.seconds for s in samples])

    def residuals(p: np.ndarray) -> np.ndarray:
        return (_compute_predictions(p, gpu, model, samples) - measured) / measured

    best = None
    for x0 in (start, (0.05, 0.05, 1e-5), (0.9, 0.9, 1e-3)):
        result = least_squares(residuals, x0=list(x0), bounds=([1e-6, 1e-6, 0.0], [1.0, 1.0, 1.0]),
                               loss="soft_l1", f_scale=0.05, x_scale=[0.1, 0.1, 1e-4])
        if best is None or result.cost < best.cost:
            best = result
    med, p95 = _residual_stats(_compute_predictions(best.x, gpu, model, samples), measured)
    return {"compute_efficiency": float(best.x[0]), "memory_efficiency": float(best.x[1]),
            "unit_overhead_s": float(best.x[2]), "residual_median": med, "residual_p95": p95}


def fit_cost_params(transfers: Sequence[TransferSample], computes: Sequence[ComputeSample],
                    hops: Sequence[HopSample], gpu: GPUSpec, model: ModelSpec,
                    provenance: dict[str, Any] | None = None, base: CostParams | None = None) -> CostParams:
    """All fits combined into one :class:`CostParams` whose provenance records the residuals.

    Link bandwidths become ``link_bandwidth_overrides_bytes_per_s`` (by link name); the transfer latency is
    the median of the per-link intercepts. Parts without samples keep ``base``'s values.
    """
    base = base or CostParams()
    changes: dict[str, Any] = {}
    residuals: dict[str, Any] = {}
    if transfers:
        links = fit_transfers(transfers)
        changes["link_bandwidth_overrides_bytes_per_s"] = {k: v.bandwidth_bytes_per_s for k, v in links.items()}
        changes["transfer_latency_s"] = float(np.median([v.intercept_s for v in links.values()]))
        residuals["transfer"] = {k: [v.residual_median, v.residual_p95] for k, v in links.items()}
    if computes:
        fit = fit_compute(computes, gpu, model)
        changes.update({k: fit[k] for k in ("compute_efficiency", "memory_efficiency", "unit_overhead_s")})
        residuals["compute"] = [fit["residual_median"], fit["residual_p95"]]
    if hops:
        hop = fit_linear_transfer([h.nbytes for h in hops], [h.seconds for h in hops])
        changes["hop_latency_s"] = hop.intercept_s
        changes["hop_bandwidth_bytes_per_s"] = hop.bandwidth_bytes_per_s
        residuals["hop"] = [hop.residual_median, hop.residual_p95]
    prov = dict(provenance or {})
    prov["residuals_rel_median_p95"] = residuals
    prov.setdefault("source", "calibration.fit")
    return base.with_(provenance=prov, **changes)
