"""Host-to-device copy microbenchmarks on the executor's own copy path.

The source is a page-cached, memory-mapped safetensors tensor (what :class:`executor.checkpoint.CheckpointReader`
returns); the destination is a view into a preallocated :class:`executor.devices.Arena`. A copy goes through
``executor.loader``'s CPU chunked copy (paced by :class:`executor.loader.LinkPacer` when a link cap is given)
or its CUDA staging path, exactly as a unit load does.

* :func:`sweep_transfers`: time vs size (4 KiB upwards) per device alone, as :class:`TransferSample`;
* :func:`concurrent_transfers`: all devices copying the same size at once (exposes a shared upstream:
  on CPU virtual devices the host memory bus; on GPUs a PCIe switch or root complex).
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from calibration.budget import Deadline, median_s
from calibration.fit import TransferSample
from executor.devices import Arena
from executor.loader import CudaStaging, LinkPacer, _copy_cpu

log = logging.getLogger(__name__)

MIN_BYTES = 4 << 10


def sweep_sizes(max_bytes: int) -> list[int]:
    """4 KiB, 16 KiB, ... (x4) up to ``max_bytes``."""
    sizes, n = [], MIN_BYTES
    while n <= max_bytes:
        sizes.append(n)
        n *= 4
    return sizes


class CopyRig:
    """A memory-mapped source blob and one arena per device, with the executor's copy function."""

    def __init__(self, devices: list[torch.device], max_bytes: int, link_bytes_per_s: float | None) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="pipeboost-cal-")
        path = Path(self._tmp.name) / "blob.safetensors"
        save_file({"blob": torch.randint(0, 255, (max_bytes,), dtype=torch.uint8)}, str(path))
        self._file = safe_open(str(path), framework="pt")
        self.src = self._file.get_tensor("blob")
        self.src.sum()  # fault the page-cache mapping in once (a warm page cache, as in the executor)
        self.devices = devices
        self.arenas = [Arena(max_bytes, d, i) for i, d in enumerate(devices)]
        self.staging = [CudaStaging(d) if d.type == "cuda" else None for d in devices]
        self.link_bytes_per_s = link_bytes_per_s
        self._failed = threading.Event()

    def copy(self, index: int, nbytes: int) -> float:
        """Seconds to copy ``nbytes`` to device ``index`` (one unit-sized copy, paced like a loader's)."""
        dst = self.arenas[index]._segments[0][:nbytes]
        pacer = LinkPacer(self.link_bytes_per_s)
        t = time.perf_counter()
        staging = self.staging[index]
        if staging is None:
            delivered_s = _copy_cpu(self.src[:nbytes], dst, pacer, self._failed)
            if isinstance(delivered_s, float):  # the loader waits for the emulated link after the copy
                LinkPacer.wait_until(delivered_s)
        else:
            staging.copy(self.src[:nbytes], dst, pacer, self._failed)
            staging.unit_done().synchronize()
        return time.perf_counter() - t

    def close(self) -> None:
        self.src = None
        self._file = None
        self._tmp.cleanup()


def repeats_for(nbytes: int) -> int:
    """More repeats for small (noisy) copies."""
    return 7 if nbytes < (1 << 20) else 3 if nbytes < (64 << 20) else 2


def sweep_transfers(rig: CopyRig, sizes: list[int], deadline: Deadline,
                    tick: Callable[[], None] = lambda: None) -> list[TransferSample]:
    """Median copy time per (device, size), each device alone; stops at ``deadline`` after >= 3 sizes."""
    samples: list[TransferSample] = []
    for k, nbytes in enumerate(sizes):
        if k >= 3 and deadline.passed():
            log.info("transfer sweep stopped at %d bytes (budget)", nbytes)
            break
        for i in range(len(rig.devices)):
            rig.copy(i, nbytes)  # warm-up
            times = [rig.copy(i, nbytes) for _ in range(repeats_for(nbytes))]
            samples.append(TransferSample(f"gpu{i}", nbytes, median_s(times)))
        tick()
    return samples


@dataclass(frozen=True)
class ConcurrentSample:
    """All devices copying ``nbytes`` each at once: per-device seconds and the wall time of the whole."""

    nbytes: int
    seconds: tuple[float, ...]
    wall_s: float

    @property
    def aggregate_bytes_per_s(self) -> float:
        return self.nbytes * len(self.seconds) / self.wall_s


def concurrent_transfers(rig: CopyRig, nbytes: int, repeats: int = 3) -> list[ConcurrentSample]:
    """``repeats`` rounds of every device copying ``nbytes`` concurrently (one thread per device)."""
    out = []
    for _ in range(repeats):
        result = [0.0] * len(rig.devices)
        barrier = threading.Barrier(len(rig.devices) + 1)

        def worker(i: int) -> None:
            barrier.wait()
            result[i] = rig.copy(i, nbytes)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(rig.devices))]
        for th in threads:
            th.start()
        t = time.perf_counter()
        barrier.wait()
        for th in threads:
            th.join()
        out.append(ConcurrentSample(nbytes, tuple(result), time.perf_counter() - t))
    return out
