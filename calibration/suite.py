"""The validation suite: every scenario of a folder through :func:`calibration.validate.validate_scenario`,
one table, error statistics across the suite, and rank agreement over policy variants.

Scenarios whose names share the part before ``--`` (``opt-125m-2cpu--balanced-bytes``) form a *policy
group*: they differ only in policies, so the simulator should rank them as the executor does. Per group
the suite reports Spearman's rho between simulated and measured mean TTFT over the group's distinct plans
(variants whose policies yield the same plan are repeats: averaged, their spread reported as noise) and
whether the policy the simulator picks is within 5% of the best measured one. ``--quick`` runs the names listed in the folder's
``QUICK`` file (a small CI subset). Calibration never reads this folder (it uses microbenchmarks only).

``python -m calibration.suite --params P [--quick] [--dir scenarios/validation] [--out runs/validation]
[--reuse-executor DIR] [--repeats K] [--speed-probe]`` (``--reuse-executor``: re-simulate only, against an
earlier run's executor traces; ``--speed-probe``: :mod:`calibration.speed_probe` and :mod:`calibration.copy_probe`)
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from calibration.align import ALL_COMPONENTS, validation_scenario
from calibration.copy_probe import CopyProbe, copy_probe_for, with_copy_rate
from calibration.repeats import repeat_traces, trace_name
from calibration.speed_probe import SpeedProbe, probed_models, speed_factors, with_speed
from calibration.validate import ValidationResult, error_stats, executor_trace, row_stats, validate_scenario
from pipeboost.costs import CostParams
from pipeboost.errors import PipeBoostError, report_error
from pipeboost.metrics import request_metrics
from pipeboost.policies import build_plan
from pipeboost.scenario import Scenario, load_params_file, load_scenario
from pipeboost.spec import HOST_MEM_LINK
from pipeboost.trace import read_jsonl, write_jsonl

log = logging.getLogger(__name__)

BEST_POLICY_TOLERANCE = 0.05
GOAL_MEDIAN, GOAL_P95 = 0.05, 0.10
"""The accuracy goal the suite reports against (median / p95 relative error of TTFT and load time)."""
DEFAULT_DIR = Path("scenarios/validation")


@dataclass(frozen=True)
class SuiteEntry:
    """One scenario's result plus the mean TTFT of each engine (seconds)."""

    result: ValidationResult
    group: str
    sim_mean_ttft_s: float | None
    exe_mean_ttft_s: float | None
    plan_key: str = ""
    """The base plan (JSON): variants of a group with the same plan are repeats of one policy."""
    cold_start_gpus: int = 0
    """GPUs the scenario cold-starts on (0: unknown)."""


def suite_files(folder: Path, quick: bool = False) -> list[Path]:
    """The scenario files of ``folder`` (sorted); with ``quick`` only those named in ``folder/QUICK``."""
    files = sorted(Path(folder).glob("*.yaml"))
    if not files:
        raise PipeBoostError(f"{folder}: no scenario files (*.yaml)")
    if quick:
        names = set((Path(folder) / "QUICK").read_text().split()) if (Path(folder) / "QUICK").exists() else set()
        files = [f for f in files if f.stem in names]
    return files


def _mean_ttft(trace_paths: list[Path]) -> float | None:
    """Mean TTFT of each trace, averaged over the traces (executor repeats)."""
    means = []
    for path in trace_paths:
        values = [r.ttft_s for r in request_metrics(read_jsonl(path)) if r.ttft_s is not None]
        if values:
            means.append(statistics.fmean(values))
    return statistics.fmean(means) if means else None


def load_suite(files: Sequence[Path]) -> list[Scenario]:
    """The suite's scenarios, each file loaded (parsed and checked) once for the whole suite run."""
    return [load_scenario(path) for path in files]


def measure_interleaved(scenarios: Sequence[Scenario], params: CostParams, out_dir: Path, repeats: int,
                        after_round: Callable[[int], object] | None = None) -> None:
    """Run the executor ``repeats`` times on every scenario's common scenario, round by round (each round runs
    every scenario once, in suite order), writing ``out_dir/<scenario>/executor/trace*.jsonl``.

    The machine's speed swings by up to 10% within minutes: with a scenario's repeats back to back, one slow
    window could hold all of them (session 6: every request of one scenario 10-13% late in one run), while
    spread over the rounds it holds one repeat of several scenarios, which each scenario's median of its
    repeats then rejects.
    ``after_round(k)`` is called after round ``k`` (the speed probe, :mod:`calibration.speed_probe`)."""
    commons = [validation_scenario(sc, params, out_dir / sc.name) for sc in scenarios]
    for run in range(repeats):
        for scenario, common in zip(scenarios, commons):
            log.info("executor round %d/%d: %s", run + 1, repeats, scenario.name)
            folder = out_dir / scenario.name / "executor"
            folder.mkdir(parents=True, exist_ok=True)
            write_jsonl(executor_trace(common, out_dir, out_dir / "cache"), folder / trace_name(run))
        if after_round is not None:
            after_round(run)


def run_suite(scenarios: Sequence[Scenario], params: CostParams, out_dir: Path, reuse: Path | None = None,
              repeats: int = 1, after_round: Callable[[int], object] | None = None) -> list[SuiteEntry]:
    """Validate every scenario (:func:`load_suite`; the executor ``repeats`` times each, interleaved over the suite:
    :func:`measure_interleaved`); checkpoints are cached once under ``out_dir/cache``. ``reuse``: an earlier
    suite output folder whose executor traces (all its repeats) are compared instead of running the executor
    again."""
    if reuse is None and repeats > 1:
        measure_interleaved(scenarios, params, out_dir, repeats, after_round)
        reuse = out_dir
    entries = []
    for scenario in scenarios:
        log.info("validating %s", scenario.name)
        traces = repeat_traces(Path(reuse) / scenario.name / "executor") if reuse else []
        if reuse and not traces:
            raise PipeBoostError(f"--reuse-executor: no {Path(reuse) / scenario.name / 'executor' / 'trace.jsonl'}")
        result = validate_scenario(scenario, params, out_dir / scenario.name, plot=False,
                                   checkpoints=out_dir / "cache", executor_traces=traces, repeats=repeats)
        entries.append(SuiteEntry(result, scenario.name.split("--")[0],
                                  _mean_ttft([result.out_dir / "sim" / "trace.jsonl"]),
                                  _mean_ttft(repeat_traces(result.out_dir / "executor")),
                                  json.dumps(build_plan(scenario).to_dict(), sort_keys=True),
                                  scenario.serving.cold_start_gpus))
    return entries


def machine_drift(entries: list[SuiteEntry]) -> tuple[float | None, int]:
    """The signed median of ``(sim - executor) / executor`` over the TTFT rows of the one-GPU scenarios, and
    their number (None without any).

    No interference term reaches a one-GPU scenario's prefills: only the compute profiles and the runtime
    latencies do, so a value far from 0 is mostly the machine's speed during this run against its speed at
    calibration (the shared VM drifts by 4-8% within an hour), which every other row carries as well."""
    signed = [(r.sim_s - r.executor_s) / r.executor_s for e in entries if e.cold_start_gpus == 1
              for r in e.result.rows if r.component == "ttft" and r.sim_s is not None and r.executor_s]
    return (statistics.median(signed) if signed else None), len(signed)


def suite_errors(entries: list[SuiteEntry]) -> dict[str, dict[str, float | None]]:
    """Median and p95 relative error across the suite, per component, and (with executor repeats) the
    median spread of the executor's own runs."""
    out = {}
    for comp in ALL_COMPONENTS:
        out[comp] = row_stats(r for s in entries for r in (s.result.unit_rows if comp == "load_unit" else
                                                             s.result.rows) if r.component == comp)
    out["all"] = error_stats([e for s in entries for e in s.result.errors()])
    return out


NOISE_COMPONENTS = ("ttft", "load_gpu")
"""Components whose executor noise floor the suite reports (those of the goal)."""


def executor_noise(entries: list[SuiteEntry]) -> dict[str, dict[str, float | None]]:
    """Per component of :data:`NOISE_COMPONENTS`: the error statistics of the executor against itself across
    the suite (:attr:`ValidationResult.self_rows`: odd- against even-numbered runs); empty without repeats."""
    if not any(e.result.self_rows for e in entries):
        return {}
    return {comp: row_stats(r for e in entries for r in e.result.self_rows if r.component == comp)
            for comp in NOISE_COMPONENTS}


def _distinct_plans(members: list[SuiteEntry]) -> list[tuple[str, float, float, float]]:
    """Variants merged by plan: (first scenario name, sim mean TTFT, executor mean TTFT averaged over the
    variants with that plan, relative spread max/min - 1 of those executor means: pure executor noise)."""
    by_plan: dict[str, list[SuiteEntry]] = {}
    for m in members:
        by_plan.setdefault(m.plan_key, []).append(m)
    out = []
    for same in by_plan.values():
        exe = [m.exe_mean_ttft_s for m in same]
        out.append((same[0].result.scenario, statistics.fmean(m.sim_mean_ttft_s for m in same),
                    statistics.fmean(exe), max(exe) / min(exe) - 1.0))
    return out


def rank_agreement(entries: list[SuiteEntry]) -> list[dict[str, Any]]:
    """Per policy group: Spearman rho of mean TTFT over its *distinct plans* (>= 3) and the best-policy check.

    Variants whose policies produce the same plan (e.g. two partitioners agreeing on 6 + 6 layers) are
    repeats of one run: their executor means are averaged, and their spread is reported as
    ``same_plan_spread`` (the executor's own noise on that group)."""
    from scipy.stats import spearmanr

    groups: dict[str, list[SuiteEntry]] = {}
    for e in entries:
        if e.sim_mean_ttft_s is not None and e.exe_mean_ttft_s is not None:
            groups.setdefault(e.group, []).append(e)
    rows = []
    for name, members in sorted(groups.items()):
        plans = _distinct_plans(members)
        if len(plans) < 3:
            continue
        sim = [p[1] for p in plans]
        exe = [p[2] for p in plans]
        rho = float(spearmanr(sim, exe).statistic)
        picked = plans[sim.index(min(sim))]
        gap = picked[2] / min(exe) - 1.0
        rows.append({"group": name, "variants": len(members), "plans": len(plans), "spearman": rho,
                     "sim_best": picked[0], "exe_best": plans[exe.index(min(exe))][0],
                     "best_gap": gap, "best_within_5pct": gap <= BEST_POLICY_TOLERANCE,
                     "same_plan_spread": max(p[3] for p in plans)})
    return rows


def write_table(entries: list[SuiteEntry], path: Path) -> None:
    """One row per scenario: per-component median / p95 error and both mean TTFTs."""
    fields = ["scenario", "group", "sim_mean_ttft_s", "exe_mean_ttft_s", "median_error"]
    comps = ALL_COMPONENTS
    fields += [f"{c}_{k}" for c in comps for k in ("median", "p95", "spread")]
    fields += [f"{c}_self_{k}" for c in NOISE_COMPONENTS for k in ("median", "p95")]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for e in entries:
            stats = e.result.component_stats()
            row = {"scenario": e.result.scenario, "group": e.group, "sim_mean_ttft_s": e.sim_mean_ttft_s,
                   "exe_mean_ttft_s": e.exe_mean_ttft_s, "median_error": e.result.median_error}
            row.update({f"{c}_{k}": stats[c][k] for c in comps for k in ("median", "p95", "spread")})
            own = e.result.self_stats()
            row.update({f"{c}_self_{k}": own[c][k] for c in NOISE_COMPONENTS for k in ("median", "p95")})
            writer.writerow(row)


def pct(x: float | None) -> str:
    """A relative error as a percentage with one decimal ("-" for None)."""
    return "-" if x is None else f"{100 * x:.1f}%"


def goal_line(what: str, stats: dict[str, Any]) -> str:
    """``goal WHAT: median <= ... and p95 <= ...: met|not met (median / p95)`` for one component's statistics."""
    return (f"goal {what}: median <= {pct(GOAL_MEDIAN)} and p95 <= {pct(GOAL_P95)}: "
            f"{'met' if goal_met(stats) else 'not met'} ({pct(stats.get('median'))} / {pct(stats.get('p95'))})")


def goal_met(stats: dict[str, Any]) -> bool:
    """Whether a component's error statistics (:func:`suite_errors`) meet the goal: median <=
    :data:`GOAL_MEDIAN` and p95 <= :data:`GOAL_P95`."""
    med, p95 = stats.get("median"), stats.get("p95")
    return med is not None and p95 is not None and med <= GOAL_MEDIAN and p95 <= GOAL_P95


def format_suite(entries: list[SuiteEntry], errors: dict[str, Any], ranks: list[dict[str, Any]]) -> str:
    """The printed suite table, the error statistics and the rank agreement."""
    lines = [f"{'scenario':44s} {'sim TTFT':>9s} {'exe TTFT':>9s} {'ttft err':>8s} {'load err':>8s} {'median':>7s}"]
    for e in entries:
        st = e.result.component_stats()
        sim = "-" if e.sim_mean_ttft_s is None else f"{e.sim_mean_ttft_s:.4f}"
        exe = "-" if e.exe_mean_ttft_s is None else f"{e.exe_mean_ttft_s:.4f}"
        lines.append(f"{e.result.scenario:44s} {sim:>9s} {exe:>9s} {pct(st['ttft']['median']):>8s} "
                     f"{pct(st['load_gpu']['median']):>8s} {pct(e.result.median_error):>7s}")
    lines.append("")
    for comp, st in errors.items():
        noise = f"  executor spread (median) {pct(st['spread'])}" if st.get("spread") is not None else ""
        lines.append(f"{comp:13s} n={st['n']:<4d} median {pct(st['median']):>7s}  p95 {pct(st['p95']):>7s}{noise}")
    for comp, st in executor_noise(entries).items():
        lines.append(f"{comp:13s} n={st['n']:<4d} median {pct(st['median']):>7s}  p95 {pct(st['p95']):>7s}  "
                     f"executor against itself (odd- vs even-numbered runs): the noise floor")
    drift, n = machine_drift(entries)
    if drift is not None:
        side = "slower" if drift < 0 else "faster"
        lines.append(f"machine drift: one-GPU scenarios' TTFT, simulated vs measured {drift:+.1%} (n={n}): the "
                     f"executor ran {abs(drift):.1%} {side} than the profiles, and every row carries it")
    lines.append("")
    for comp in ("ttft", "load_gpu"):
        st = errors.get(comp, {})
        lines.append(goal_line(comp, st))
    for r in ranks:
        lines.append(f"policy group {r['group']}: {r['variants']} variants ({r['plans']} distinct plans; executor "
                     f"spread over identical plans {pct(r['same_plan_spread'])}), Spearman {r['spearman']:.2f}, "
                     f"sim best {r['sim_best']} ({pct(r['best_gap'])} from measured best "
                     f"{r['exe_best']}): {'ok' if r['best_within_5pct'] else 'NOT within 5%'}; goal Spearman >= 0.9: "
                     f"{'met' if r['spearman'] >= 0.9 else 'not met'}")
    return "\n".join(lines)


def run_suite_command(folder: Path, params: CostParams, threshold: float, out: str | None, quick: bool,
                      reuse: str | None = None, repeats: int = 1, speed_probe: bool = False) -> int:
    """Run, print, write ``suite.csv``; 1 when the median error over all rows exceeds ``threshold``.
    ``speed_probe``: also measure the machine's speed once per round and print the suite re-simulated with it
    (:func:`speed_corrected`) beside the plain figures; the exit status is then that of the re-simulated suite
    (the params file with the machine's speed during the run)."""
    if repeats < 1:
        raise PipeBoostError(f"--repeats must be at least 1, got {repeats}")
    if speed_probe and reuse:
        raise PipeBoostError("--speed-probe measures the machine while the executor runs; drop --reuse-executor "
                             "or --speed-probe")
    out_dir = Path(out or "runs/validation")
    out_dir.mkdir(parents=True, exist_ok=True)
    scenarios = load_suite(suite_files(folder, quick))
    probe, copy = None, None
    if speed_probe:
        models = probed_models(params, ((s.model.name, s.model.dtype) for s in scenarios))
        probe = SpeedProbe(params, models, out_dir / "cache" / "speed-probe")
        if scenarios:
            copy = copy_probe_for(params, scenarios[0].model.name, scenarios[0].model.dtype,
                                  out_dir / "cache" / "speed-probe")

    def after_round(_run: int) -> None:
        probe.run()
        if copy is not None:
            copy.run()
    entries = run_suite(scenarios, params, out_dir, Path(reuse) if reuse else None, repeats,
                        after_round=after_round if probe else None)
    errors, ranks = suite_errors(entries), rank_agreement(entries)
    write_table(entries, out_dir / "suite.csv")
    with open(out_dir / "ranks.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["group", "variants", "plans", "spearman", "sim_best", "exe_best",
                                                "best_gap", "best_within_5pct", "same_plan_spread"])
        writer.writeheader()
        writer.writerows(ranks)
    print(format_suite(entries, errors, ranks))
    median = errors["all"]["median"]
    if probe is not None:
        text, corrected = speed_corrected(scenarios, params, probe, out_dir, repeats, copy)
        print("\n" + text)
        median = corrected["all"]["median"]
    print(f"\nwrote {out_dir}/suite.csv, ranks.csv and one folder per scenario")
    return 0 if median is not None and median <= threshold else 1


def speed_corrected(scenarios: Sequence[Scenario], params: CostParams, probe: SpeedProbe, out_dir: Path,
                    repeats: int, copy: CopyProbe | None = None) -> tuple[str, dict[str, dict[str, float | None]]]:
    """The suite re-simulated against ``out_dir``'s executor traces with ``params``' profiles scaled by the
    machine's speed during the run (:func:`calibration.speed_probe.speed_factors` of ``probe``'s rounds;
    one probe now if it has none) and, with ``copy``, their ``host_mem`` limit replaced by the loaders'
    aggregate rate measured in the run (:mod:`calibration.copy_probe`, the rounds' median); writes
    ``out_dir/speed_probe.json`` and returns the printed lines and the re-simulated suite's :func:`suite_errors`."""
    if not probe.rounds:
        probe.run()
    factors = speed_factors(probe.rounds)
    corrected = with_speed(params, factors, dict(probe.models))
    copy_line, copy_data = None, {}
    if copy is not None:
        calibrated = params.link_bandwidth_overrides_bytes_per_s[HOST_MEM_LINK]
        measured = copy.median_bytes_per_s()
        corrected = with_copy_rate(corrected, measured)
        copy_data = {"copy_rounds_bytes_per_s": copy.rounds_bytes_per_s, "copy_bytes_per_s": measured,
                     "calibrated_copy_bytes_per_s": calibrated, "copy_devices": copy.devices}
        copy_line = (f"copy probe ({len(copy.rounds_bytes_per_s)} rounds, {copy.devices} loaders, no link cap): "
                     f"{measured / 1e9:.2f} GB/s median (min {min(copy.rounds_bytes_per_s) / 1e9:.2f}), "
                     f"calibrated {calibrated / 1e9:.2f}: the {HOST_MEM_LINK} limit re-simulated")
    entries = run_suite(scenarios, corrected, out_dir / "speed-corrected", reuse=out_dir, repeats=repeats)
    errors = suite_errors(entries)
    drift, _ = machine_drift(entries)
    (out_dir / "speed_probe.json").write_text(json.dumps(
        {"rounds": probe.rounds, "factors": factors,
         "corrected": {c: errors[c] for c in (*NOISE_COMPONENTS, "all")}, "corrected_drift": drift,
         **copy_data}, indent=1))
    layers = "; ".join(f"{m} " + ", ".join(f"{k} {v:.3f}" for k, v in f.items() if k.startswith("layer/"))
                       for m, f in factors.items())
    lines = [f"speed probe ({len(probe.rounds)} rounds; executor time / calibrated profile, median): {layers}"]
    if copy_line:
        lines.append(copy_line)
    lines += [goal_line(f"{comp} with the machine's speed during the run", errors[comp]) for comp in NOISE_COMPONENTS]
    if drift is not None:
        lines.append(f"  machine drift left: {drift:+.1%}")
    return "\n".join(lines), errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m calibration.suite", description=__doc__.splitlines()[0])
    parser.add_argument("--params", required=True)
    parser.add_argument("--dir", default=str(DEFAULT_DIR))
    parser.add_argument("--out", default=None)
    parser.add_argument("--threshold", type=float, default=0.10)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reuse-executor", default=None, metavar="DIR",
                        help="compare with the executor traces of an earlier suite output DIR (no executor run)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="executor runs per scenario; each quantity is their median (default 1)")
    parser.add_argument("--speed-probe", action="store_true",
                        help="measure the machine's speed once per round (the calibration's in-run runs and, with "
                             "a host_mem limit in the params, the loaders' aggregate copy rate) and "
                             "also print the suite re-simulated with it (its goal lines and exit status: with that speed)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run_suite_command(Path(args.dir), load_params_file(args.params), args.threshold, args.out,
                                 args.quick, args.reuse_executor, args.repeats, args.speed_probe)
    except PipeBoostError as exc:
        return report_error(exc)


if __name__ == "__main__":
    sys.exit(main())
