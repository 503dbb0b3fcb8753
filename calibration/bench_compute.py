"""Per-unit compute and activation-hop microbenchmarks on the executor's unit modules.

Units are built exactly as the executor builds them (:func:`executor.units.build_unit` on the meta device,
then :func:`executor.units.materialise` from tensors in device memory; random weights, the model's dtype)
and run through the same forward contract as :meth:`executor.pipeline.Runtime.run_unit`, with a
:class:`executor.kvcache.RequestKVCache`. Compute runs with ``threads`` torch threads, as a compute worker
does (``threads_per_device``, default 1). A hop is the runtime's ``hidden.to(target, copy=True)``.
"""

from __future__ import annotations

import logging
from typing import Callable

import torch
from transformers import PretrainedConfig

from calibration.budget import Deadline, median_s, time_call
from calibration.fit import ComputeSample, HopSample
from executor.kvcache import RequestKVCache
from executor.units import build_unit, materialise
from pipeboost.spec import EMBED_UNIT

log = logging.getLogger(__name__)

CPU_PREFILL_TOKENS = (1, 8, 32, 128, 512, 2048)
GPU_PREFILL_TOKENS = (1, 4, 16, 64, 128, 256, 512, 1024, 2048)
DECODE_POINTS = ((1, 16), (1, 128), (1, 512), (2, 128), (4, 128), (1, 1024), (4, 512), (8, 256))


def make_unit(config: PretrainedConfig, unit: int, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """A unit module with seeded random weights in ``device`` memory (scale 0.02, as HF initialises)."""
    module = build_unit(config, unit)
    gen = torch.Generator().manual_seed(1000 + unit)
    tensors = {name: (torch.randn(t.shape, generator=gen) * 0.02).to(device=device, dtype=dtype)
               for name, t in module.state_dict().items()}
    return materialise(module, tensors, config, device)


def _sync(device: torch.device) -> Callable[[], None]:
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


class UnitBench:
    """The embedding, decoder layer 0 and head of one model on one device, timed per call.

    ``layer_copies > 1`` builds that many copies of the decoder layer (own weights each) and cycles
    through them, call after call, so a layer's weights are not in the CPU caches when it runs, as in a
    forward pass through many layers (a layer of a 125M model fits a 32 MiB L3 cache; twelve do not).
    """

    def __init__(self, config: PretrainedConfig, device: torch.device, dtype: torch.dtype,
                 layer_copies: int = 1) -> None:
        self.config, self.device, self.dtype = config, device, dtype
        self.head_unit = config.num_hidden_layers
        self.units = {u: make_unit(config, u, device, dtype) for u in (EMBED_UNIT, 0, self.head_unit)}
        self.layers = [self.units[0]] + [make_unit(config, 0, device, dtype) for _ in range(layer_copies - 1)]
        self._turn = 0
        self.sync = _sync(device)
        self.max_positions = int(getattr(config, "max_position_embeddings", 1 << 20))

    def layer(self) -> torch.nn.Module:
        """The next decoder-layer copy (round robin)."""
        self._turn = (self._turn + 1) % len(self.layers)
        return self.layers[self._turn]

    def _hidden(self, tokens: int, batch: int = 1) -> torch.Tensor:
        return torch.randn(batch, tokens, self.config.hidden_size, device=self.device).to(self.dtype)

    def _positions(self, start: int, tokens: int, batch: int = 1) -> torch.Tensor:
        return torch.arange(start, start + tokens, device=self.device).unsqueeze(0).expand(batch, -1)

    def prefill(self, unit: int, tokens: int, repeats: int) -> float:
        """Median seconds of ``unit`` on a ``tokens``-token prompt (batch 1, empty cache)."""
        positions = self._positions(0, tokens)
        if unit == EMBED_UNIT:
            ids = torch.randint(0, self.config.vocab_size, (1, tokens), device=self.device)
            fn = lambda: self.units[unit](ids, positions)  # noqa: E731
        elif unit == self.head_unit:
            hidden = self._hidden(tokens)
            fn = lambda: self.units[unit](hidden)  # noqa: E731
        else:
            hidden, cache = self._hidden(tokens), RequestKVCache()

            def fn() -> torch.Tensor:
                cache.reset_layer(unit)
                return self.layer()(hidden, positions, cache)
        return median_s(time_call(fn, repeats, warmup=1, sync=self.sync))

    def decode(self, batch: int, context: int, repeats: int) -> float:
        """Median seconds of one decode step of layer 0 for ``batch`` sequences with ``context`` cached."""
        layer, cache = self.units[0], RequestKVCache()
        layer(self._hidden(context, batch), self._positions(0, context, batch), cache)
        hidden, positions = self._hidden(1, batch), self._positions(context, 1, batch)
        keys, values = cache._layers[0]

        def fn() -> torch.Tensor:
            cache._layers[0] = (keys, values)  # same context every call
            return layer(hidden, positions, cache)
        return median_s(time_call(fn, repeats, warmup=1, sync=self.sync))


def _repeats(seconds_guess: float) -> int:
    return 3 if seconds_guess > 0.05 else 5


def compute_samples(bench: UnitBench, prefill_tokens: tuple[int, ...], deadline: Deadline,
                    tick: Callable[[], None] = lambda: None) -> list[ComputeSample]:
    """Prefill of embedding, layer and head vs tokens, then layer decode vs (batch, context), until ``deadline``."""
    samples: list[ComputeSample] = []
    last = 0.0
    limit = bench.max_positions
    with torch.inference_mode():
        for k, tokens in enumerate(t for t in prefill_tokens if t <= limit):
            if k >= 3 and deadline.passed():
                break
            for unit in (EMBED_UNIT, 0, bench.head_unit):
                last = bench.prefill(unit, tokens, _repeats(last))
                samples.append(ComputeSample(unit, tokens, 1, 0, last))
            tick()
        for k, (batch, context) in enumerate(p for p in DECODE_POINTS if p[1] < limit):
            if k >= 2 and deadline.passed():
                break
            samples.append(ComputeSample(0, 1, batch, context, bench.decode(batch, context, 5)))
            tick()
    return samples


def hop_samples(src: torch.device, dst: torch.device, hidden_size: int, dtype: torch.dtype,
                max_tokens: int, deadline: Deadline) -> list[HopSample]:
    """Median time of the runtime's activation copy ``hidden.to(dst, copy=True)`` vs bytes (1 token up)."""
    samples: list[HopSample] = []
    sync = _sync(dst)
    tokens = 1
    while tokens <= max_tokens and (len(samples) < 3 or not deadline.passed()):
        hidden = torch.randn(1, tokens, hidden_size, device=src).to(dtype)
        positions = torch.arange(tokens, device=src).unsqueeze(0)

        def fn() -> None:
            hidden.to(dst, copy=True)
            positions.to(dst)
        seconds = median_s(time_call(fn, 7, warmup=2, sync=sync))
        samples.append(HopSample(hidden.numel() * hidden.element_size(), seconds))
        tokens *= 4
    return samples


def concurrent_compute_samples(benches: list[UnitBench], prefill_tokens: tuple[int, ...], deadline: Deadline,
                               tick: Callable[[], None] = lambda: None, threads: int = 1) -> list[ComputeSample]:
    """:func:`compute_samples` on every device at once (one thread each, as the compute workers run);
    per point the median over devices. Captures cores and the GIL shared between virtual devices.

    Each thread sets ``torch.set_num_threads(threads)`` itself, as :class:`executor.worker.ComputeWorker`
    does: the intra-op thread count is per thread (OpenMP), so a thread that does not set it uses all cores.
    """
    import threading

    results: list[list[ComputeSample]] = [[] for _ in benches]

    def worker(i: int) -> None:
        torch.set_num_threads(threads)
        results[i] = compute_samples(benches[i], prefill_tokens, deadline, tick if i == 0 else lambda: None)

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(len(benches))]
    for th in workers:
        th.start()
    for th in workers:
        th.join()
    merged = []
    for points in zip(*results):
        secs = sorted(p.seconds for p in points)
        p = points[0]
        merged.append(ComputeSample(p.unit, p.tokens, p.batch, p.context, secs[len(secs) // 2]))
    return merged
