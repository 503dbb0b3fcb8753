"""The executor's entry point: carry out a :class:`~pipeboost.plan.Plan` on real devices, return the trace.

:func:`run_executor` validates the plan and the checkpoint (nothing is loaded from a bad checkpoint),
preallocates one arena per device, then starts engine time zero: every device's loader begins its load
order, compute workers wait for requests, and the calling thread releases requests at their arrival times
and fires time-triggered faults. It returns when every request has all its tokens (or ended with an
explicit error), with the trace and the generated token ids.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Protocol, Sequence

import torch

from executor.checkpoint import CheckpointReader
from executor.devices import Arena, Device, parse_devices
from executor.faults import ExecutorFault, FaultInjector
from executor.hf import torch_dtype
from executor.loader import Loader
from executor.pipeline import RequestState, Runtime
from executor.recovery import RecoveryPolicy, Supervisor, default_recovery_policy
from executor.tracer import Tracer
from executor.units import build_unit, unit_tensor_names
from pipeboost.errors import CheckpointError, PlanError
from pipeboost.model_config import model_spec_from_hf_config
from pipeboost.plan import Plan, validate_plan
from pipeboost.trace import TraceKind, TraceRecord

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 600.0


class RequestLike(Protocol):
    """What the engine reads from a request (``pipeboost.workload`` requests have these attributes)."""

    id: int
    arrival_s: float
    prompt_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class ExecutorResult:
    """The trace (times in seconds since engine time zero) and generated token ids per request."""

    trace: list[TraceRecord]
    tokens: dict[int, list[int]]
    prompts: dict[int, list[int]]


def prompt_ids(seed: int, request_id: int, length: int, vocab_size: int) -> list[int]:
    """Deterministic prompt token ids of a request (a ``torch.Generator`` seeded from seed and id)."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + request_id)
    return torch.randint(0, vocab_size, (length,), generator=gen).tolist()


def checkpoint_dtype(reader: CheckpointReader) -> torch.dtype:
    """The dtype the checkpoint's config declares (``dtype`` / ``torch_dtype``), float32 if none."""
    name = reader.config_dict.get("dtype") or reader.config_dict.get("torch_dtype") or "float32"
    return torch_dtype(name)


def validate_checkpoint(reader: CheckpointReader, units: Iterable[int], dtype: torch.dtype) -> dict[int, int]:
    """Check every tensor of ``units`` (present, ``dtype``, shape, not truncated); return bytes per unit.

    Raises :class:`CheckpointError` naming file and tensor.
    """
    unit_bytes: dict[int, int] = {}
    for unit in units:
        module = build_unit(reader.config, unit)
        expected = module.state_dict()
        total = 0
        for local, name in unit_tensor_names(reader.config, unit, module).items():
            info = reader.check(name, dtype, tuple(expected[local].shape))
            total += info.nbytes
        unit_bytes[unit] = total
    return unit_bytes


def _make_devices(plan: Plan, spec: str, unit_bytes: dict[int, int]) -> dict[int, Device]:
    torch_devices = parse_devices(spec)
    devices: dict[int, Device] = {}
    for gpu in plan.gpus:
        if gpu >= len(torch_devices):
            raise PlanError(f"plan uses GPU {gpu} but devices {spec!r} has only {len(torch_devices)}")
        units = plan.load.units_of(gpu, plan.partition)
        capacity = sum(unit_bytes[u] for u in units) + 256 * (len(units) + 8)
        devices[gpu] = Device(gpu, torch_devices[gpu], Arena(capacity, torch_devices[gpu], gpu))
    return devices


class _Engine:
    """Wires devices, loaders, workers, faults and the supervisor for one run."""

    def __init__(self, plan: Plan, reader: CheckpointReader, devices: dict[int, Device],
                 faults: list[ExecutorFault], bandwidth_bytes_per_s: float | None, policy: RecoveryPolicy,
                 execute_while_load: bool, threads_per_device: int, max_batch_size: int) -> None:
        self.tracer = Tracer()
        self.runtime = Runtime(plan, reader.config, devices, self.tracer, execute_while_load=execute_while_load,
                               threads_per_device=threads_per_device, max_batch_size=max_batch_size)
        self.injector = FaultInjector(faults, self.fail)
        self.runtime.faults = self.injector
        stop = self.runtime.stop
        self.loaders = {g: Loader(d, reader, reader.config, plan.load.units_of(g, plan.partition), self.tracer,
                                  stop, bandwidth_bytes_per_s, self.injector.before_unit, self._after_unit)
                        for g, d in devices.items()}
        self.supervisor = Supervisor(self.runtime, self.loaders, policy)
        self.gate: Any = None  # executor.lora_epochs.EpochGate in merged adapter mode
        self.all_units = set(range(-1, plan.partition.num_layers + 1))
        for loader in self.loaders.values():
            loader.on_error = self._loader_error

    def _loader_error(self, exc: BaseException) -> None:
        """A checkpoint read failed mid-run: end the run (the caller re-raises the error)."""
        with self.runtime.lock:
            self.runtime.unrecoverable = str(exc)
        self.runtime.all_done.set()

    def fail(self, gpu: int, cause: str) -> None:
        """Mark ``gpu`` failed (threads stop, memory dropped), record FAILURE and tell the supervisor."""
        device = self.runtime.devices.get(gpu)
        if device is None or not device.mark_failed(cause):
            return
        t = self.tracer.now_s()
        self.tracer.add(t, t, TraceKind.FAILURE, gpu=gpu, attrs={"cause": cause})
        self.supervisor.report(gpu, t)

    def _after_unit(self, gpu: int, unit: int) -> None:
        if self.runtime.plan.mode != "pipeboost":
            return
        if self.all_units <= self.runtime.devices[gpu].resident_units():
            self.runtime.add_replica(gpu)

    def run(self, requests: Sequence[RequestState], arrivals_s: Sequence[float], timeout_s: float) -> None:
        rt = self.runtime
        rt.expected_requests = len(requests)
        if not requests:
            rt.all_done.set()
        rt.warm_up()  # compute threads started and warmed up: their first torch calls are not on the clock
        self.tracer.start_clock()  # time zero: arenas, meta modules and threads' objects are ready
        self.supervisor.start()
        for loader in self.loaders.values():
            loader.start()
        if rt.lora is not None:
            rt.lora.start()
        events = sorted([(t, 1, i) for i, t in enumerate(arrivals_s)] +
                        [(t, 0, i) for t, i in self.injector.timed()])
        for t_s, kind, index in events:
            delay = t_s - self.tracer.now_s()
            if delay > 0:
                time.sleep(delay)
            if kind == 0:
                self.injector.fire_timed(index)
            else:
                req = requests[index]
                # the request arrived at its scheduled time: a late wake-up of this thread (a loaded machine)
                # is the runtime's delay, inside the request's TTFT, not a later arrival
                arrival_s = min(t_s, self.tracer.now_s())
                self.tracer.add(arrival_s, arrival_s, TraceKind.ARRIVAL, request=req.id)
                (self.gate.submit if self.gate is not None else rt.submit)(req)
        if not rt.all_done.wait(timeout_s):
            raise TimeoutError(f"executor run did not finish within {timeout_s} s")

    def shutdown(self) -> None:
        self.runtime.shutdown()
        for thread in [*self.loaders.values(), self.supervisor]:
            if thread.is_alive():
                thread.join(timeout=5)


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for a run (objects that exist now frozen first), back on after.

    A full collection walks every object of the process (torch and transformers bring about a million)
    and stops every thread that needs the interpreter for tens of milliseconds: measured as 15-30 ms
    stalls of all compute workers at once in executor traces. Reference counting still frees everything
    that is not in a cycle; cycles made during a run are collected when it ends.
    """
    was_enabled = gc.isenabled()
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.unfreeze()
        if was_enabled:
            gc.enable()


def host_pool_by_default(device_type: str) -> bool:
    """Whether loads onto devices of ``device_type`` (``cpu``, ``cuda``) come from a host pool unless told
    otherwise: on CPU virtual devices only (:func:`run_executor`'s ``host_pool`` says why)."""
    return device_type == "cpu"


def run_executor(plan: Plan, model_dir: Path, requests: Sequence[RequestLike], faults: Sequence[Any] = (), *,
                 devices: str = "cpu:2", link_bandwidth_bytes_per_s: float | None = None,
                 recovery_policy: RecoveryPolicy | None = None, seed: int = 0,
                 execute_while_load: bool = True, threads_per_device: int = 1, host_pool: bool | None = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S, adapters: Mapping[str, Path] | None = None,
                 adapter_mode: str = "unmerged", adapter_epoch_s: float = 0.5,
                 adapter_preload: Sequence[str] | None = None, max_batch_size: int = 8) -> ExecutorResult:
    """Run ``plan`` on ``devices`` with the checkpoint in ``model_dir`` and serve ``requests`` greedily.

    ``requests``: objects with ``id``, ``arrival_s`` (seconds since time zero), ``prompt_tokens`` and
    ``output_tokens``; prompts come from :func:`prompt_ids` (``seed`` and id). ``faults``: objects shaped like
    :class:`~executor.faults.ExecutorFault`. ``link_bandwidth_bytes_per_s`` caps each device's load copy
    (``None``: as fast as memory copies). ``recovery_policy`` defaults to :func:`default_recovery_policy`.
    ``execute_while_load=False`` makes each stage wait until all its units are resident. ``host_pool``: copy
    the checkpoint into a host pool (pinned on CUDA) before time zero and load from it instead of the
    page-cache mapping (ServerlessLLM-style); ``None`` (the default): on CPU virtual devices only. There the
    page-cache mapping made loads uneven: the first copy of a page in a run page-faults (the loader's CPU per
    byte 1.5-2x a copy of mapped memory) and pages the VM reclaimed meanwhile are read back from disk (single
    14 MB units stalled for up to 111 ms in suite runs); the pool is ordinary memory, mapped before time zero:
    the host memory that weights come from (``serving.source: host``).
    ``adapters``: LoRA adapter folders by name; a request's ``adapter`` attribute picks one (``None``: base).
    ``adapter_mode`` ``unmerged`` or ``merged`` (epochs of ``adapter_epoch_s``), ``adapter_preload`` the
    names loaded at time zero (default: all); see :mod:`executor.lora_runtime`.
    ``max_batch_size``: decode steps of at most this many requests run as one forward pass on a device that
    holds a request's whole route (continuous batching, :mod:`executor.batching`); 1 runs each alone.
    Raises PlanError / CheckpointError before time zero, TimeoutError after ``timeout_s``.
    """
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
    reader = CheckpointReader(Path(model_dir))
    dtype = checkpoint_dtype(reader)
    model = model_spec_from_hf_config(reader.config_dict, dtype=str(dtype).replace("torch.", ""))
    validate_plan(plan, model)
    if plan.mode == "tensor_parallel":
        raise PlanError("the executor does not run tensor_parallel plans; use pipeboost, pipeline_only "
                        "or load_then_run")
    unit_bytes = validate_checkpoint(reader, model.units(), dtype)
    if host_pool or (host_pool is None and host_pool_by_default(devices.split(":", 1)[0])):
        reader.fill_host_pool(pin=devices.startswith("cuda"))
    fault_list = [ExecutorFault.from_obj(f) for f in faults]
    devs = _make_devices(plan, devices, unit_bytes)
    states = [RequestState(int(r.id), prompt_ids(seed, int(r.id), int(r.prompt_tokens), model.vocab_size),
                           int(r.output_tokens), adapter=getattr(r, "adapter", None)) for r in requests]
    engine = _Engine(plan, reader, devs, fault_list, link_bandwidth_bytes_per_s,
                     recovery_policy or default_recovery_policy(), execute_while_load, threads_per_device,
                     max_batch_size)
    if adapters or any(s.adapter is not None for s in states):
        from executor.lora_epochs import load_adapters
        engine.gate = load_adapters(engine.runtime, reader, plan, model, adapters or {}, states, engine.tracer,
                                    adapter_mode, adapter_epoch_s, adapter_preload, dtype)
    try:
        with collector_paused():
            engine.run(states, [float(r.arrival_s) for r in requests], timeout_s)
    finally:
        engine.shutdown()
    for loader in engine.loaders.values():
        if isinstance(loader.error, CheckpointError):
            raise loader.error
    return ExecutorResult(engine.tracer.records(), {s.id: list(s.tokens) for s in states},
                          {s.id: list(s.prompt) for s in states})
