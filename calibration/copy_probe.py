"""The loaders' aggregate copy rate during a validation run against calibration's (``suite --speed-probe``).

On CPU virtual devices every loader copies through the same host memory, which calibration measures as the
loaders' own aggregate limit (all devices at once, no link cap: the ``host_mem`` link of
``CostParams.link_bandwidth_overrides_bytes_per_s``, :func:`calibration.bench_host.uncapped_load_aggregate_bytes_per_s`).
That limit moves with the VM's neighbours. Session 13 found a suite run (session 12's ``v-s12b``) whose last
18 rounds ran SmolLM2-135M's four loaders (2 GB/s links) at 2.7-5.6 GB/s together (median 3.8) before any
compute, where its first two rounds, another run's 20 rounds and standalone runs reached 5.8-7.5; the
two-device scenarios in the same rounds kept their 3.6-3.9 GB/s. Its four-device load times then read
17-26% late against the simulator, and re-simulated with a 4.5 GB/s ``host_mem`` limit its TTFTs fit to 1-6%. Compute speed probes (:mod:`calibration.speed_probe`)
do not see this: one compute thread alone read only 2.3% slow in those rounds.

So, as the speed probe repeats calibration's compute measurement, :class:`CopyProbe` repeats this one once
per round of executor runs, with the calibration's device count on the first suite model's checkpoint, and
:func:`with_copy_rate` puts the rounds' median in place of the params' ``host_mem`` limit for the suite's
re-simulation. Nothing is fitted to the suite. Without a ``host_mem`` limit calibrated on CPU virtual devices
(CUDA params, hand-written ones) there is nothing to probe (:func:`copy_probe_for` returns None).
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
from pathlib import Path

import torch

from calibration.bench_host import uncapped_load_aggregate_bytes_per_s
from calibration.speed_probe import probe_checkpoint
from pipeboost.costs import CostParams
from pipeboost.errors import PipeBoostError
from pipeboost.spec import HOST_MEM_LINK

log = logging.getLogger(__name__)

DEFAULT_DEVICES = 2
"""Devices probed when the params' provenance does not say how many calibration used."""


@dataclasses.dataclass
class CopyProbe:
    """Measures the loaders' uncapped aggregate rate on ``devices`` CPU virtual devices with ``preset`` at
    ``dtype`` (checkpoint made once, seed 0, under ``cache``) once per :meth:`run`."""

    preset: str
    dtype: str
    devices: int
    cache: Path
    rounds_bytes_per_s: list[float] = dataclasses.field(default_factory=list)

    def run(self) -> float:
        """One measurement (bytes/s), appended to :attr:`rounds_bytes_per_s`."""
        rate = uncapped_load_aggregate_bytes_per_s(probe_checkpoint(self.cache, self.preset, self.dtype),
                                                   [torch.device("cpu")] * self.devices)
        self.rounds_bytes_per_s.append(rate)
        log.info("copy probe: %d loaders at %.2f GB/s together", self.devices, rate / 1e9)
        return rate

    def median_bytes_per_s(self) -> float:
        """The rounds' median (one probe now if there is none)."""
        if not self.rounds_bytes_per_s:
            self.run()
        return float(statistics.median(self.rounds_bytes_per_s))


def _device_spec(params: CostParams) -> tuple[str, str]:
    """``(kind, rest)`` of the calibrated devices (``provenance.devices.spec``: ``cpu:2``, ``cuda:0,1``)."""
    spec = str((params.provenance.get("devices") or {}).get("spec", ""))
    kind, _, rest = spec.partition(":")
    return kind, rest


def calibrated_devices(params: CostParams) -> int:
    """How many CPU virtual devices calibration loaded at once (``provenance.devices.spec``, ``cpu:N``)."""
    kind, count = _device_spec(params)
    if kind == "cpu" and count.isdigit() and int(count) >= 1:
        return int(count)
    return DEFAULT_DEVICES


def copy_probe_for(params: CostParams, preset: str, dtype: str, cache: Path) -> CopyProbe | None:
    """A probe of ``preset`` for ``params``, or None where they have no ``host_mem`` limit to replace or were
    not calibrated on CPU virtual devices (on GPUs ``host_mem`` is the shared upstream path of the PCIe
    copies, which CPU loaders do not measure; hand-written params have no calibration to repeat)."""
    if HOST_MEM_LINK not in params.link_bandwidth_overrides_bytes_per_s:
        log.info("copy probe: the params have no %s limit; not probed", HOST_MEM_LINK)
        return None
    if _device_spec(params)[0] != "cpu":
        log.info("copy probe: the params were not calibrated on CPU virtual devices; not probed")
        return None
    return CopyProbe(preset, dtype, calibrated_devices(params), cache)


def with_copy_rate(params: CostParams, bytes_per_s: float) -> CostParams:
    """``params`` with their ``host_mem`` limit set to ``bytes_per_s``."""
    if bytes_per_s <= 0:
        raise PipeBoostError(f"copy probe: aggregate rate must be positive, got {bytes_per_s} bytes/s")
    overrides = dict(params.link_bandwidth_overrides_bytes_per_s)
    if HOST_MEM_LINK not in overrides:
        raise PipeBoostError(f"copy probe: the params have no {HOST_MEM_LINK} limit in "
                             "link_bandwidth_overrides_bytes_per_s to replace")
    overrides[HOST_MEM_LINK] = float(bytes_per_s)
    return params.with_(link_bandwidth_overrides_bytes_per_s=overrides)
