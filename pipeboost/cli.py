"""The ``pipeboost`` command line.

Commands: ``run``, ``plan``, ``validate-scenario``, ``plot``, ``search``, ``calibrate``, ``validate``,
``make-checkpoint``. Errors print one line
``pipeboost: error: ...`` (no traceback) and exit with status 2; ``--debug`` shows the traceback.
Engines are imported only by the commands that need them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from pipeboost.errors import PipeBoostError, report_error
from pipeboost.report import format_plan_report, format_summary
from pipeboost.scenario import load_scenario

log = logging.getLogger("pipeboost")


def _cmd_plan(args: argparse.Namespace) -> int:
    from pipeboost.policies import build_plan

    for path in args.scenarios:
        scenario = load_scenario(path)
        print(format_plan_report(scenario, build_plan(scenario)))
        print()
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    for path in args.files:
        scenario = load_scenario(path)
        print(f"{path}: ok ({scenario.model.name} on {scenario.topology.num_gpus} x {scenario.topology.gpu.name}, "
              f"mode {scenario.policies.mode})")
    return 0


def _run_engine(scenario: Any, engine: str, out_dir: Path) -> list:
    if engine == "sim":
        from sim import run_simulation

        return run_simulation(scenario).trace
    from executor.replay import replay_scenario

    return replay_scenario(scenario, work_dir=out_dir).trace


def _cmd_run(args: argparse.Namespace) -> int:
    from pipeboost.metrics import write_metrics
    from pipeboost.trace import write_chrome_trace, write_jsonl

    scenario = load_scenario(args.scenario)
    out_dir = Path(args.out or Path("runs") / f"{scenario.name}-{args.engine}")
    out_dir.mkdir(parents=True, exist_ok=True)
    trace = _run_engine(scenario, args.engine, out_dir)
    write_jsonl(trace, out_dir / "trace.jsonl")
    write_chrome_trace(trace, out_dir / "chrome_trace.json")
    summary = write_metrics(trace, out_dir)
    print(format_summary(scenario, args.engine, summary))
    print(f"\nwrote {out_dir}/trace.jsonl, metrics.json, requests.csv, chrome_trace.json")
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from pipeboost.plots import plot_run

    for path in plot_run(Path(args.run_dir)):
        print(f"wrote {path}")
    return 0


def _cmd_make_checkpoint(args: argparse.Namespace, rest: Sequence[str]) -> int:
    from executor.cli import main as executor_main

    return int(executor_main(["make-checkpoint", *rest]) or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pipeboost", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run a scenario in the simulator or the executor")
    p.add_argument("scenario")
    p.add_argument("--engine", choices=("sim", "executor"), default="sim")
    p.add_argument("--out", help="output folder (default runs/NAME-ENGINE)")
    p.set_defaults(func=_cmd_run)
    p = sub.add_parser("plan", help="print the partition and load plans of scenarios")
    p.add_argument("scenarios", nargs="+")
    p.set_defaults(func=_cmd_plan)
    p = sub.add_parser("validate-scenario", help="check scenario files and report the first problem of each")
    p.add_argument("files", nargs="+")
    p.set_defaults(func=_cmd_validate)
    p = sub.add_parser("plot", help="draw the timeline and TTFT CDF of a run folder")
    p.add_argument("run_dir")
    p.set_defaults(func=_cmd_plot)
    from calibration.cli import add_calibrate_parser, add_validate_parser
    from pipeboost.search.cli import add_search_parser

    add_search_parser(sub)
    add_calibrate_parser(sub)
    add_validate_parser(sub)
    p = sub.add_parser("make-checkpoint", help="build a seeded random checkpoint (see --help of the subcommand)",
                       add_help=False)
    p.set_defaults(func=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.command != "make-checkpoint" and rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    handler: Callable[..., int] = args.func
    try:
        if args.command == "make-checkpoint":
            return _cmd_make_checkpoint(args, rest)
        return handler(args)
    except PipeBoostError as exc:
        if args.debug:
            raise
        return report_error(exc)
    except KeyboardInterrupt:
        print("pipeboost: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
