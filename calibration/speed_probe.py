"""The machine's speed during a validation run against its speed at calibration (``suite --speed-probe``).

The 2-core VM's speed drifts by up to 10% within tens of minutes (session 8: the calibration's own in-run
measurement of OPT-125M's decoder-layer prefill read 1.10 of its calibrated value 40 minutes after
calibrating, SmolLM2-135M's 1.02), and every row of a suite run carries that drift. To tell the simulator's
error from the machine's, the suite can repeat, once per round of executor runs, the very measurement that
calibration scales the compute profiles with (:func:`calibration.bench_profile.in_run_factors`: one device,
requests one at a time after the load, each unit's time over its profiled time, per unit kind and phase).
The median over the rounds, per model, is the machine's speed during the run relative to the params file
(:func:`speed_factors`); :func:`with_speed` scales the profiles by it, and the suite re-simulates its
scenarios with those params against the same executor traces, printing the result beside the plain one.

This is a calibration microbenchmark repeated during validation (no suite scenario is used for it, nothing is
fitted to the suite): the compute profiles re-measured in the validation's own minutes, the one part of a
params file that goes stale within the hour on a shared VM (session 9: a suite ran 13-16% slower than the
committed profiles, and a calibration 10 minutes after it measured profiles 36-44% slower than them). With
``--speed-probe`` the suite prints both figures; its goal verdict on the corrected ones and its exit status
come from the re-simulated suite.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
from pathlib import Path
from typing import Iterable

from calibration.bench_profile import in_run_factors, scaled
from executor.checkpoint import cached_checkpoint
from pipeboost.compute_profile import ComputeProfile
from pipeboost.costs import CostParams
from pipeboost.errors import PipeBoostError
from pipeboost.model_config import model_spec_from_hf_config, preset_config
from pipeboost.spec import ModelSpec

log = logging.getLogger(__name__)


@dataclasses.dataclass
class SpeedProbe:
    """Probes ``models`` (``(preset, dtype)`` pairs with a compute profile in ``params``) once per :meth:`run`;
    checkpoints (seed 0) are made once under ``cache``."""

    params: CostParams
    models: tuple[tuple[str, str], ...]
    cache: Path
    rounds: list[dict[str, dict[str, float]]] = dataclasses.field(default_factory=list)

    def run(self) -> dict[str, dict[str, float]]:
        """One probe of every model: ``{preset: {kind/phase: executor time / profiled time}}``, appended to
        :attr:`rounds`."""
        out = {}
        for preset, dtype in self.models:
            model, profile = _profiled(self.params, preset, dtype)
            model_dir = probe_checkpoint(self.cache, preset, dtype)
            out[preset] = in_run_factors(profile, model, model_dir, preset, dtype, runs=1, long_prompt_tokens=None)
        self.rounds.append(out)
        log.info("speed probe: %s", out)
        return out


def probe_checkpoint(cache: Path, preset: str, dtype: str) -> Path:
    """The probes' checkpoint of ``preset`` at ``dtype`` (random weights, seed 0), made once under ``cache``."""
    return cached_checkpoint(preset, cache / f"{preset}-{dtype}-seed0", seed=0, dtype=dtype)


def probed_models(params: CostParams, presets: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """The ``(preset, dtype)`` pairs, once each in first-seen order, that have a compute profile in ``params``
    (the others are costed by the roofline, which the probe does not scale)."""
    return tuple(pair for pair in dict.fromkeys(presets) if _profiled(params, *pair)[1] is not None)


def _profiled(params: CostParams, preset: str, dtype: str) -> tuple[ModelSpec, ComputeProfile | None]:
    """The model spec of ``preset`` at ``dtype`` and its compute profile in ``params`` (None: none)."""
    model = model_spec_from_hf_config(preset_config(preset), name=preset, dtype=dtype)
    return model, params.profile_for(model)


def speed_factors(rounds: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per model and ``kind/phase``: the median of the rounds' ratios (rounds that lack a key are skipped)."""
    keys: dict[str, set[str]] = {}
    for probe in rounds:
        for preset, ratios in probe.items():
            keys.setdefault(preset, set()).update(ratios)
    return {preset: {k: float(statistics.median([r[preset][k] for r in rounds if k in r.get(preset, {})]))
                     for k in sorted(ks)} for preset, ks in keys.items()}


def with_speed(params: CostParams, factors: dict[str, dict[str, float]],
               dtypes: dict[str, str] | None = None) -> CostParams:
    """``params`` with the compute profile of each model in ``factors`` (dtype from ``dtypes``, default
    float32) scaled by its factors (:func:`calibration.bench_profile.scaled`: prefill and decode of
    embedding, layers and head)."""
    profiles = list(params.compute_profiles)
    for preset, model_factors in factors.items():
        _, profile = _profiled(params, preset, (dtypes or {}).get(preset, "float32"))
        if profile is None:
            raise PipeBoostError(f"speed probe: the params have no compute profile of {preset}")
        index = profiles.index(profile)
        profiles[index] = scaled(profile, model_factors)
    return params.with_(compute_profiles=tuple(profiles))
