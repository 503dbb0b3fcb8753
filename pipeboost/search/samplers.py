"""Optuna samplers for a search space and the mapping from a space's parameters to ``trial.suggest_*``.

``auto`` picks the grid for a discrete space (lists and integer ranges) that the trial budget can exhaust, TPE for one
objective and NSGA-II for several. Constraints reach the sampler through ``trial.set_constraint`` (optuna
5; the samplers read them) or, on older optuna, through ``constraints_func``, which reads the violations the
runner stores in the trial's user attribute ``constraints`` before ``tell``.
"""

from __future__ import annotations

from typing import Any

import optuna

from pipeboost.errors import PipeBoostError
from pipeboost.search.space import SAMPLERS, SearchSpace

CONSTRAINTS_ATTR = "constraints"
_SET_CONSTRAINT = hasattr(optuna.trial.Trial, "set_constraint")  # optuna >= 5 deprecates constraints_func


class BudgetedGridSampler(optuna.samplers.GridSampler):
    """A grid sampler that leaves stopping to the runner: optuna's ``after_trial`` calls ``study.stop()``,
    which only works inside ``study.optimize``, while the runner uses ask/tell and never asks beyond the grid."""

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, state: Any, values: Any) -> None:
        return None


def constraint_values(trial: optuna.trial.FrozenTrial) -> list[float]:
    """optuna ``constraints_func``: the stored violations (<= 0 feasible); failed trials count as infeasible."""
    return list(trial.user_attrs.get(CONSTRAINTS_ATTR, [1.0]))


def record_constraints(trial: optuna.Trial, violations: list[float]) -> None:
    """Store ``violations`` (<= 0 feasible) where this optuna version's samplers read them."""
    trial.set_user_attr(CONSTRAINTS_ATTR, violations)
    if _SET_CONSTRAINT:
        for i, value in enumerate(violations):
            trial.set_constraint(f"c{i}", value)


def resolve_sampler_name(space: SearchSpace, name: str, trials: int) -> str:
    """The concrete sampler ``auto`` stands for (see the module docstring)."""
    if name not in SAMPLERS:
        raise PipeBoostError(f"unknown sampler {name!r}; use one of: {', '.join(SAMPLERS)}")
    if name != "auto":
        return name
    size = space.grid_size()
    if size is not None and size <= trials:
        return "grid"
    return "tpe" if len(space.objectives) == 1 else "nsga2"


def make_sampler(space: SearchSpace, name: str, trials: int, seed: int) -> optuna.samplers.BaseSampler:
    """An optuna sampler for ``name`` (already resolved), seeded, with the space's constraints."""
    constraints = constraint_values if space.constraints and not _SET_CONSTRAINT else None
    if name == "grid":
        grid = space.grid()
        if grid is None:
            continuous = [p.name for p in space.params if p.grid_values() is None]
            raise PipeBoostError(f"--sampler grid needs discrete parameters; {', '.join(continuous)} "
                                 "is a float range (give a list of values, or use --sampler tpe)")
        return BudgetedGridSampler(grid, seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constraints_func=constraints,
                                          n_startup_trials=max(4, min(10, trials // 4)))
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, constraints_func=constraints,
                                             population_size=max(4, min(50, trials // 4)))
    return optuna.samplers.RandomSampler(seed=seed)


def suggest(trial: optuna.Trial, space: SearchSpace) -> dict[str, Any]:
    """Ask ``trial`` for one value of every parameter of ``space``."""
    params: dict[str, Any] = {}
    for p in space.params:
        if p.kind == "categorical":
            params[p.name] = trial.suggest_categorical(p.name, list(p.choices))
        elif p.kind == "int":
            params[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
        else:
            params[p.name] = trial.suggest_float(p.name, float(p.low), float(p.high), step=p.step, log=p.log)
    return params
