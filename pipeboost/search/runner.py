"""The search loop: optuna ask/tell in this process, evaluations in a pool, results as tidy rows.

``run_search(scenario, space, config)`` keeps up to ``config.jobs`` evaluations in flight, tells optuna
each result with its constraint violations, and returns one row per trial with the Pareto front marked.
With ``config.storage`` (e.g. ``sqlite:///search.db``) the study persists: running the same command again
resumes it, evaluating only the trials still missing from ``config.trials`` (trials left running by an
interrupted run are evaluated again with the parameters they were given).
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from typing import Any

import optuna

from pipeboost.errors import PipeBoostError
from pipeboost.scenario_model import Scenario
from pipeboost.search.evaluate import Evaluator, simulate_metrics, timed_call
from pipeboost.search.pools import Submit, open_pool
from pipeboost.search.samplers import (CONSTRAINTS_ATTR, make_sampler, record_constraints, resolve_sampler_name,
                                       suggest)
from pipeboost.search.space import SearchSpace
from pipeboost.search.tidy import pareto_mask

log = logging.getLogger(__name__)
_FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED)
_BIG = 1e30  # violation recorded for a missing or non-finite metric (optuna needs finite numbers)


@dataclass(frozen=True)
class SearchConfig:
    """How to search: total ``trials`` in the study, parallel ``jobs``, sampler name, optional storage URL
    and study name (for resuming), sampler ``seed`` and an optional Ray address."""

    trials: int = 20
    jobs: int = 1
    sampler: str = "auto"
    storage: str | None = None
    study_name: str | None = None
    seed: int = 0
    ray_address: str | None = None


@dataclass
class SearchResult:
    study: optuna.Study
    space: SearchSpace
    sampler: str
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def front(self) -> list[dict[str, Any]]:
        """Rows on the Pareto front of the feasible trials (one row: the best trial)."""
        return [r for r in self.rows if r["pareto"]]


def run_search(scenario: Scenario, space: SearchSpace, config: SearchConfig,
               evaluate: Evaluator = simulate_metrics) -> SearchResult:
    """Search ``space`` around ``scenario`` (see the module docstring); ``evaluate`` must be picklable."""
    if config.trials < 1 or config.jobs < 1:
        raise PipeBoostError("--trials and --jobs must be at least 1")
    sampler_name = resolve_sampler_name(space, config.sampler, config.trials)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(
            storage=config.storage, study_name=config.study_name or f"{scenario.name}-search",
            directions=list(space.directions), load_if_exists=True,
            sampler=make_sampler(space, sampler_name, config.trials, config.seed))
    except ValueError as exc:
        raise PipeBoostError(f"cannot open study: {exc} (use another --study-name for a different space)") from None
    stale = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.RUNNING]
    finished = sum(t.state in _FINISHED for t in study.get_trials(deepcopy=False))
    budget = config.trials - finished - len(stale)
    if sampler_name == "grid":
        budget = min(budget, (space.grid_size() or 0) - finished - len(stale))
    log.info("study %s: %d finished, %d to resume, %d new trials (%s)", study.study_name, finished, len(stale),
             max(budget, 0), sampler_name)
    with open_pool(config.jobs, config.ray_address) as submit:
        _drive(study, space, scenario, evaluate, submit, config.jobs, stale, max(budget, 0))
    return SearchResult(study, space, sampler_name, trial_rows(study, space))


def _drive(study: optuna.Study, space: SearchSpace, scenario: Scenario, evaluate: Evaluator, submit: Submit,
           jobs: int, stale: list[optuna.trial.FrozenTrial], budget: int) -> None:
    """Keep up to ``jobs`` evaluations in flight until ``stale`` are redone and ``budget`` new ones told."""
    pending: dict[Future, optuna.Trial] = {}
    todo = [(optuna.Trial(study, t._trial_id), dict(t.params)) for t in stale]
    asked = 0
    while todo or asked < budget or pending:
        while len(pending) < jobs and (todo or asked < budget):
            if todo:
                trial, params = todo.pop(0)
            else:
                trial = study.ask()
                params, asked = suggest(trial, space), asked + 1
            pending[submit(timed_call, evaluate, scenario, params)] = trial
        done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
        for future in done:
            _tell(study, space, pending.pop(future), future)


def _tell(study: optuna.Study, space: SearchSpace, trial: optuna.Trial, future: Future) -> None:
    """Record one outcome: metrics and violations as user attributes, then objective values or FAIL."""
    try:
        outcome = future.result()
    except Exception as exc:  # a crash in a worker fails this trial only; the search goes on
        log.warning("trial %d crashed: %r", trial.number, exc)
        outcome = {"metrics": {}, "error": f"crash: {exc!r}", "eval_s": None}
    metrics = outcome["metrics"]
    error = outcome["error"]
    values = [metrics.get(o.metric) for o in space.objectives]
    if error is None and not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
        error = "objective metric missing: " + ", ".join(o.metric for o, v in zip(space.objectives, values)
                                                         if v is None)
    violations = [min(c.violation(metrics.get(c.metric)), _BIG) for c in space.constraints]
    trial.set_user_attr("metrics", metrics)
    trial.set_user_attr("eval_s", outcome["eval_s"])
    record_constraints(trial, violations if error is None else [_BIG] * len(violations))
    if error is not None:
        trial.set_user_attr("error", error)
        log.info("trial %d failed: %s", trial.number, error)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    else:
        study.tell(trial, [float(v) for v in values])


def trial_rows(study: optuna.Study, space: SearchSpace) -> list[dict[str, Any]]:
    """One tidy row per finished trial: number, state, parameters, metrics, feasible, pareto, error, eval_s."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.state in _FINISHED]
    rows: list[dict[str, Any]] = []
    for t in sorted(trials, key=lambda t: t.number):
        violations = t.user_attrs.get(CONSTRAINTS_ATTR, [])
        row = {"trial": t.number, "state": t.state.name}
        row.update({p.name: t.params.get(p.name) for p in space.params})
        row.update(t.user_attrs.get("metrics", {}))
        row["feasible"] = t.state == optuna.trial.TrialState.COMPLETE and all(v <= 0 for v in violations)
        row["error"] = t.user_attrs.get("error")
        row["eval_s"] = t.user_attrs.get("eval_s")
        rows.append(row)
    values = [[row.get(o.metric) if row["feasible"] else math.nan for o in space.objectives] for row in rows]
    for row, on_front in zip(rows, pareto_mask(values, space.directions, [r["feasible"] for r in rows])):
        row["pareto"] = on_front
    return rows
