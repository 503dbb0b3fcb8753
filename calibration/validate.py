"""``pipeboost validate``: one scenario in the simulator and on the executor, compared component by component.

:func:`validate_scenario` derives the common scenario (:func:`calibration.align.validation_scenario`), runs
both engines, writes ``sim/trace.jsonl``, ``executor/trace.jsonl``, ``errors.csv`` (one row per compared
quantity), ``units.csv`` (per-unit LOAD durations) and ``timeline.png`` (two panels: simulator above,
executor below, same time axis), and returns a :class:`ValidationResult` whose ``median_error`` is the
median relative error over the TTFT, per-GPU load, time-to-full-replica and recovery rows.
"""

from __future__ import annotations

import argparse
import csv
import logging
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from calibration.align import ALL_COMPONENTS, COMPONENTS, Row, compare_traces, unit_load_rows, validation_scenario
from calibration.repeats import merge_repeats, split_halves, trace_name
from pipeboost.costs import CostParams
from pipeboost.errors import PipeBoostError
from pipeboost.metrics import percentile
from pipeboost.scenario import load_params_file, load_scenario
from pipeboost.scenario_model import Scenario
from pipeboost.trace import TraceRecord, read_jsonl, write_jsonl

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ValidationResult:
    """Rows of one scenario and the summary statistics of their relative errors."""

    scenario: str
    rows: tuple[Row, ...]
    unit_rows: tuple[Row, ...]
    out_dir: Path
    executor_runs: int = 1
    self_rows: tuple[Row, ...] = ()
    """With two or more executor runs: the executor against itself (:func:`calibration.repeats.split_halves`),
    the noise floor of ``rows``."""

    def errors(self, components: Iterable[str] = COMPONENTS) -> list[float]:
        wanted = set(components)
        return [r.rel_error for r in self.rows if r.component in wanted and r.rel_error is not None]

    @property
    def median_error(self) -> float | None:
        errs = self.errors()
        return statistics.median(errs) if errs else None

    def component_stats(self) -> dict[str, dict[str, float | None]]:
        """Per component: count, median and p95 relative error."""
        out = {}
        for comp in ALL_COMPONENTS:
            rows = self.unit_rows if comp == "load_unit" else self.rows
            out[comp] = row_stats(r for r in rows if r.component == comp)
        return out

    def self_stats(self) -> dict[str, dict[str, float | None]]:
        """Per component: :func:`row_stats` of :attr:`self_rows`, the executor against itself (n = 0 where
        none)."""
        return {comp: row_stats(r for r in self.self_rows if r.component == comp) for comp in ALL_COMPONENTS}


def error_stats(errors: list[float], spreads: list[float] = ()) -> dict[str, float | None]:
    """Count, median and p95 of relative ``errors``, and the median of the executor runs' ``spreads``
    (None without repeats)."""
    return {"n": len(errors), "median": statistics.median(errors) if errors else None,
            "p95": percentile(errors, 95), "spread": statistics.median(spreads) if spreads else None}


def row_stats(rows: Iterable[Row]) -> dict[str, float | None]:
    """:func:`error_stats` of ``rows`` (their relative errors and executor spreads)."""
    rows = list(rows)
    return error_stats([r.rel_error for r in rows if r.rel_error is not None],
                       [r.executor_spread for r in rows if r.executor_spread is not None])


def _write_rows(rows: Iterable[Row], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["component", "key", "sim_s", "executor_s", "rel_error",
                                                "executor_spread"])
        writer.writeheader()
        for row in rows:
            writer.writerow(row.as_dict())


def plot_side_by_side(sim: list[TraceRecord], exe: list[TraceRecord], path: Path, title: str) -> Path:
    """Two timelines (simulator, executor) stacked on one time axis, via :func:`pipeboost.plots.plot_timeline`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    from pipeboost.plots import plot_timeline

    parts = [plot_timeline(sim, path.with_name("timeline_sim.png"), f"{title}: simulator"),
             plot_timeline(exe, path.with_name("timeline_executor.png"), f"{title}: executor")]
    images = [mpimg.imread(p) for p in parts]
    fig, axes = plt.subplots(2, 1, figsize=(11, sum(i.shape[0] for i in images) / 110 + 0.2))
    for ax, image in zip(axes, images):
        ax.imshow(image)
        ax.axis("off")
    fig.tight_layout(pad=0.1)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_engines(scenario: Scenario, out_dir: Path, checkpoints: Path | None = None,
                executor_traces: Sequence[Path] = (), repeats: int = 1
                ) -> tuple[list[TraceRecord], list[list[TraceRecord]]]:
    """The simulator's trace of ``scenario`` and ``repeats`` executor traces (checkpoints cached under
    ``checkpoints``).

    ``executor_traces``: executor traces of the same common scenario from an earlier run, read instead of
    replaying (the executor does not read ``params``, so a re-simulation with other params is compared
    with the very same measurements)."""
    from sim import run_simulation

    sim = run_simulation(scenario).trace
    if executor_traces:
        return sim, [read_jsonl(p) for p in executor_traces]
    return sim, [executor_trace(scenario, out_dir, checkpoints) for _ in range(max(1, repeats))]


def executor_trace(scenario: Scenario, out_dir: Path, checkpoints: Path | None = None) -> list[TraceRecord]:
    """One executor run of the common ``scenario`` (its work folder, with the cached checkpoints, under
    ``checkpoints``, else ``out_dir``)."""
    from executor.replay import replay_scenario

    return replay_scenario(scenario, work_dir=(checkpoints or out_dir) / "run").trace


def validate_scenario(scenario: Scenario, params: CostParams, out_dir: Path, plot: bool = True,
                      checkpoints: Path | None = None, executor_traces: Sequence[Path] = (),
                      repeats: int = 1) -> ValidationResult:
    """Run both engines on the common scenario (the executor ``repeats`` times; each measured quantity is
    the median over the runs, :mod:`calibration.repeats`); write traces, tables and the picture into
    ``out_dir`` (``executor_traces``: reuse measured executor traces, see :func:`run_engines`)."""
    out_dir = Path(out_dir)
    common = validation_scenario(scenario, params, out_dir)
    sim, exes = run_engines(common, out_dir, checkpoints, executor_traces, repeats)
    for name in ("sim", "executor"):
        (out_dir / name).mkdir(parents=True, exist_ok=True)
    write_jsonl(sim, out_dir / "sim" / "trace.jsonl")
    for run, exe in enumerate(exes):
        write_jsonl(exe, out_dir / "executor" / trace_name(run))
    per_run = [compare_traces(sim, exe) for exe in exes]
    rows = merge_repeats(per_run)
    units = merge_repeats([unit_load_rows(sim, exe) for exe in exes])
    _write_rows(rows, out_dir / "errors.csv")
    _write_rows(units, out_dir / "units.csv")
    if plot:
        plot_side_by_side(sim, exes[0], out_dir / "timeline.png", scenario.name)
    return ValidationResult(scenario.name, tuple(rows), tuple(units), out_dir, len(exes),
                            tuple(split_halves(per_run)))


def _fmt(x: float | None, pct: bool = False) -> str:
    if x is None:
        return "-"
    return f"{100 * x:.1f}%" if pct else f"{x:.4f}"


def format_rows(result: ValidationResult) -> str:
    """The error table as aligned text, then per-component median / p95."""
    lines = [f"{'component':13s} {'key':10s} {'sim_s':>9s} {'executor_s':>10s} {'error':>7s}"]
    for r in result.rows:
        lines.append(f"{r.component:13s} {r.key:10s} {_fmt(r.sim_s):>9s} {_fmt(r.executor_s):>10s} "
                     f"{_fmt(r.rel_error, True):>7s}")
    lines.append("")
    for comp, st in result.component_stats().items():
        if st["n"]:
            noise = f"  executor spread over {result.executor_runs} runs {_fmt(st['spread'], True)}" \
                if st["spread"] is not None else ""
            lines.append(f"{comp:13s} n={st['n']:<3d} median {_fmt(st['median'], True):>7s}  "
                         f"p95 {_fmt(st['p95'], True):>7s}{noise}")
    for comp, st in result.self_stats().items():
        if not st["n"]:
            continue
        lines.append(f"{comp:13s} n={st['n']:<3d} median {_fmt(st['median'], True):>7s}  "
                     f"p95 {_fmt(st['p95'], True):>7s}  executor against itself (odd- vs even-numbered runs)")
    lines.append(f"overall median error {_fmt(result.median_error, True)}")
    return "\n".join(lines)


def run_validate_command(args: argparse.Namespace) -> int:
    """Handler of ``pipeboost validate`` (one scenario, or ``--suite DIR``): 1 when the error is too high."""
    if args.threshold < 0:
        raise PipeBoostError(f"--threshold must not be negative, got {args.threshold}")
    params = load_params_file(args.params)
    if args.suite:
        from calibration.suite import run_suite_command

        return run_suite_command(Path(args.suite), params, args.threshold, args.out, args.quick,
                                 repeats=args.repeats, speed_probe=args.speed_probe)
    if not args.scenario:
        raise PipeBoostError("give a SCENARIO file or --suite DIR")
    if args.speed_probe:
        raise PipeBoostError("--speed-probe needs --suite DIR (it probes once per round of the suite's runs)")
    scenario = load_scenario(args.scenario)
    out = Path(args.out or Path("runs") / f"validate-{scenario.name}")
    result = validate_scenario(scenario, params, out, repeats=args.repeats)
    print(format_rows(result))
    print(f"\nwrote {out}/errors.csv, units.csv, timeline.png, sim/ and executor/ traces")
    median = result.median_error
    if median is None or median > args.threshold:
        print(f"FAIL: median error {_fmt(median, True)} > threshold {100 * args.threshold:.1f}%")
        return 1
    print(f"ok: median error {_fmt(median, True)} <= threshold {100 * args.threshold:.1f}%")
    return 0
