"""Shared pieces of the executor benchmarks (not a benchmark itself): checkpoints, plans, tables."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from executor.checkpoint import cached_checkpoint  # noqa: E402
from pipeboost.plan import LoadPlan, PartitionPlan, Plan
from pipeboost.workload import Request  # noqa: E402


Req = Request  # a request as the engine reads it (id, arrival_s, prompt_tokens, output_tokens)


def checkpoint(preset: str, dtype: str, model_dir: str | None) -> Path:
    """``model_dir`` if given (made if empty), else a fresh temp checkpoint of ``preset``."""
    out = Path(model_dir) if model_dir else Path(tempfile.mkdtemp(prefix=f"pb-{preset}-"))
    cached_checkpoint(preset, out, seed=0, dtype=dtype)
    for path in out.glob("*.safetensors"):  # warm the page cache: the host source is memory
        path.read_bytes()
    return out


def plan(mode: str, num_layers: int, boundaries: tuple[int, ...], orders: tuple[tuple[int, ...], ...]) -> Plan:
    stages = len(boundaries) - 1
    return Plan(mode, PartitionPlan(num_layers, boundaries), tuple(range(stages)),
                LoadPlan(tuple(range(len(orders))), orders))


def table(title: str, header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([title, line(header), sep, *[line(r) for r in rows]])
