"""Fault bookkeeping: which injected or random failure fires at which trigger.

Triggers (see :mod:`pipeboost.faults`): ``at_s`` fires at a simulated time; ``loading_unit`` when the GPU
starts copying that unit; ``prefill`` when the GPU starts its first prefill compute; ``decode_step n``
when the GPU starts its ``n``-th decode iteration (a replica step or a pipeline stage step; for a single
request this is the step producing token ``n + 1``). Each fault fires at most once.

Random failures draw one exponential time to failure per GPU (mean ``mtbf_s``) from the scenario's
``failures`` stream and keep the ``max_failures`` earliest.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from pipeboost.faults import FaultSpec, RandomFailureSpec


class FaultBook:
    """Pending faults indexed by trigger; ``on_*`` methods consume a fault when it fires."""

    def __init__(self, faults: Iterable[FaultSpec], random_spec: RandomFailureSpec | None,
                 rng: np.random.Generator, num_gpus: int) -> None:
        self._loading: set[tuple[int, int]] = set()
        self._prefill: set[int] = set()
        self._decode: set[tuple[int, int]] = set()
        self.timed: list[tuple[float, int, str]] = []
        for f in faults:
            trigger = f.trigger
            if trigger == "at_s":
                self.timed.append((float(f.at_s), f.gpu, "at_s"))
            elif trigger == "loading_unit":
                self._loading.add((f.gpu, int(f.loading_unit)))
            elif trigger == "prefill":
                self._prefill.add(f.gpu)
            else:
                self._decode.add((f.gpu, int(f.decode_step)))
        if random_spec is not None and num_gpus > 0:
            draws = rng.exponential(random_spec.mtbf_s, size=num_gpus)
            for g in np.argsort(draws, kind="stable")[:random_spec.max_failures]:
                self.timed.append((float(draws[g]), int(g), "random"))
        self.timed.sort()

    def on_loading(self, gpu: int, unit: int) -> bool:
        """True (once) when ``gpu`` must fail as it starts loading ``unit``."""
        if (gpu, unit) in self._loading:
            self._loading.discard((gpu, unit))
            return True
        return False

    def on_prefill(self, gpu: int) -> bool:
        """True (once) when ``gpu`` must fail as it starts its first prefill."""
        if gpu in self._prefill:
            self._prefill.discard(gpu)
            return True
        return False

    def on_decode(self, gpu: int, step: int) -> bool:
        """True (once) when ``gpu`` must fail as it starts decode iteration ``step`` (1-based)."""
        if (gpu, step) in self._decode:
            self._decode.discard((gpu, step))
            return True
        return False
