"""Decoder-layer prefill calls on the executor while weights load, per regime, against what the simulator charges.

Runs ``--runs`` executor cold starts of ``--preset`` on ``--devices`` CPU virtual devices (each device loads its
own stage first, then the rest, at ``--link-gbps``), with one request at time zero and one at
``--second-arrival-s``, and groups every decoder-layer prefill call by the devices computing ``k`` (itself
included) and the loaders copying ``c`` at its middle. Per group it prints the median of the call's time over
its profile (the params file's, with its in-run factors) and the simulator's stretch for that regime with the
same params: ``max(1 + beta x GB/s, k / (host_cores - copy_cpu_s_per_byte x bytes/s))`` (the copy term's cap,
or the fair share of the cores the copies leave), the profile's concurrency slowdown on top when ``k >= 2``.

    .venv/bin/python benchmarks/bench_copy_regime.py --params scenarios/params/cpu2-opt125m.yaml \\
        --preset smollm2-135m --devices 4

Session 7 (SmolLM2-135M, four devices, committed params): k = 1, c = 4: 1.56-1.82x against 1.36x simulated;
k = 2, c = 4: 1.97-2.5x against 1.81x. With two devices (k = 1, c = 2): 1.24x against 1.18x.
"""

from __future__ import annotations

import argparse
import collections
import logging
import statistics
import sys
from pathlib import Path

from calibration.bench_profile import _prediction_s, pipeline_plan, prefill_layer_regimes
from pipeboost.errors import PipeBoostError, report_error
from pipeboost.model_config import model_spec_from_hf_config, preset_config
from pipeboost.scenario import load_params_file
from pipeboost.workload import Request

PROMPT_TOKENS = 32


def simulated_stretch(params, profile, k: int, c: int, link_bytes_per_s: float) -> float:
    """The simulator's stretch of a layer call with ``k`` devices computing and ``c`` loaders copying."""
    rate = c * link_bytes_per_s
    cap = 1.0 + params.compute_interference_per_gbps * rate / 1e9
    free = (params.host_cores or float(k)) - params.copy_cpu_s_per_byte * rate
    share = k / free if free > 0 else float("inf")
    model = profile.concurrency_slowdown_for(1.0) if k >= 2 else 0.0
    return max(cap, share) * (1.0 + model)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", required=True, help="params file (its profile of the preset is used)")
    parser.add_argument("--preset", default="smollm2-135m")
    parser.add_argument("--devices", type=int, default=4)
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--link-gbps", type=float, default=2.0)
    parser.add_argument("--second-arrival-s", type=float, default=0.12)
    parser.add_argument("--checkpoints", default="runs/checkpoints", help="folder of random checkpoints")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        from executor.engine import run_executor
        from executor.checkpoint import cached_checkpoint

        params = load_params_file(args.params)
        try:
            config = preset_config(args.preset)
        except KeyError as exc:
            raise PipeBoostError(f"--preset: {exc.args[0]}") from None
        model = model_spec_from_hf_config(config, name=args.preset, dtype="float32")
        profile = params.profile_for(model)
        if profile is None:
            raise PipeBoostError(f"{args.params}: no compute profile of {args.preset}; calibrate it with "
                                 f"--model {args.preset}")
        model_dir = cached_checkpoint(config, Path(args.checkpoints) / f"{args.preset}-float32-seed0")
        link = args.link_gbps * 1e9
        plan = pipeline_plan(args.preset, "float32", args.devices, "pipeboost", "own_stage_first_then_next")
        groups: dict[tuple[int, int], list[float]] = collections.defaultdict(list)
        for _ in range(args.runs):
            requests = [Request(0, 0.0, PROMPT_TOKENS, 1), Request(1, args.second_arrival_s, PROMPT_TOKENS, 1)]
            trace = run_executor(plan, model_dir, requests, devices=f"cpu:{args.devices}", seed=0, timeout_s=300.0,
                                 link_bandwidth_bytes_per_s=link).trace
            for rec, computing, _, copying in prefill_layer_regimes(trace, model, params.host_cores):
                groups[(computing, copying)].append(rec.duration_s / _prediction_s(profile, model, rec, PROMPT_TOKENS))
        print(f"{args.preset} on {args.devices} CPU virtual devices, {args.runs} runs, link {args.link_gbps} GB/s, "
              f"params {Path(args.params).name}")
        print(f"{'computing k':>11s} {'copying c':>9s} {'calls':>6s} {'executor / profile':>18s} {'simulated':>9s}")
        for (k, c), ratios in sorted(groups.items()):
            print(f"{k:>11d} {c:>9d} {len(ratios):>6d} {statistics.median(ratios):>17.2f}x "
                  f"{simulated_stretch(params, profile, k, c, link):>8.2f}x")
    except PipeBoostError as exc:
        return report_error(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
