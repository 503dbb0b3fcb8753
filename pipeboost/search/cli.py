"""The ``pipeboost search`` subcommand: register it with :func:`add_search_parser`.

``pipeboost search SCENARIO --space SPACE.yaml --trials N --jobs J [--storage sqlite:///x.db --study-name NAME]
[--out DIR] [--sampler auto|grid|tpe|nsga2|random] [--seed S] [--ray ADDRESS] [--validate K [--params P]]``
writes ``DIR/trials.csv`` (one row per trial) and ``DIR/pareto.csv`` (the front), and prints the front as a
table; ``--validate K`` re-runs the best K trials on the executor (``DIR/validation.csv``).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from pipeboost.report import format_table
from pipeboost.errors import PipeBoostError
from pipeboost.search.space import SAMPLERS

log = logging.getLogger(__name__)


def add_search_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``search`` on an ``argparse`` subparsers object; the handler is ``args.func(args) -> int``."""
    p = subparsers.add_parser("search", help="search policies and serving settings in the simulator (optuna)")
    p.add_argument("scenario", help="base scenario YAML")
    p.add_argument("--space", required=True, help="search-space YAML (params, objectives, constraints)")
    p.add_argument("--trials", type=int, default=20, help="trials the study holds when done (default 20)")
    p.add_argument("--jobs", type=int, default=1, help="parallel worker processes (default 1)")
    p.add_argument("--sampler", choices=SAMPLERS, default="auto",
                   help="auto: grid for small categorical spaces, TPE for one objective, NSGA-II for several")
    p.add_argument("--storage", help="optuna storage URL for resuming, e.g. sqlite:///search.db")
    p.add_argument("--study-name", help="study name in the storage (default SCENARIO_NAME-search)")
    p.add_argument("--seed", type=int, default=0, help="sampler seed (default 0)")
    p.add_argument("--out", help="output folder (default runs/NAME-search)")
    p.add_argument("--ray", metavar="ADDRESS", help="run trials as Ray tasks on this cluster (needs ray)")
    p.add_argument("--validate", type=int, default=0, metavar="K",
                   help="re-run the best K feasible trials on the executor and report predicted vs measured")
    p.add_argument("--params", help="cost-parameter file for --validate (default: the scenario's params)")
    p.set_defaults(func=cmd_search)
    return p


def cmd_search(args: argparse.Namespace) -> int:
    """Run the search described by ``args``; print the Pareto front; write the CSV files."""
    from pipeboost.scenario import load_scenario

    try:
        from pipeboost.search.runner import SearchConfig, run_search
    except ImportError as exc:
        raise PipeBoostError(f"pipeboost search needs optuna ({exc}); install it with pip install -e '.[search]'") \
            from None
    from pipeboost.search.space import load_space
    from pipeboost.search.tidy import write_rows_csv

    scenario = load_scenario(args.scenario)
    space = load_space(args.space)
    config = SearchConfig(trials=args.trials, jobs=args.jobs, sampler=args.sampler, storage=args.storage,
                          study_name=args.study_name, seed=args.seed, ray_address=args.ray)
    result = run_search(scenario, space, config)
    out_dir = Path(args.out or Path("runs") / f"{scenario.name}-search")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_rows_csv(result.rows, out_dir / "trials.csv")
    write_rows_csv(result.front, out_dir / "pareto.csv")
    print(format_front(result.rows, space))
    print(f"\n{len(result.rows)} trials ({result.sampler}), {sum(r['feasible'] for r in result.rows)} feasible; "
          f"wrote {out_dir}/trials.csv, pareto.csv")
    if args.validate > 0:
        _validate(scenario, result.rows, space, args, out_dir)
    return 0


def _validate(scenario: Any, rows: list[dict[str, Any]], space: Any, args: argparse.Namespace, out_dir: Path) -> None:
    """``--validate K``: predicted vs measured for the best K trials, printed and written to validation.csv."""
    from pipeboost.scenario import load_params_file
    from pipeboost.search.tidy import write_rows_csv
    from pipeboost.search.validate_best import validate_best

    params = load_params_file(args.params) if args.params else None
    checked = validate_best(scenario, rows, space, args.validate, out_dir, params)
    write_rows_csv(checked, out_dir / "validation.csv")
    table = [[r["trial"], r["metric"], r["predicted"], r["measured"],
              "-" if r["rel_error"] is None else f"{100 * r['rel_error']:.1f}%"] for r in checked]
    print(f"\nbest {args.validate} trial(s) on the executor ({scenario.executor.devices}): predicted vs measured")
    print(format_table(["trial", "metric", "simulator", "executor", "error"], table))
    print(f"wrote {out_dir}/validation.csv and one validate-trial-N folder per trial")


def format_front(rows: list[dict[str, Any]], space: Any) -> str:
    """The Pareto-front rows as a text table: trial, parameters, objectives, constraint metrics."""
    front = [r for r in rows if r["pareto"]]
    if not front:
        return "no feasible trial (see trials.csv, column error, and the constraints)"
    names = [p.name for p in space.params]
    metrics = list(space.metric_names)
    table = [[r["trial"], *(r.get(n) for n in names), *(r.get(m) for m in metrics)] for r in front]
    return "Pareto front (feasible trials no other feasible trial beats on every objective)\n" + \
        format_table(["trial", *names, *metrics], table)
