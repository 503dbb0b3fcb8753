"""Simulator scaling: wall time against the number of requests and against the number of GPUs.

* requests 10^3 .. 10^5 on 64 GPUs over one hour of bursts (``--full`` adds 10^6, which takes minutes);
* GPUs 8 .. 1024 (1 .. 128 nodes of 8) with 200 requests per GPU over 10 minutes of bursts, so the
  arrival rate and the number of cold-started instances grow with the cluster.

Per-token and per-step records are off at every point (as they are by default above 1,000 requests) so
the points are comparable. Prints one table per sweep with wall time, wall time per request, events and events per second; roughly
constant per-request cost means linear growth.

    .venv/bin/python benchmarks/bench_sim_scaling.py [--full]
"""

from __future__ import annotations

import argparse
import time

from bench_sim_speed import bursty_scenario
from sim import run_simulation


def _row(label: str, requests: int, nodes: int, duration_s: float) -> str:
    scenario = bursty_scenario(requests, nodes, duration_s=duration_s)
    t0 = time.perf_counter()
    result = run_simulation(scenario, token_records=False, step_records=False)
    wall = time.perf_counter() - t0
    return (f"{label:>10}{result.requests:>10}{scenario.topology.num_gpus:>7}{result.instances:>6}"
            f"{wall:>9.2f}{wall / max(result.requests, 1) * 1e6:>10.1f}{result.events:>11}"
            f"{result.events / wall:>11,.0f}")


HEADER = f"{'point':>10}{'requests':>10}{'GPUs':>7}{'inst':>6}{'wall s':>9}{'us/req':>10}{'events':>11}{'events/s':>11}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="include 10^6 requests and 1024 GPUs")
    args = parser.parse_args()
    print("wall time vs requests (64 GPUs, 1 h of bursts)")
    print(HEADER)
    for n in (1_000, 10_000, 100_000) + ((1_000_000,) if args.full else ()):
        print(_row(f"1e{len(str(n)) - 1}", n, 8, 3600.0), flush=True)
    print("\nwall time vs GPUs (200 requests per GPU, 10 min of bursts)")
    print(HEADER)
    for gpus in (8, 32, 128, 512) + ((1024,) if args.full else ()):
        print(_row(f"{gpus} GPUs", 200 * gpus, gpus // 8, 600.0), flush=True)


if __name__ == "__main__":
    main()
