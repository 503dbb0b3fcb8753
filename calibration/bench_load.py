"""Whole-unit loads and start-up overhead with the executor's :class:`executor.loader.Loader`.

:func:`measure_unit_loads` reproduces the engine's start: one :class:`~executor.loader.Loader` per device
(which builds every unit's meta module before time zero), then engine time zero, then all loaders start. The first LOAD's start is the fixed start-up overhead the simulator charges as
``startup_s``; every LOAD record (real unit sizes, all devices loading concurrently) gives the per-unit
latency on top of the fitted bandwidth. :func:`arena_first_touch` and :func:`process_start_s` measure the
costs the executor pays before time zero (reported in the provenance, not simulated).
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from executor.checkpoint import CheckpointReader
from executor.devices import ALIGN_BYTES, Arena, Device
from executor.engine import host_pool_by_default
from executor.loader import Loader
from executor.tracer import Tracer
from pipeboost.trace import TraceKind

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UnitLoadRun:
    """LOAD records of one concurrent cold load: ``(gpu, unit, nbytes, seconds)`` and the start-up delay;
    ``cpu_s`` / ``wall_s``: process CPU seconds and wall seconds from time zero to the last unit landing;
    ``t0_perf_s``: time zero as a ``time.perf_counter`` reading (0: unknown)."""

    loads: tuple[tuple[int, int, int, float], ...]
    startup_s: float
    cpu_s: float = 0.0
    wall_s: float = 0.0
    t0_perf_s: float = 0.0


def _unit_bytes(reader: CheckpointReader, units: list[int]) -> int:
    from executor.units import build_unit, unit_tensor_names

    total = 0
    for unit in units:
        module = build_unit(reader.config, unit)
        names = unit_tensor_names(reader.config, unit, module)
        total += sum(reader.get(n).numel() * reader.get(n).element_size() + ALIGN_BYTES for n in names.values())
    return total


def measure_unit_loads(model_dir: Path, devices: list[torch.device], link_bytes_per_s: float | None,
                       timeout_s: float = 120.0) -> UnitLoadRun:
    """Cold-load every unit onto every device at once, as the engine does (from a host pool on CPU virtual
    devices, :func:`executor.engine.run_executor`); return the LOAD records."""
    reader = CheckpointReader(model_dir)
    if all(host_pool_by_default(d.type) for d in devices):
        reader.fill_host_pool()
    units = list(range(-1, reader.config.num_hidden_layers + 1))
    capacity = _unit_bytes(reader, units) + 8 * ALIGN_BYTES
    devs = [Device(i, d, Arena(capacity, d, i)) for i, d in enumerate(devices)]
    tracer, stop = Tracer(), threading.Event()
    loaders = [Loader(dev, reader, reader.config, tuple(units), tracer, stop, link_bytes_per_s) for dev in devs]
    tracer.t0 = time.perf_counter()  # the engine builds loaders (and their meta modules) before time zero
    cpu0 = time.process_time()
    for loader in loaders:
        loader.start()
    deadline = time.perf_counter() + timeout_s
    try:
        for dev in devs:
            for unit in units:
                if not dev.ready_event(unit).wait(max(0.0, deadline - time.perf_counter())):
                    raise TimeoutError(f"unit {unit} did not load on device {dev.index} in {timeout_s} s")
        cpu_s, wall_s = time.process_time() - cpu0, tracer.now_s()
    finally:
        stop.set()
        for loader in loaders:
            loader.join(timeout=5)
    loads = [r for r in tracer.records() if r.kind is TraceKind.LOAD]
    records = tuple((int(r.gpu), int(r.layer), int(r.nbytes or 0), r.duration_s) for r in loads)
    return UnitLoadRun(records, min(r.t_start_s for r in loads), cpu_s, wall_s, tracer.t0)


def unit_latency_s(run: UnitLoadRun, bandwidth_bytes_per_s: dict[str, float]) -> tuple[float, list[float]]:
    """Median per-unit overhead ``duration - nbytes / bandwidth`` (clipped at 0) and all residual values."""
    extra = [max(0.0, s - n / bandwidth_bytes_per_s.get(f"gpu{g}", min(bandwidth_bytes_per_s.values())))
             for g, _, n, s in run.loads]
    return float(np.median(extra)), extra


def arena_first_touch(device: torch.device, nbytes: int) -> float:
    """Seconds to allocate and touch an arena of ``nbytes`` (paid before engine time zero)."""
    t = time.perf_counter()
    arena = Arena(nbytes, device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t
    arena.release()
    return seconds


def process_start_s(timeout_s: float = 60.0) -> float | None:
    """Seconds for a fresh Python process to import torch and transformers' model classes (cold start)."""
    code = "import torch, transformers.models.opt.modeling_opt, transformers.models.llama.modeling_llama"
    t = time.perf_counter()
    try:
        subprocess.run([sys.executable, "-c", code], check=True, timeout=timeout_s, capture_output=True)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("process start measurement failed: %s", exc)
        return None
    return time.perf_counter() - t
