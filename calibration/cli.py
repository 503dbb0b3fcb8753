"""Command-line wiring of ``pipeboost calibrate`` and ``pipeboost validate``.

``pipeboost/cli.py`` registers them with::

    from calibration.cli import add_calibrate_parser, add_validate_parser
    add_calibrate_parser(sub); add_validate_parser(sub)

Handlers return an exit status and raise :class:`pipeboost.errors.PipeBoostError` subclasses for user
errors (the CLI prints those as one line). Heavy modules (torch, the engines) are imported on use only.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from calibration.calibrate import CalibrationRequest, calibrate

    models = [m.strip() for m in args.model.split(",") if m.strip()]
    req = CalibrationRequest(devices=args.devices, preset=models[0] if models else args.model,
                             budget_s=args.budget_s, link_gbps=args.link_gbps, dtype=args.dtype,
                             gpu_preset=args.gpu_preset, cache_dir=Path(args.cache_dir),
                             progress=not args.no_progress, profile_presets=tuple(models[1:]),
                             passes=args.passes)
    params = calibrate(req, Path(args.out))
    prov = params.provenance
    print(f"wrote {args.out} ({prov.get('wall_s', 0.0):.1f} s of {args.budget_s:.0f} s budget)")
    for key in ("link_efficiency", "transfer_latency_s", "compute_efficiency", "memory_efficiency",
                "unit_overhead_s", "hop_latency_s", "hop_bandwidth_bytes_per_s", "startup_s", "dispatch_s",
                "handoff_s", "step_start_s", "unit_wake_s", "worker_after_hop_s", "worker_after_token_s",
                "host_cores", "host_cores_many", "compute_interference_per_gbps",
                "compute_interference_per_gbps_long", "copy_interference_per_job", "copy_cpu_s_per_byte",
                "unit_load_cpu_s"):
        value = getattr(params, key)
        print(f"  {key:34s} {'-' if value is None else format(value, '.4g')}")
    for name, value in params.link_bandwidth_overrides_bytes_per_s.items():
        print(f"  override {name:19s} {value:.4g} bytes/s")
    print(f"  residuals (median, p95)      {prov.get('residuals_rel_median_p95')}")
    for profile in params.compute_profiles:
        print(f"  compute profile {profile.shape} ({profile.info.get('model')}): decode fit residuals "
              f"{profile.info.get('decode_fit_residuals_rel_median_p95', {}).get('layer')}")
    if prov.get("bound"):
        print(f"  efficiency at its bound: adjusted peaks {prov['bound']}")
    return 0


def add_calibrate_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``calibrate``: microbenchmarks on real devices -> a params YAML with provenance."""
    p = subparsers.add_parser("calibrate", help="measure this machine with executor microbenchmarks and "
                                                "write calibrated cost parameters")
    p.add_argument("--devices", default="cpu:2", help="cpu:N virtual devices or cuda:0,1 (default cpu:2)")
    p.add_argument("--model", required=True,
                   help="model preset (opt-tiny, llama-tiny, opt-125m, ...); a comma list profiles the compute "
                        "of every listed model (the first drives the load, copy and runtime phases)")
    p.add_argument("--out", required=True, help="params YAML to write, e.g. scenarios/params/NAME.yaml")
    p.add_argument("--budget-s", type=float, default=300.0, help="wall-clock budget in seconds (default 300)")
    p.add_argument("--link-gbps", type=float, default=None,
                   help="emulated per-link cap in GB/s on CPU virtual devices (as executor.link_bandwidth_gbps)")
    p.add_argument("--dtype", default=None, help="default float32 on CPU, float16 on CUDA")
    p.add_argument("--gpu-preset", default=None, help="GPU preset the efficiencies refer to "
                                                       "(default cpu-virtual on CPU)")
    p.add_argument("--cache-dir", default="runs/checkpoints", help="where random checkpoints are cached")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--passes", type=int, default=1,
                   help="measurement passes within the budget, merged by the median of each fitted value "
                        "(a machine whose speed drifts over minutes; default 1)")
    p.set_defaults(func=_cmd_calibrate)
    return p


def _cmd_validate(args: argparse.Namespace) -> int:
    from calibration.validate import run_validate_command

    return run_validate_command(args)


def add_validate_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``validate``: simulator vs executor on one scenario (or a suite folder) with given params."""
    p = subparsers.add_parser("validate", help="compare the simulator with the executor on a scenario")
    p.add_argument("scenario", nargs="?", help="scenario YAML (or use --suite DIR)")
    p.add_argument("--params", required=True, help="params YAML (from pipeboost calibrate)")
    p.add_argument("--threshold", type=float, default=0.10,
                   help="fail (exit 1) when the median relative error exceeds this (default 0.10)")
    p.add_argument("--out", default=None, help="output folder (default runs/validate-NAME)")
    p.add_argument("--suite", default=None, help="run every scenario of this folder and write one table")
    p.add_argument("--quick", action="store_true", help="with --suite: only the scenarios marked quick")
    p.add_argument("--repeats", type=int, default=1,
                   help="executor runs per scenario; each measured quantity is their median (default 1)")
    p.add_argument("--speed-probe", action="store_true",
                   help="with --suite: measure the machine's speed once per round (calibration's in-run runs) "
                        "and also print the suite re-simulated with it (its goal lines and exit status: with that speed)")
    p.set_defaults(func=_cmd_validate)
    return p
