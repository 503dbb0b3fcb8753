"""Serving LoRA adapters in the executor: per-device adapter weights, the two modes, epoch switching.

* **Loading.** Each device copies an adapter's A/B tensors for the layers it holds, its own stage's layers
  first (part ``stage``), then its other layers (part ``rest``); one LOAD record per part with
  ``attrs = {"adapter", "part"}``. ``preload`` adapters load at time zero in a background thread; any
  other adapter loads on first use, in the compute thread that needs it.
* **Unmerged** (``mode="unmerged"``): a forward hook on each target ``nn.Linear`` adds
  ``(alpha/r) * (x A^T) B^T`` for the adapter of the request the current thread is computing (set by
  :func:`request_scope` around each stage task), so requests for different adapters interleave freely; in a
  decode batch (:func:`rows_scope`) each row gets its own request's adapter.
* **Merged** (``mode="merged"``): the instance serves one adapter at a time, folded into the target weights
  (``W <- W_base + (alpha/r) B A``). Each device folds a unit lazily, in its own compute thread, the first
  time it runs the unit after a switch, so no weight changes under a running forward. Unmerging restores
  ``W_base`` from the checkpoint (exact) or subtracts the product (``unmerge="subtract"``, not bit-exact).
* **Epochs** (merged): :class:`EpochGate` admits requests for the current adapter; once ``epoch_s`` has
  passed since the last switch and others wait, it admits nothing new, lets in-flight requests finish on the
  weights they started with, then switches to the adapter with the most waiting requests.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any, Callable, Iterator, Mapping

import torch
from torch import nn

from executor.checkpoint import CheckpointReader
from executor.devices import Device
from executor.lora import LoraAdapter
from executor.tracer import Tracer
from executor.units import LayerUnit, unit_tensor_names
from pipeboost.lora import module_paths
from pipeboost.trace import TraceKind

log = logging.getLogger(__name__)

_current = threading.local()


@contextlib.contextmanager
def request_scope(request: Any) -> Iterator[None]:
    """Mark ``request.adapter`` (``None``: base model) as the adapter of this thread's forward passes."""
    previous = getattr(_current, "adapter", None)
    _current.adapter = getattr(request, "adapter", None)
    try:
        yield
    finally:
        _current.adapter = previous


@contextlib.contextmanager
def rows_scope(requests: list[Any]) -> Iterator[None]:
    """Mark a decode batch: row ``i`` of this thread's forward passes uses ``requests[i].adapter``."""
    previous = getattr(_current, "adapter", None), getattr(_current, "rows", None)
    _current.adapter, _current.rows = None, [getattr(r, "adapter", None) for r in requests]
    try:
        yield
    finally:
        _current.adapter, _current.rows = previous


class AdapterManager:
    """Adapters of one run on its devices (see module docstring). ``None`` adapters mean the base model."""

    def __init__(self, adapters: Mapping[str, LoraAdapter], devices: Mapping[int, Device], tracer: Tracer,
                 reader: CheckpointReader, own_units: Mapping[int, tuple[int, ...]],
                 load_units: Mapping[int, tuple[int, ...]], mode: str = "unmerged", unmerge: str = "reload",
                 preload: tuple[str, ...] = ()) -> None:
        if mode not in ("unmerged", "merged") or unmerge not in ("reload", "subtract"):
            raise ValueError(f"mode {mode!r} / unmerge {unmerge!r}: use unmerged|merged and reload|subtract")
        self.adapters, self.devices, self.tracer, self.reader = dict(adapters), devices, tracer, reader
        self.own_units, self.load_units = own_units, load_units
        self.mode, self.unmerge, self.preload = mode, unmerge, preload
        self.current: str | None = None          # merged mode: the adapter the instance serves
        self._weights: dict[tuple[int, str, int], dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}
        self._ready: dict[tuple[int, str, int], threading.Event] = {}
        self._folded: dict[tuple[int, int], str | None] = {}   # (device, unit) -> adapter folded in
        self._hooked: set[int] = set()
        self._lock = threading.Lock()
        self.threads: list[threading.Thread] = []

    # ---- loading ----------------------------------------------------------------------------------
    def _parts(self, gpu: int) -> list[tuple[str, list[int]]]:
        own = [u for u in self.own_units.get(gpu, ()) if self._is_layer(u)]
        rest = [u for u in self.load_units.get(gpu, ()) if self._is_layer(u) and u not in own]
        return [("stage", own), ("rest", rest)]

    def _is_layer(self, unit: int) -> bool:
        return 0 <= unit < self.reader.config.num_hidden_layers

    def _claim(self, gpu: int, name: str, units: list[int]) -> list[int]:
        """Units of ``units`` this caller must load (others are loaded or being loaded by someone else)."""
        with self._lock:
            mine = [u for u in units if (gpu, name, u) not in self._ready]
            for u in mine:
                self._ready[(gpu, name, u)] = threading.Event()
            return mine

    def _copy(self, gpu: int, name: str, units: list[int], part: str) -> None:
        units = self._claim(gpu, name, units)
        if not units:
            return
        device, adapter = self.devices[gpu], self.adapters[name]
        t_start, nbytes = self.tracer.now_s(), 0
        for u in units:
            moved = {m: (a.to(device.torch_device, copy=True), b.to(device.torch_device, copy=True))
                     for (lay, m), (a, b) in adapter.weights.items() if lay == u}
            if device.is_cuda:
                torch.cuda.current_stream(device.torch_device).synchronize()
            nbytes += adapter.layer_bytes(u)
            self._weights[(gpu, name, u)] = moved
            self._ready[(gpu, name, u)].set()
        self.tracer.add(t_start, self.tracer.now_s(), TraceKind.LOAD, gpu=gpu, nbytes=nbytes,
                        attrs={"adapter": name, "part": part})

    def _preload(self, gpu: int) -> None:
        for part, units in self._parts(gpu):
            for name in self.preload:
                self._copy(gpu, name, units, part)

    def start(self) -> None:
        """Start one preload thread per device (own-stage parts of every preloaded adapter first)."""
        for gpu in self.devices:
            thread = threading.Thread(target=self._preload, args=(gpu,), name=f"adapters-{gpu}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def _weights_of(self, gpu: int, name: str, unit: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        key = (gpu, name, unit)
        if key not in self._ready:
            self._copy(gpu, name, [unit], "on_demand")
        self._ready[key].wait()
        return self._weights[key]

    # ---- compute hook (called by the worker before each unit) ---------------------------------------
    def before_unit(self, device: Device, unit: int, module: nn.Module) -> None:
        """Prepare ``module`` (resident on ``device``) for this thread's request: hooks or folded weights."""
        if not isinstance(module, LayerUnit):
            return
        if self.mode == "unmerged":
            rows = getattr(_current, "rows", None)
            names = set(rows) if rows is not None else {getattr(_current, "adapter", None)}
            if id(module) not in self._hooked:
                self._install_hooks(device.index, unit, module)
            for name in sorted(n for n in names if n is not None):
                self._weights_of(device.index, name, unit)
            return
        key = (device.index, unit)
        if self._folded.get(key) != self.current:
            self._fold(device.index, unit, module, self._folded.get(key), self.current)
            self._folded[key] = self.current

    def _install_hooks(self, gpu: int, unit: int, module: LayerUnit) -> None:
        paths = module_paths(module.family)
        names = {m for a in self.adapters.values() for m in a.target_modules}
        for short in sorted(names):
            linear = module.layer.get_submodule(paths[short])
            linear.register_forward_hook(self._hook(gpu, unit, short))
        self._hooked.add(id(module))

    def _hook(self, gpu: int, unit: int, short: str) -> Callable[..., torch.Tensor | None]:
        def hook(_mod: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor | None:
            if self.mode != "unmerged":
                return None
            rows = getattr(_current, "rows", None)
            if rows is not None:
                return self._rows_delta(gpu, unit, short, inputs[0], output, rows)
            name = getattr(_current, "adapter", None)
            return None if name is None else self._delta(gpu, unit, short, name, inputs[0], output)
        return hook

    def _delta(self, gpu: int, unit: int, short: str, name: str, x: torch.Tensor,
               output: torch.Tensor) -> torch.Tensor | None:
        """``output + (alpha/r) (x A^T) B^T`` of adapter ``name``; ``None`` if it does not target ``short``."""
        pair = self._weights_of(gpu, name, unit).get(short)
        if pair is None:
            return None
        a, b = pair
        return output + self.adapters[name].scale * nn.functional.linear(nn.functional.linear(x, a), b)

    def _rows_delta(self, gpu: int, unit: int, short: str, x: torch.Tensor, output: torch.Tensor,
                    rows: list[str | None]) -> torch.Tensor | None:
        """Each row of a decode batch plus its own adapter's delta (rows of the base model unchanged)."""
        names = sorted({n for n in rows if n is not None})
        if len(names) == 1 and all(n == names[0] for n in rows):
            return self._delta(gpu, unit, short, names[0], x, output)
        result = None
        for name in names:
            idx = torch.tensor([i for i, n in enumerate(rows) if n == name], device=x.device)
            delta = self._delta(gpu, unit, short, name, x[idx], output[idx])
            if delta is not None:
                result = output.clone() if result is None else result
                result[idx] = delta
        return result

    # ---- merged mode ------------------------------------------------------------------------------
    def _fold(self, gpu: int, unit: int, module: LayerUnit, old: str | None, new: str | None) -> None:
        """Replace adapter ``old`` by ``new`` in ``module``'s target weights (in place)."""
        paths = module_paths(module.family)
        ckpt = unit_tensor_names(self.reader.config, unit, module)
        shorts = {m for n in (old, new) if n is not None for m in self.adapters[n].target_modules}
        t_start = self.tracer.now_s()
        for short in sorted(shorts):
            weight = module.layer.get_submodule(paths[short]).weight
            if old is not None and short in self.adapters[old].target_modules:
                if self.unmerge == "reload":
                    base = self.reader.get(ckpt[f"layer.{paths[short]}.weight"])
                    weight.copy_(base.to(weight.device))
                else:
                    a, b = self._weights_of(gpu, old, unit)[short]
                    weight.sub_(self.adapters[old].scale * (b @ a))
            if new is not None and short in self.adapters[new].target_modules:
                a, b = self._weights_of(gpu, new, unit)[short]
                weight.add_(self.adapters[new].scale * (b @ a))
        self.tracer.add(t_start, self.tracer.now_s(), TraceKind.LOAD, gpu=gpu, layer=unit, nbytes=0,
                        attrs={"adapter": new, "from": old, "op": "merge"})
