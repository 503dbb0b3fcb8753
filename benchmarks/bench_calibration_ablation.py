"""Ablation of the cost-model terms: the suite re-simulated against the SAME executor traces, one term off.

Reads the executor traces of an earlier suite run (``--reuse``, all its repeats) and re-simulates every
scenario with the calibrated params, then with one term removed at a time (compute profiles -> roofline
fit, runtime latencies, compute slowed by copies, copies slowed by compute, shared host cores). Because the
measurements are identical, the differences are the terms' own contribution. Prints one table against the
goal (5% / 10%).

    .venv/bin/python benchmarks/bench_calibration_ablation.py --params scenarios/params/cpu2-opt125m.yaml \\
        --reuse runs/validation-final
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import tempfile
from pathlib import Path

from calibration.suite import load_suite, pct, rank_agreement, run_suite, suite_errors, suite_files
from pipeboost.costs import CostParams
from pipeboost.scenario import load_params_file

GOAL = "median <= 5%, p95 <= 10%"


def variants(params: CostParams) -> dict[str, CostParams]:
    """The calibrated params and one variant per removed term."""
    return {
        "calibrated (all terms)": params,
        "no compute profiles (roofline fit)": params.with_(compute_profiles=()),
        "no runtime latencies": params.with_(dispatch_s=0.0, handoff_s=0.0, step_start_s=0.0, unit_wake_s=0.0),
        "no compute slowed by copies": params.with_(compute_interference_per_gbps=0.0,
                                                    compute_interference_per_gbps_long=None),
        "no copies' CPU on the host cores": params.with_(copy_cpu_s_per_byte=0.0),
        "no copies slowed by compute": params.with_(copy_interference_per_job=0.0),
        "no shared host cores": params.with_(host_cores=None),
        "no per-model concurrency slowdown": params.with_(compute_profiles=tuple(
            dataclasses.replace(p, concurrency_slowdown=0.0, prefill_concurrency_slowdown=0.0)
            for p in params.compute_profiles)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", required=True)
    parser.add_argument("--reuse", required=True, help="suite output folder with executor traces")
    parser.add_argument("--dir", default="scenarios/validation")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    scenarios = load_suite(suite_files(Path(args.dir)))
    print(f"{'variant':36s} {'TTFT median':>11s} {'TTFT p95':>9s} {'load median':>11s} {'load p95':>9s} "
          f"{'Spearman':>9s}   goal {GOAL}")
    for name, params in variants(load_params_file(args.params)).items():
        with tempfile.TemporaryDirectory() as tmp:
            entries = run_suite(scenarios, params, Path(tmp), reuse=Path(args.reuse))
        errors, ranks = suite_errors(entries), rank_agreement(entries)
        rho = " ".join(f"{r['spearman']:.2f}" for r in ranks)
        print(f"{name:36s} {pct(errors['ttft']['median']):>11s} {pct(errors['ttft']['p95']):>9s} "
              f"{pct(errors['load_gpu']['median']):>11s} {pct(errors['load_gpu']['p95']):>9s} {rho:>9s}")


if __name__ == "__main__":
    main()
