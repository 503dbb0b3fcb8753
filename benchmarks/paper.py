"""Paper reproduction in simulation: PipeBoost vs load-then-run (ServerlessLLM-style), split load-then-run
(pipeline_only) and tensor parallel, for OPT-1.3B/6.7B/13B/30B and Llama-2-7B/13B on 8 x A100 PCIe Gen4.

Prints a Markdown table (cold start and mean TTFT of every system, PipeBoost's reduction vs load-then-run,
the paper's 31%-49.8% range) and checks the paper's sub-second OPT-1.3B cold start. Results and the
discussion of differences: benchmarks/RESULTS_paper.md.

    .venv/bin/python benchmarks/paper.py [scenarios/paper/*.yaml] [--csv out.csv]
"""

from __future__ import annotations

import argparse
import glob
import time
from pathlib import Path

from pipeboost.scenario import load_scenario
from pipeboost.search.paper import (PAPER_COLD_START_OPT_1_3B_S, PAPER_REDUCTION_RANGE, format_paper_table,
                                    paper_row)
from pipeboost.search.tidy import write_rows_csv

ROOT = Path(__file__).resolve().parents[1]
ORDER = ("opt-1.3b", "opt-6.7b", "opt-13b", "opt-30b", "llama-2-7b", "llama-2-13b")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", help="scenario files (default scenarios/paper/*.yaml)")
    parser.add_argument("--csv", help="also write the tidy rows (all modes, all metrics) to this CSV file")
    args = parser.parse_args()
    files = args.scenarios or sorted(glob.glob(str(ROOT / "scenarios" / "paper" / "*.yaml")))
    scenarios = sorted((load_scenario(f) for f in files),
                       key=lambda s: ORDER.index(s.model.name) if s.model.name in ORDER else len(ORDER))
    t0 = time.perf_counter()
    rows = [paper_row(s) for s in scenarios]
    wall_s = time.perf_counter() - t0
    print(format_paper_table(rows))
    low, high = PAPER_REDUCTION_RANGE
    reductions = [r["reduction_ttft_mean"] for r in rows if r["reduction_ttft_mean"] is not None]
    print(f"\nmean-TTFT reduction vs load_then_run: {min(reductions):.1%} .. {max(reductions):.1%} "
          f"(paper: {low:.0%} .. {high:.1%} lower latency)")
    for r in rows:
        if r["model"] == "opt-1.3b":
            ok = r["pipeboost_cold_start_s"] < PAPER_COLD_START_OPT_1_3B_S
            print(f"OPT-1.3B cold start: {r['pipeboost_cold_start_s'] * 1e3:.0f} ms "
                  f"(paper: sub-second) -> {'met' if ok else 'NOT met'}")
    print(f"{len(rows)} scenarios x 4 modes simulated in {wall_s:.1f} s")
    if args.csv:
        write_rows_csv(rows, args.csv)


if __name__ == "__main__":
    main()
