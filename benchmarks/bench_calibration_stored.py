"""The validation suite re-simulated against stored executor trace sets: one row per params file and set.

A suite run keeps its executor traces (``runs/v-NAME/<scenario>/executor/trace*.jsonl``); re-simulating them
with other params (``calibration.suite --reuse-executor``) compares a model or a params file against the very
same measurements. This script does that for every params file and trace set given and prints TTFT and
load-per-GPU median / p95, the suite's machine-drift line, the executor's TTFT p95 against itself (odd- vs
even-numbered runs: the noise floor, :func:`calibration.suite.executor_noise`) and, per params file, on how many sets the goal is
met (the comparison behind the session tables of RESULTS_calibration.md):

    .venv/bin/python benchmarks/bench_calibration_stored.py \\
        --params scenarios/params/cpu2-opt125m-sessions4-5.yaml scenarios/params/cpu2-opt125m.yaml \\
        --sets runs/v-s4a runs/v-s5ov runs/v-s6c
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from calibration.suite import (DEFAULT_DIR, GOAL_MEDIAN, GOAL_P95, executor_noise, goal_met, load_suite, machine_drift,
                               pct, run_suite, suite_errors, suite_files)
from pipeboost.errors import PipeBoostError, report_error
from pipeboost.scenario import load_params_file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", nargs="+", required=True, help="params files to compare")
    parser.add_argument("--sets", nargs="+", required=True, help="suite output folders with executor traces")
    parser.add_argument("--dir", default=str(DEFAULT_DIR), help="the suite's scenario folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        scenarios = load_suite(suite_files(Path(args.dir)))
        print(f"{'params':40s} {'trace set':24s} {'TTFT median':>11s} {'TTFT p95':>9s} {'load median':>11s} "
              f"{'load p95':>9s} {'drift':>7s} {'exe self p95':>12s}   goal: median <= {pct(GOAL_MEDIAN)}, p95 <= {pct(GOAL_P95)}")
        for params_path in args.params:
            params = load_params_file(params_path)
            met = 0
            for stored in args.sets:
                with tempfile.TemporaryDirectory() as tmp:
                    entries = run_suite(scenarios, params, Path(tmp), reuse=Path(stored))
                errors = suite_errors(entries)
                ttft, load = errors["ttft"], errors["load_gpu"]
                drift, _ = machine_drift(entries)
                floor = executor_noise(entries).get("ttft", {}).get("p95")
                ok = goal_met(ttft)
                met += ok
                print(f"{Path(params_path).name:40s} {Path(stored).name:24s} {pct(ttft['median']):>11s} "
                      f"{pct(ttft['p95']):>9s} {pct(load['median']):>11s} {pct(load['p95']):>9s} "
                      f"{'-' if drift is None else f'{drift:+.1%}':>7s} {pct(floor):>12s}   {'met' if ok else 'not met'}")
            print(f"{Path(params_path).name}: TTFT goal met on {met} of {len(args.sets)} trace sets\n")
    except PipeBoostError as exc:
        return report_error(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
