"""Cold-start TTFT: pipelined own-stage-first execute-while-load vs load-then-run.

Two CPU virtual devices, each behind an emulated 2 GB/s link, an OPT-125M-sized fp32 checkpoint, one
request (16 prompt tokens) arriving at time zero. Variants:

* pipelined: 2 stages, each device loads its own stage first (then the other), compute runs as units land;
* load-then-run, one device: one device loads everything, then runs;
* load-then-run, split: 2 stages, each device loads only its stage, a stage runs once all its units landed.

Goal: pipelined TTFT <= 0.6 x load-then-run on one device.

Run: ``.venv/bin/python benchmarks/bench_executor_coldstart.py [--repeats 3] [--model-dir DIR]``
"""

from __future__ import annotations

import argparse
import statistics

from bench_executor_common import Req, checkpoint, plan, table
from executor.engine import run_executor
from pipeboost.trace import TraceKind

LINK_BYTES_PER_S = 2e9
BOUNDARIES = (0, 6, 12)
PROMPT_TOKENS = 16


def ttft_s(model_dir, variant: str) -> tuple[float, float]:
    """(TTFT, time the last load ended) of one run, seconds since time zero."""
    if variant == "pipelined":
        p, devices, ewl = plan("pipeboost", 12, BOUNDARIES, ((0, 1), (1, 0))), "cpu:2", True
    elif variant == "load-then-run, one device":
        p, devices, ewl = plan("load_then_run", 12, (0, 12), ((0,),)), "cpu:1", False
    else:
        p, devices, ewl = plan("pipeline_only", 12, BOUNDARIES, ((0,), (1,))), "cpu:2", False
    result = run_executor(p, model_dir, [Req(0, 0.0, PROMPT_TOKENS, 1)], [], devices=devices,
                          link_bandwidth_bytes_per_s=LINK_BYTES_PER_S, execute_while_load=ewl,
                          host_pool=True)
    arrival = next(r.t_start_s for r in result.trace if r.kind == TraceKind.ARRIVAL)
    first = next(r.t_start_s for r in result.trace if r.kind == TraceKind.FIRST_TOKEN)
    return first - arrival, max(r.t_end_s for r in result.trace if r.kind == TraceKind.LOAD)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model-dir", default=None)
    args = parser.parse_args()
    model_dir = checkpoint("opt-125m", "float32", args.model_dir)
    variants = ["pipelined", "load-then-run, one device", "load-then-run, split"]
    runs = {v: [ttft_s(model_dir, v) for _ in range(args.repeats)] for v in variants}
    med = {v: statistics.median(t for t, _ in runs[v]) for v in variants}
    base = med["load-then-run, one device"]
    rows = [[v, f"{med[v] * 1e3:.1f}", f"{statistics.median(l for _, l in runs[v]) * 1e3:.1f}",
             f"{med[v] / base:.2f}", "<= 0.60" if v == "pipelined" else ""] for v in variants]
    print(table(f"cold-start TTFT, OPT-125M-sized fp32, 2 CPU virtual devices, {LINK_BYTES_PER_S / 1e9:.0f} GB/s "
                f"per link, median of {args.repeats}", ["variant", "TTFT ms", "last load end ms",
                                                       "x one-device load-then-run", "goal"], rows))


if __name__ == "__main__":
    main()
