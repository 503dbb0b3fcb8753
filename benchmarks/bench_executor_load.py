"""Load bandwidth of the executor's loaders vs a memcpy ceiling measured in the same run.

Each CPU virtual device copies every unit of an OPT-125M-sized checkpoint (page-cached safetensors) into
its preallocated arena, unthrottled. Ceiling: one large ``copy_`` of the same number of bytes into a
preallocated, touched buffer. Goal: >= 85% of the ceiling per device.

Run: ``.venv/bin/python benchmarks/bench_executor_load.py [--devices 2] [--model-dir DIR]``
"""

from __future__ import annotations

import argparse
import threading
import time

import torch

from bench_executor_common import checkpoint, table
from executor.checkpoint import CheckpointReader
from executor.devices import Arena, Device
from executor.engine import checkpoint_dtype, validate_checkpoint
from executor.loader import Loader
from executor.tracer import Tracer
from pipeboost.trace import TraceKind


def memcpy_ceiling_bytes_per_s(nbytes: int, threads: int, repeats: int = 3) -> float:
    """Per-thread bytes/s of ``threads`` concurrent large copies into preallocated, touched buffers."""
    src = torch.empty(nbytes, dtype=torch.uint8)
    src.fill_(1)
    dsts = [torch.empty(nbytes, dtype=torch.uint8) for _ in range(threads)]
    for dst in dsts:
        dst.zero_()
    best = float("inf")
    for _ in range(repeats):
        workers = [threading.Thread(target=dst.copy_, args=(src,)) for dst in dsts]
        t = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        best = min(best, time.perf_counter() - t)
    return nbytes / best


def load_on_devices(model_dir, n_devices: int, source: str) -> list[tuple[int, float]]:
    """Load all units on ``n_devices`` concurrently; ``(bytes, seconds)`` per device."""
    reader = CheckpointReader(model_dir)
    if source == "host pool":
        reader.fill_host_pool()
    units = tuple(range(-1, reader.config.num_hidden_layers + 1))
    sizes = validate_checkpoint(reader, units, checkpoint_dtype(reader))
    cpu = torch.device("cpu")
    devices = [Device(i, cpu, Arena(sum(sizes.values()) + (1 << 20), cpu, i)) for i in range(n_devices)]
    tracer, stop = Tracer(), threading.Event()
    loaders = [Loader(d, reader, reader.config, units, tracer, stop) for d in devices]
    for loader in loaders:
        loader.start()
    for d in devices:
        for u in units:
            d.ready_event(u).wait()
    stop.set()
    out = []
    for d in devices:
        loads = [r for r in tracer.records() if r.kind == TraceKind.LOAD and r.gpu == d.index]
        out.append((sum(r.nbytes for r in loads), max(r.t_end_s for r in loads) - min(r.t_start_s for r in loads)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--model-dir", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model_dir = checkpoint("opt-125m", "float16", args.model_dir)
    rows = []
    torch.set_num_threads(1)
    for source, n in [(src, n) for src in ("page cache", "host pool") for n in (1, args.devices)]:
        best = max((load_on_devices(model_dir, n, source) for _ in range(args.repeats)),
                   key=lambda res: sum(b for b, _ in res) / max(s for _, s in res))
        nbytes = best[0][0]
        ceiling = memcpy_ceiling_bytes_per_s(nbytes, n)
        per_dev = [b / s for b, s in best]
        aggregate = sum(b for b, _ in best) / max(s for _, s in best)
        rows.append([source, n, f"{nbytes / 1e6:.0f}", " ".join(f"{x / 1e9:.2f}" for x in per_dev),
                     f"{aggregate / 1e9:.2f}", f"{ceiling / 1e9:.2f}",
                     f"{min(per_dev) / ceiling:.0%}", ">= 85% per device"])
    print(table("executor load bandwidth (GB/s = 1e9 bytes/s), OPT-125M-sized fp16; ceiling = concurrent "
                "memcpy per thread", ["source", "devices", "MB/device", "per device GB/s", "aggregate GB/s", "memcpy ceiling GB/s",
                 "min per device / ceiling", "goal"], rows))


if __name__ == "__main__":
    main()
