"""Fault specs: when a GPU fails.

A :class:`FaultSpec` fails GPU ``gpu`` on exactly one trigger:

* ``at_s``: at a simulated/wall time (seconds since time zero);
* ``loading_unit``: when the GPU starts loading that unit (-1 embedding, 0..L-1 layers, L head);
* ``prefill``: when the GPU starts its first prefill compute;
* ``decode_step``: when the GPU starts decode step ``n`` (1 = the step producing the second token).

:class:`RandomFailureSpec` adds seeded exponential failures with mean time between failures ``mtbf_s``
per GPU (drawn from the scenario's failures RNG stream).
"""

from __future__ import annotations

from dataclasses import dataclass

FAULT_TRIGGERS = ("at_s", "loading_unit", "prefill", "decode_step")


@dataclass(frozen=True)
class FaultSpec:
    """One injected GPU failure. Exactly one trigger field is set (``prefill`` counts when True)."""

    gpu: int
    at_s: float | None = None
    loading_unit: int | None = None
    prefill: bool = False
    decode_step: int | None = None

    @property
    def trigger(self) -> str:
        """Name of the trigger field that is set."""
        for name in FAULT_TRIGGERS:
            value = getattr(self, name)
            if value is not None and value is not False:
                return name
        raise ValueError("fault has no trigger")

    def describe(self) -> str:
        return f"GPU {self.gpu} {self.trigger}={getattr(self, self.trigger)}"


@dataclass(frozen=True)
class RandomFailureSpec:
    """Random GPU failures: exponential inter-failure times with mean ``mtbf_s`` per GPU."""

    mtbf_s: float
    max_failures: int = 1
