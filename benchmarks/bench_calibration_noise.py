"""Noise floor of validation: the executor against itself on the same scenario.

Runs the executor ``--repeats`` times on the common validation scenario (see ``calibration.align``) and
compares each run with the first using the same rows as ``pipeboost validate`` (TTFT per request, load
time and time to full replica per GPU). On a shared 2-core machine this is the best error any simulator
could reach: the figure to read the suite's errors against.

    .venv/bin/python benchmarks/bench_calibration_noise.py scenarios/validation/opt-125m-2cpu--even-next.yaml
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from calibration.align import COMPONENTS, compare_traces, validation_scenario
from executor.replay import replay_scenario
from pipeboost.costs import CostParams
from pipeboost.metrics import percentile
from pipeboost.scenario import load_scenario


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="+")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()}; {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        for path in args.scenarios:
            scenario = load_scenario(path)
            common = validation_scenario(scenario, CostParams(), Path(tmp) / scenario.name)
            traces = [replay_scenario(common, Path(tmp) / "run").trace for _ in range(args.repeats)]
            for comp in ("ttft", "load_gpu"):
                errs = [r.rel_error for t in traces[1:] for r in compare_traces(t, traces[0])
                        if r.component == comp and r.rel_error is not None]
                print(f"{scenario.name:40s} {comp:9s} executor vs executor: n={len(errs):3d} "
                      f"median {100 * statistics.median(errs):5.1f}%  p95 {100 * percentile(errs, 95):5.1f}%")
            errs = [r.rel_error for t in traces[1:] for r in compare_traces(t, traces[0])
                    if r.component in COMPONENTS and r.rel_error is not None]
            print(f"{scenario.name:40s} all       median {100 * statistics.median(errs):5.1f}%")


if __name__ == "__main__":
    main()
