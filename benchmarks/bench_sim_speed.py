"""Simulator speed: a 1-hour bursty trace of 100,000 requests on 64 GPUs (8 nodes x 8 A100s).

Prints wall time against the 30 s ceiling, simulated time / wall time, SimPy events per second of this
run, and SimPy's bare timeout rate measured in the same process (the ceiling for any SimPy model).

    .venv/bin/python benchmarks/bench_sim_speed.py [--requests 100000] [--gpus-per-node 8 --nodes 8]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import simpy

from pipeboost.hardware import topology_preset
from pipeboost.model_config import model_spec_from_hf_config, preset_config
from pipeboost.scenario_model import PolicySpec, Scenario, ServingSpec
from pipeboost.workload import ArrivalSpec, LengthDist, WorkloadSpec
from sim import run_simulation

CEILING_S = 30.0


def bursty_scenario(requests: int = 100_000, nodes: int = 8, duration_s: float = 3600.0,
                    mode: str = "pipeboost", cold_start_gpus: int = 4) -> Scenario:
    """OPT-1.3B on ``nodes`` x 8 A100 PCIe Gen4; bursts: 60 s of Poisson arrivals, then 120 s of silence
    (longer than the 30 s keep-alive, so every burst cold-starts again), over ``duration_s``."""
    config = preset_config("opt-1.3b")
    topo = dataclasses.replace(topology_preset("8xa100-pcie4"), nodes=nodes)
    on_s, off_s = 60.0, 120.0
    rate = requests / (duration_s * on_s / (on_s + off_s))
    workload = WorkloadSpec(ArrivalSpec("on_off", rate_per_s=rate, on_s=on_s, off_s=off_s),
                            LengthDist("lognormal", median=256, sigma=0.6, high=2048),
                            LengthDist("lognormal", median=64, sigma=0.6, high=512),
                            num_requests=requests, duration_s=duration_s)
    return Scenario(name="bench-bursty", seed=42, model=model_spec_from_hf_config(config, "opt-1.3b"),
                    model_config=config, topology=topo, policies=PolicySpec(mode=mode),
                    serving=ServingSpec(cold_start_gpus=cold_start_gpus, max_batch_size=32, keep_alive_s=30.0),
                    workload=workload)


def bare_timeout_rate(n: int = 500_000) -> float:
    """Events per second of a SimPy process doing nothing but ``yield env.timeout(1)``."""
    env = simpy.Environment()

    def ticker():
        for _ in range(n):
            yield env.timeout(1.0)

    env.process(ticker())
    t0 = time.perf_counter()
    env.run()
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--mode", default="pipeboost")
    args = parser.parse_args()
    scenario = bursty_scenario(args.requests, args.nodes, mode=args.mode)
    bare = bare_timeout_rate()
    t0 = time.perf_counter()
    result = run_simulation(scenario)
    wall = time.perf_counter() - t0
    print(f"scenario: {args.requests} requests, {scenario.topology.num_gpus} GPUs, mode {args.mode}")
    print(f"requests {result.requests}, finished {result.finished}, errors {result.errors}, stalled {result.stalled}, "
          f"instances (cold starts) {result.instances}, trace records {len(result.trace)}")
    print(f"simulated time    {result.sim_time_s:10.1f} s")
    print(f"wall time         {wall:10.2f} s   (ceiling {CEILING_S:.0f} s: {'OK' if wall <= CEILING_S else 'OVER'})")
    print(f"sim/wall ratio    {result.sim_time_s / wall:10.1f}")
    print(f"events            {result.events:10d}   ({result.events / wall:,.0f} events/s)")
    print(f"bare SimPy rate   {bare:13,.0f} timeouts/s (same process)")


if __name__ == "__main__":
    main()
