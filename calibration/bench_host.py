"""Host CPU shared by virtual devices: effective cores and the CPU cost of weight loading.

On CPU virtual devices every device's compute thread and loader thread run on the machine's cores (and
contend for the GIL), which :mod:`sim.hostcpu` models with ``CostParams.host_cores`` and
``copy_cpu_s_per_byte``. This module measures both:

* :func:`effective_cores`: ``n`` threads (one torch thread each, as compute workers run) each do the same
  fixed amount of decoder-layer work; effective cores = ``n x (time of one thread alone) / (wall time of n
  at once)``, i.e. throughput of n concurrent threads relative to one. Clamped to ``[1, n]`` for the
  params (a job alone runs at its alone speed by construction); the raw figure goes to the provenance.
  The work is compute-bound prefills (:data:`HOST_CORES_TOKENS`) and the benches cycle through layer
  copies whose weights exceed the CPU caches (:func:`calibration.bench_profile.layer_copies`), as a
  forward pass does: two threads re-running one cached 32-token layer each contend for the shared cache
  and the interpreter (OPT-125M: 1.80 effective cores of 2; SmolLM2-135M: 1.67), and that contention,
  which depends on the call, is the profiles' concurrency slowdown, measured on the executor per phase.
* :func:`loader_cpu_s_per_byte`: process CPU seconds spent while the executor's loaders cold-load the
  model (from time zero, after arenas and meta modules exist, to the last unit landing) divided by bytes
  loaded: the CPU a loader uses per byte (read from the page cache, copy, materialise, pacing).

* :func:`unit_load_cpu_s`: the loader's per-unit software work (reading, building, materialising a unit),
  which the executor overlaps with the emulated link time: seen only where units are small, so it is
  measured on a tiny model of the same family, one device, as the median of (unit load time - link time).

* :func:`loads_while_computing` and :func:`copy_interference_per_job`: the loaders' aggregate rate while
  every device computes, relative to alone: ``copy_interference_per_job`` of :mod:`sim.interference`.

On CUDA devices none of these applies (copy engines and SMs are not host cores): the caller skips them.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

import torch

from calibration.bench_compute import UnitBench
from calibration.bench_load import UnitLoadRun

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CoresSample:
    """``threads`` concurrent compute threads: ``alone_s`` for one thread's work alone, ``together_s``
    wall time for all of them (each doing the same work)."""

    threads: int
    alone_s: float
    together_s: float

    @property
    def effective_cores(self) -> float:
        """Throughput of ``threads`` concurrent threads relative to one alone (cores' worth)."""
        return self.threads * self.alone_s / self.together_s


def _layer_work(bench: UnitBench, tokens: int, calls: int) -> Callable[[], None]:
    """``calls`` prefill forwards of decoder layer 0 on a ``tokens``-token prompt."""
    def work() -> None:
        with torch.inference_mode():
            for _ in range(calls):
                bench.prefill(0, tokens, 1)
    return work


def _timed_threads(works: list[Callable[[], None]], threads: int = 1) -> float:
    """Wall seconds to run every work function on its own thread (``threads`` torch threads each)."""
    def run(fn: Callable[[], None]) -> None:
        torch.set_num_threads(threads)
        fn()
    workers = [threading.Thread(target=run, args=(fn,)) for fn in works]
    t0 = time.perf_counter()
    for th in workers:
        th.start()
    for th in workers:
        th.join()
    return time.perf_counter() - t0


HOST_CORES_TOKENS = 512
"""Prompt tokens of the prefills :func:`effective_cores` runs for ``host_cores``: compute-bound calls, so the
figure is the cores the threads share (2.0 of 2 on this VM, OPT-125M). Smaller calls also contend for the
interpreter and the caches (32 tokens: 1.77-1.92; one token: 1.56-1.76), which differs by model and phase
and is each profile's measured ``concurrency_slowdown`` / ``prefill_concurrency_slowdown``."""
HOST_CORES_CALLS = 2


def effective_cores(benches: list[UnitBench], tokens: int = HOST_CORES_TOKENS, calls: int = HOST_CORES_CALLS,
                    repeats: int = 3) -> CoresSample:
    """Measure :class:`CoresSample` with one thread per bench (device); medians of ``repeats``. ``tokens`` is
    capped at the model's context length."""
    tokens = min(tokens, *(b.max_positions for b in benches))
    works = [_layer_work(b, tokens, calls) for b in benches]
    _timed_threads(works[:1])  # warm-up
    alone, together = [], []
    for _ in range(repeats):
        alone.append(_timed_threads(works[:1]))
        together.append(_timed_threads(works))
    alone.sort()
    together.sort()
    sample = CoresSample(len(benches), alone[len(alone) // 2], together[len(together) // 2])
    log.info("effective cores: %d threads, %.3f s alone, %.3f s together -> %.2f", sample.threads,
             sample.alone_s, sample.together_s, sample.effective_cores)
    return sample


def host_cores_param(sample: CoresSample) -> float:
    """``CostParams.host_cores`` from a measurement: effective cores clamped to ``[1, threads]``."""
    return min(max(sample.effective_cores, 1.0), float(sample.threads))


def loader_cpu_s_per_byte(run: UnitLoadRun) -> float:
    """Process CPU seconds per byte while the loaders of :func:`measure_unit_loads` ran (time zero to the
    last unit landing; paced at the emulated link cap, so they sleep part of the time)."""
    nbytes = sum(n for _, _, n, _ in run.loads)
    value = run.cpu_s / nbytes if nbytes else 0.0
    log.info("loader CPU: %.3f s CPU over %.3f s wall for %d bytes -> %.3g s/byte", run.cpu_s, run.wall_s,
             nbytes, value)
    return value


def unit_load_cpu_s(run: UnitLoadRun, link_bytes_per_s: float | None) -> float:
    """Median per-unit load time beyond the link time (seconds) in a load of small units (``run``)."""
    extra = sorted(max(0.0, sec - (n / link_bytes_per_s if link_bytes_per_s else 0.0)) for _, _, n, sec in run.loads)
    value = extra[len(extra) // 2] if extra else 0.0
    log.info("per-unit loader work: %.3g s (median over %d small units)", value, len(extra))
    return value


def loads_while_computing(benches: list[UnitBench], load: Callable[[], UnitLoadRun], tokens: int = 32,
                          threads: int = 1) -> UnitLoadRun:
    """``load()`` (every device cold-loading, as :func:`calibration.bench_load.measure_unit_loads`) while one
    thread per bench runs decoder-layer prefills back to back (``threads`` torch threads each)."""
    stop = threading.Event()

    def spin(bench: UnitBench) -> None:
        torch.set_num_threads(threads)
        with torch.inference_mode():
            while not stop.is_set():
                bench.prefill(0, tokens, 1)
    workers = [threading.Thread(target=spin, args=(b,)) for b in benches]
    for th in workers:
        th.start()
    try:
        return load()
    finally:
        stop.set()
        for th in workers:
            th.join()


def load_rate_bytes_per_s(run: UnitLoadRun) -> float:
    """Aggregate bytes per second of a load run (time zero after start-up to the last unit landing)."""
    return sum(n for _, _, n, _ in run.loads) / max(run.wall_s - run.startup_s, 1e-9)


def copy_interference_per_job(alone: UnitLoadRun, computing: UnitLoadRun, n_computing: int) -> float:
    """``copy_interference_per_job`` of :mod:`sim.interference`: (alone rate / rate while ``n_computing``
    devices compute - 1) / ``n_computing``, at least 0."""
    ratio = load_rate_bytes_per_s(alone) / load_rate_bytes_per_s(computing)
    value = max(0.0, ratio - 1.0) / max(n_computing, 1)
    log.info("loads %.2fx slower while %d devices compute -> %.3f per computing device", ratio, n_computing, value)
    return value
