"""LoRA serving: TTFT and throughput against the number of distinct adapters, merged vs unmerged.

* **Simulation**: ``scenarios/lora-opt-1.3b-4xa100.yaml`` (OPT-1.3B, 4 x A100, bursty arrivals), with
  1, 10 and 100 adapters (rank 8 on q/v, Zipf s = 1.1), 256 requests, ``adapter_placement: popular`` with
  the top 3 preloaded, epochs of 50 ms in merged mode.
* **Executor**: opt-tiny on two CPU virtual devices (float32), 8 requests arriving over 40 ms, the same
  adapter counts (the 100-adapter point makes 100 seeded adapters; each request names one by Zipf).

Throughput is output tokens divided by the time from the first arrival to the last FINISH. Prints one table;
``benchmarks/RESULTS_lora.md`` records a run.

    .venv/bin/python benchmarks/bench_lora.py [--skip-executor]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import statistics
import tempfile
from pathlib import Path

import numpy as np

from pipeboost.metrics import request_metrics
from pipeboost.scenario import load_scenario
from pipeboost.trace import TraceKind, TraceRecord
from pipeboost.workload import AdapterSpec, generate_requests

ROOT = Path(__file__).resolve().parents[1]
COUNTS = (1, 10, 100)
MODES = ("unmerged", "merged")


def _summary(trace: list[TraceRecord]) -> tuple[float, float, float, int]:
    """(TTFT p50 s, TTFT mean s, output tokens per s, adapter bytes loaded)."""
    rows = [m for m in request_metrics(trace) if m.ttft_s is not None]
    ttfts = [m.ttft_s for m in rows]
    t0 = min(r.t_start_s for r in trace if r.kind is TraceKind.ARRIVAL)
    t1 = max(r.t_start_s for r in trace if r.kind is TraceKind.FINISH)
    tokens = sum(m.tokens for m in rows)
    nbytes = sum(r.nbytes or 0 for r in trace if r.kind is TraceKind.LOAD and r.attrs.get("adapter"))
    return statistics.median(ttfts), statistics.fmean(ttfts), tokens / (t1 - t0), nbytes


def _adapters(n: int) -> tuple[AdapterSpec, ...]:
    return tuple(AdapterSpec(f"ad{i:03d}", 8, 16.0, ("q_proj", "v_proj")) for i in range(n))


def sim_rows() -> list[tuple]:
    from sim import run_simulation
    base = load_scenario(ROOT / "scenarios" / "lora-opt-1.3b-4xa100.yaml")
    rows = []
    for n in COUNTS:
        for mode in MODES:
            sc = dataclasses.replace(
                base, workload=dataclasses.replace(base.workload, adapters=_adapters(n), num_requests=256),
                serving=dataclasses.replace(base.serving, adapter_mode=mode))
            rows.append(("sim opt-1.3b 4xA100", n, mode, *_summary(run_simulation(sc).trace)))
    return rows


def executor_rows(work: Path) -> list[tuple]:
    from executor.checkpoint import make_checkpoint
    from executor.engine import run_executor
    from executor.lora import make_adapter
    from pipeboost.plan import LoadPlan, PartitionPlan, Plan
    from pipeboost.workload import ArrivalSpec, LengthDist, WorkloadSpec
    model = make_checkpoint("opt-tiny", work / "model", seed=0)
    plan = Plan("pipeboost", PartitionPlan(4, (0, 2, 4)), (0, 1), LoadPlan((0, 1), ((0, 1), (1, 0))))
    rows = []
    for n in COUNTS:
        specs = _adapters(n)
        for i, s in enumerate(specs):
            if not (work / s.name / "adapter_config.json").exists():
                make_adapter("opt-tiny", work / s.name, s.rank, s.alpha, s.target_modules, seed=i)
        folders = {s.name: work / s.name for s in specs}
        wl = WorkloadSpec(ArrivalSpec("poisson", 200.0), LengthDist("constant", value=32),
                          LengthDist("constant", value=16), num_requests=8, adapters=specs, adapter_zipf_s=1.1)
        reqs = generate_requests(wl, np.random.default_rng(5))
        for mode in MODES:
            res = run_executor(plan, model, reqs, devices="cpu:2", adapters=folders, adapter_mode=mode,
                               adapter_epoch_s=0.02, adapter_preload=[s.name for s in specs[:3]], seed=1)
            rows.append(("executor opt-tiny 2xcpu", n, mode, *_summary(res.trace)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-executor", action="store_true", help="simulation rows only")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows = sim_rows()
    if not args.skip_executor:
        with tempfile.TemporaryDirectory() as tmp:
            rows += executor_rows(Path(tmp))
    header = f"{'engine':<24}{'adapters':>9}{'mode':>10}{'TTFT p50 ms':>13}{'TTFT mean ms':>14}" \
             f"{'tokens/s':>11}{'adapter MB':>12}"
    print(header)
    print("-" * len(header))
    for engine, n, mode, p50, mean, tput, nbytes in rows:
        print(f"{engine:<24}{n:>9}{mode:>10}{p50 * 1e3:>13.2f}{mean * 1e3:>14.2f}{tput:>11.0f}{nbytes / 1e6:>12.2f}")


if __name__ == "__main__":
    main()
