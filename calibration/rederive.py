"""Re-derive parameters of calibrated files for a newer simulator, from what the files themselves hold.

Two terms, each named with ``--term`` (a file that has been re-derived for a term is left as it is):

* ``copy_interference``: until session 5, :func:`calibration.bench_host.copy_interference_per_job` divided
  the loaders' slowdown by the devices computing only; the simulator now multiplies that count by the
  cores' oversubscription ``max(1, computing / host_cores)`` (:mod:`sim.interference`), and the estimator
  divides it out. A pass's coefficient and ``host_cores`` are both kept in the provenance
  (``pass_values``), so an older file's value is re-derived exactly: ``gamma_i / max(1, n / host_cores_i)``
  per pass ``i`` (``n``: the devices it computed on), then the passes' median, as
  :func:`calibration.passes.median_params` merges them. Only for files calibrated before session 5.
* ``copy_cpu``: until session 6, calibration measured the loaders' CPU per byte copied
  (``provenance.copy_cpu_s_per_byte``, the first pass's) but wrote ``copy_cpu_s_per_byte: 0``; the
  simulator now charges it on the host cores (:mod:`sim.hostcpu`), so a file with host cores and 0 takes
  the measured value.

``python -m calibration.rederive --term copy_cpu [--term copy_interference] --out-dir DIR IN...`` writes
each re-derived file under ``DIR``.
"""

from __future__ import annotations

import statistics
from typing import Sequence

from pipeboost.costs import CostParams
from pipeboost.errors import PipeBoostError, report_error
from sim.hostcpu import oversubscription

MARK = "copy_interference_rederived"
COPY_CPU_MARK = "copy_cpu_rederived"


def devices_computed_on(params: CostParams, source: str) -> int:
    """Devices the calibration computed on, from ``provenance.devices.spec`` (``cpu:2`` -> 2)."""
    spec = str((params.provenance.get("devices") or {}).get("spec", ""))
    _, _, rest = spec.partition(":")
    try:
        return len(rest.split(",")) if "," in rest else int(rest)
    except ValueError:
        raise PipeBoostError(f"{source}: provenance.devices.spec is {spec!r}, expected a spec such as 'cpu:2'; "
                             "re-derive only files written by pipeboost calibrate") from None


def rederive_copy_interference(params: CostParams, source: str = "params") -> CostParams:
    """``params`` with ``copy_interference_per_job`` re-derived from its passes (module docstring)."""
    if params.provenance.get(MARK):
        return params
    values = params.provenance.get("pass_values") or {}
    gammas, cores = values.get("copy_interference_per_job"), values.get("host_cores")
    if not gammas or not cores or len(gammas) != len(cores) or any(c is None for c in cores):
        raise PipeBoostError(f"{source}: provenance.pass_values needs copy_interference_per_job and host_cores "
                             "for every pass (a CPU calibration with --passes); this file has neither")
    n = devices_computed_on(params, source)
    per_pass = [float(g) / oversubscription(n, float(c)) for g, c in zip(gammas, cores)]
    provenance = {**params.provenance, MARK: True,
                  "pass_values": {**values, "copy_interference_per_job": per_pass}}
    return params.with_(copy_interference_per_job=float(statistics.median(per_pass)), provenance=provenance)


def rederive_copy_cpu(params: CostParams, source: str = "params") -> CostParams:
    """``params`` with ``copy_cpu_s_per_byte`` from its provenance when it has host cores and 0 (module
    docstring); unchanged otherwise."""
    if params.provenance.get(COPY_CPU_MARK) or params.host_cores is None or params.copy_cpu_s_per_byte > 0:
        return params
    value = params.provenance.get("copy_cpu_s_per_byte")
    if value is None:
        raise PipeBoostError(f"{source}: provenance.copy_cpu_s_per_byte is missing; re-derive only files written "
                             "by pipeboost calibrate on CPU virtual devices")
    return params.with_(copy_cpu_s_per_byte=float(value), provenance={**params.provenance, COPY_CPU_MARK: True})


TERMS = {"copy_interference": (rederive_copy_interference, "copy_interference_per_job"),
         "copy_cpu": (rederive_copy_cpu, "copy_cpu_s_per_byte")}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m calibration.rederive --term T [--term T] --out-dir DIR IN...``: re-derive each file."""
    import argparse
    from pathlib import Path

    from pipeboost.scenario import load_params_file, save_params_file

    parser = argparse.ArgumentParser(prog="python -m calibration.rederive", description=main.__doc__.splitlines()[0])
    parser.add_argument("--term", action="append", required=True, choices=sorted(TERMS),
                        help="the term to re-derive (repeat for both)")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("files", nargs="+")
    args = parser.parse_args(argv)
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    try:
        for name in args.files:
            old = new = load_params_file(name)
            for term in args.term:
                new = TERMS[term][0](new, name)
            out = Path(args.out_dir) / Path(name).name
            save_params_file(new, out)
            changes = ", ".join(f"{TERMS[t][1]} {getattr(old, TERMS[t][1]):.4g} -> {getattr(new, TERMS[t][1]):.4g}"
                                for t in args.term)
            print(f"wrote {out}: {changes}")
    except PipeBoostError as exc:
        return report_error(exc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
