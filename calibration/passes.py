"""Several calibration passes merged into one parameter set: the median of each fitted value.

On a shared 2-core VM the machine's speed drifts over minutes, and the measurements of one pass share
its window: three passes minutes apart gave copy-on-compute coefficients of 0.024, 0.075 and 0.043 per
GB/s and profiles 2-7% apart. A pass is one full run of :func:`calibration.calibrate.calibrate`'s
phases; :func:`median_params` takes, field by field, the median over the passes:

* every float field (``None`` where any pass has ``None``; for a coefficient a pass leaves unset with too
  few samples, :data:`_MEASURED_IF_ENOUGH`, the median of the passes that set it), each key of
  ``link_bandwidth_overrides_bytes_per_s`` present in every pass;
* each compute profile (matched by shape key): per unit kind, the prefill table on the token counts every
  pass measured and the decode table on the common batches, entry by entry, and the per-token decode
  cost, runtime overhead and concurrency slowdown;
* provenance: the first pass's, plus ``passes`` (how many) and ``pass_values`` (each pass's scalar fields).
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
from typing import Any, Sequence

from pipeboost.compute_profile import UNIT_KINDS, ComputeProfile, KindProfile
from pipeboost.costs import CostParams

log = logging.getLogger(__name__)

CHECKED_FIELDS = ("compute_interference_per_gbps", "compute_interference_per_gbps_long",
                  "copy_interference_per_job", "copy_cpu_s_per_byte", "unit_wake_s")
"""The coefficients :func:`disagreeing_fields` checks: the contention terms, which one disturbed pass moves
most. Latencies fitted near zero (``transfer_latency_s`` of 8e-11 and 4e-20 s) are left out: far apart
in ratio, both nothing."""
DISAGREE_RATIO = 3.0
"""Passes whose positive values of a :data:`CHECKED_FIELDS` coefficient differ by more than this factor
are reported (:func:`disagreeing_fields`): with two passes the median is their mean, and one disturbed pass moves it
(session 10: ``copy_interference_per_job`` 0.40 and 0.023, merged to 0.21, put the suite's load time per
GPU 15% / 41% off; 0.06, another calibration's value, gave 2.6% / 9.8%)."""

_SKIPPED = ("link_bandwidth_overrides_bytes_per_s", "compute_profiles", "provenance")
_MEASURED_IF_ENOUGH = ("compute_interference_per_gbps_long",)
"""Fields a pass leaves None when it saw too few samples: the median of the passes that measured them."""


def _median(values: Sequence[float | None]) -> float | None:
    return None if any(v is None for v in values) else float(statistics.median(values))


def _table(xs_list: Sequence[Sequence[int]], ys_list: Sequence[Sequence[float]]) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """The points every table has, each the median of its values."""
    common = sorted(set(xs_list[0]).intersection(*map(set, xs_list[1:])))
    ys = tuple(float(statistics.median(dict(zip(xs, vals))[x] for xs, vals in zip(xs_list, ys_list)))
               for x in common)
    return tuple(common), ys


def _merge_kind(kinds: Sequence[KindProfile]) -> KindProfile:
    tokens, prefill = _table([k.prefill_tokens for k in kinds], [k.prefill_s for k in kinds])
    batches, decode = _table([k.decode_batches for k in kinds], [k.decode_s for k in kinds])
    return KindProfile(tokens, prefill, batches, decode, float(statistics.median(k.decode_context_s for k in kinds)))


def median_profile(profiles: Sequence[ComputeProfile]) -> ComputeProfile:
    """Profiles of one shape merged (see the module docstring); ``info`` is the first's plus ``passes``."""
    merged = {kind: _merge_kind([p.kind(kind) for p in profiles]) for kind in UNIT_KINDS}
    return dataclasses.replace(profiles[0], embed=merged["embed"], layer=merged["layer"], head=merged["head"],
                               runtime_overhead_s=float(statistics.median(p.runtime_overhead_s for p in profiles)),
                               concurrency_slowdown=float(statistics.median(p.concurrency_slowdown for p in profiles)),
                               prefill_concurrency_slowdown=_median([p.prefill_concurrency_slowdown for p in profiles]),
                               info={**profiles[0].info, "passes": len(profiles),
                                     "pass_in_run_factors": [p.info.get("in_run_factors") for p in profiles]})


def median_params(passes: Sequence[CostParams]) -> CostParams:
    """One parameter set from calibration passes of the same machine and models (module docstring)."""
    if not passes:
        raise ValueError("median_params needs at least one pass")
    if len(passes) == 1:
        return passes[0]
    first = passes[0]
    changes: dict[str, Any] = {}
    scalars: dict[str, list] = {}
    for f in dataclasses.fields(CostParams):
        if f.name in _SKIPPED:
            continue
        values = [getattr(p, f.name) for p in passes]
        if all(isinstance(v, (int, float)) or v is None for v in values):
            measured = [v for v in values if v is not None] if f.name in _MEASURED_IF_ENOUGH else values
            changes[f.name] = _median(measured) if measured else None
            scalars[f.name] = values
    keys = set(first.link_bandwidth_overrides_bytes_per_s).intersection(
        *(set(p.link_bandwidth_overrides_bytes_per_s) for p in passes[1:]))
    changes["link_bandwidth_overrides_bytes_per_s"] = {
        k: float(statistics.median(p.link_bandwidth_overrides_bytes_per_s[k] for p in passes)) for k in sorted(keys)}
    by_shape: dict[str, list[ComputeProfile]] = {}
    for p in passes:
        for prof in p.compute_profiles:
            by_shape.setdefault(prof.shape, []).append(prof)
    changes["compute_profiles"] = tuple(median_profile(by_shape[prof.shape]) for prof in first.compute_profiles
                                        if len(by_shape[prof.shape]) == len(passes))
    disagree = disagreeing_fields(scalars)
    for name, values in disagree.items():
        log.warning("calibrate: the passes disagree on %s (%s, more than %gx apart); the file takes their median "
                    "%.4g: calibrate again in a calmer window, or with --budget-s large enough for a third pass",
                    name, ", ".join(f"{v:.4g}" for v in values), DISAGREE_RATIO, changes[name])
    changes["provenance"] = {**first.provenance, "passes": len(passes), "pass_values": scalars,
                             **({"passes_disagree": disagree} if disagree else {})}
    return dataclasses.replace(first, **changes)


def disagreeing_fields(pass_values: dict[str, list]) -> dict[str, list[float]]:
    """The fields of :data:`CHECKED_FIELDS` whose values over the passes are all positive and more than
    :data:`DISAGREE_RATIO` apart (largest over smallest), with those values."""
    out = {}
    for name in CHECKED_FIELDS:
        numbers = [float(v) for v in pass_values.get(name, []) if v is not None]
        if len(numbers) >= 2 and min(numbers) > 0 and max(numbers) > DISAGREE_RATIO * min(numbers):
            out[name] = numbers
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m calibration.passes --out OUT IN1 IN2 ...``: merge calibrated params files of one machine
    (each already the median of its own passes) by :func:`median_params`, to pool several calibrations."""
    import argparse
    from pathlib import Path

    from pipeboost.errors import PipeBoostError, report_error
    from pipeboost.scenario import load_params_file, save_params_file

    parser = argparse.ArgumentParser(prog="python -m calibration.passes", description=main.__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("files", nargs="+")
    args = parser.parse_args(argv)
    try:
        params = median_params([load_params_file(f) for f in args.files])
        params = params.with_(provenance={**params.provenance, "pooled_files": list(args.files)})
        save_params_file(params, Path(args.out))
        load_params_file(args.out)
    except PipeBoostError as exc:
        return report_error(exc)
    print(f"wrote {args.out}: the median of {len(args.files)} params files")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
