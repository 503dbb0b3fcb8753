"""Workload specs and request generation (pure numpy, shared by both engines).

Arrivals: ``poisson`` (rate), ``gamma`` (rate and coefficient of variation; CV > 1 is bursty),
``on_off`` (Poisson at ``rate_per_s`` during ``on_s`` windows separated by ``off_s`` idle gaps) and
``trace`` (arrival times, and optionally lengths and adapters, from a CSV file).
Lengths: ``constant``, ``uniform`` (inclusive integer bounds) and ``lognormal`` (median and sigma,
clipped to ``[1, max]``).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ARRIVAL_KINDS = ("poisson", "gamma", "on_off", "trace")
LENGTH_KINDS = ("constant", "uniform", "lognormal")


@dataclass(frozen=True)
class LengthDist:
    """A token-count distribution. ``value`` for constant; ``low``/``high`` for uniform;
    ``median``/``sigma``/``high`` for lognormal (``high`` clips)."""

    kind: str = "constant"
    value: int = 128
    low: int = 1
    high: int = 2048
    median: float = 128.0
    sigma: float = 0.5

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.kind == "constant":
            return np.full(n, self.value, dtype=np.int64)
        if self.kind == "uniform":
            return rng.integers(self.low, self.high + 1, size=n, dtype=np.int64)
        draws = rng.lognormal(np.log(self.median), self.sigma, size=n)
        return np.clip(np.rint(draws), 1, self.high).astype(np.int64)


@dataclass(frozen=True)
class ArrivalSpec:
    """How requests arrive. Rates in requests per second; ``trace_file`` is a CSV with a column
    ``arrival_s`` and optional ``prompt_tokens``, ``output_tokens``, ``adapter``."""

    kind: str = "poisson"
    rate_per_s: float = 1.0
    cv: float = 1.0
    on_s: float = 1.0
    off_s: float = 10.0
    trace_file: str | None = None


@dataclass(frozen=True)
class AdapterSpec:
    """A LoRA adapter on the base model: rank, alpha and the module names it targets."""

    name: str
    rank: int = 8
    alpha: float = 16.0
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")


@dataclass(frozen=True)
class WorkloadSpec:
    """Arrivals plus lengths. Generation stops at ``num_requests`` or ``duration_s``, whichever comes first
    (at least one of them is set). ``start_s`` offsets the first arrival window. ``adapters`` are chosen
    per request with Zipf(``adapter_zipf_s``) popularity when non-empty."""

    arrivals: ArrivalSpec = ArrivalSpec()
    prompt_tokens: LengthDist = LengthDist("constant", value=128)
    output_tokens: LengthDist = LengthDist("constant", value=16)
    num_requests: int | None = 16
    duration_s: float | None = None
    start_s: float = 0.0
    adapters: tuple[AdapterSpec, ...] = ()
    adapter_zipf_s: float = 1.0


@dataclass(frozen=True)
class Request:
    """One inference request: ``id`` is its index in arrival order."""

    id: int
    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    adapter: str | None = None


def _gaps(spec: ArrivalSpec, rng: np.random.Generator, n: int) -> np.ndarray:
    mean_gap = 1.0 / spec.rate_per_s
    if spec.kind == "gamma":
        shape = 1.0 / (spec.cv ** 2)
        return rng.gamma(shape, mean_gap / shape, size=n)
    return rng.exponential(mean_gap, size=n)


def _on_off_times(spec: ArrivalSpec, rng: np.random.Generator, n: int) -> np.ndarray:
    """Poisson arrivals in 'on' time, then mapped onto the wall clock with 'off' gaps inserted."""
    busy = np.cumsum(rng.exponential(1.0 / spec.rate_per_s, size=n))
    window = np.floor(busy / spec.on_s)
    return busy + window * spec.off_s


def read_trace_file(path: Path) -> list[dict[str, str]]:
    """Rows of an arrival trace CSV (header required, ``arrival_s`` column mandatory)."""
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _from_trace(workload: WorkloadSpec, rng: np.random.Generator, base_dir: Path | None) -> list[Request]:
    path = Path(workload.arrivals.trace_file or "")
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    rows = read_trace_file(path)
    n = len(rows) if workload.num_requests is None else min(len(rows), workload.num_requests)
    prompts = workload.prompt_tokens.sample(rng, n)
    outputs = workload.output_tokens.sample(rng, n)
    requests = []
    for i, row in enumerate(sorted(rows[:n], key=lambda r: float(r["arrival_s"]))):
        t = float(row["arrival_s"]) + workload.start_s
        if workload.duration_s is not None and t > workload.start_s + workload.duration_s:
            break
        requests.append(Request(i, t, int(row.get("prompt_tokens") or prompts[i]),
                                int(row.get("output_tokens") or outputs[i]), row.get("adapter") or None))
    return requests


def _adapter_choices(workload: WorkloadSpec, rng: np.random.Generator, n: int) -> list[str | None]:
    if not workload.adapters:
        return [None] * n
    ranks = np.arange(1, len(workload.adapters) + 1, dtype=float)
    weights = ranks ** (-workload.adapter_zipf_s)
    picks = rng.choice(len(workload.adapters), size=n, p=weights / weights.sum())
    return [workload.adapters[i].name for i in picks]


def _max_count(workload: WorkloadSpec) -> int:
    if workload.num_requests is not None:
        return workload.num_requests
    spec = workload.arrivals
    duty = spec.on_s / (spec.on_s + spec.off_s) if spec.kind == "on_off" else 1.0
    expected = spec.rate_per_s * duty * (workload.duration_s or 0.0)
    return int(expected + 10 * np.sqrt(expected + 1) + 10)


def generate_requests(workload: WorkloadSpec, rng: np.random.Generator,
                      base_dir: Path | None = None) -> list[Request]:
    """Requests in arrival order. ``rng`` should be the scenario's arrivals stream (see Scenario.rng)."""
    if workload.arrivals.kind == "trace":
        return _from_trace(workload, rng, base_dir)
    n = _max_count(workload)
    if workload.arrivals.kind == "on_off":
        times = _on_off_times(workload.arrivals, rng, n)
    else:
        times = np.cumsum(_gaps(workload.arrivals, rng, n))
    times = times - times[0] + workload.start_s if n else times
    if workload.duration_s is not None:
        times = times[times <= workload.start_s + workload.duration_s]
    n = len(times)
    prompts = workload.prompt_tokens.sample(rng, n)
    outputs = workload.output_tokens.sample(rng, n)
    adapters = _adapter_choices(workload, rng, n)
    return [Request(i, float(times[i]), int(prompts[i]), int(outputs[i]), adapters[i]) for i in range(n)]
