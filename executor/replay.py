"""Replay a scenario on the executor: the same plan, workload and faults the simulator runs.

``pipeboost run SCENARIO --engine executor`` calls :func:`replay_scenario`. The workload is the scenario's
own request stream (same seed, same generator as the simulator), cut to ``executor.max_requests`` and with
arrival and fault times multiplied by ``executor.time_scale`` so that a CPU machine can keep up. The model
is the scenario's checkpoint folder (``executor.model_dir``) or, when none is given, a seeded random
checkpoint of the scenario's model config made once and cached beside the run folder.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from executor.checkpoint import cached_checkpoint
from executor.engine import ExecutorResult, run_executor
from pipeboost.errors import PlanError, ScenarioError
from pipeboost.policies import build_plan, recovery_policy
from pipeboost.scenario_model import Scenario
from pipeboost.workload import Request, generate_requests

log = logging.getLogger(__name__)


def scenario_requests(scenario: Scenario) -> list[Request]:
    """The scenario's requests as the executor replays them (capped and time-scaled)."""
    requests = generate_requests(scenario.workload, scenario.rng("arrivals"), scenario.base_dir)
    cap = scenario.executor.max_requests
    if cap is not None:
        requests = requests[:cap]
    scale = scenario.executor.time_scale
    return [dataclasses.replace(r, arrival_s=r.arrival_s * scale) for r in requests]


def scenario_faults(scenario: Scenario) -> list:
    """Scenario faults with time triggers scaled like the arrivals."""
    scale = scenario.executor.time_scale
    return [dataclasses.replace(f, at_s=f.at_s * scale) if f.at_s is not None else f for f in scenario.faults]


def model_dir_for(scenario: Scenario, work_dir: Path) -> Path:
    """The checkpoint folder: ``executor.model_dir`` (relative to the scenario file) or a cached random one."""
    if scenario.executor.model_dir:
        path = Path(scenario.executor.model_dir)
        if not path.is_absolute() and scenario.base_dir is not None:
            path = scenario.base_dir / path
        if not (path / "config.json").exists():
            raise ScenarioError(f"model folder {path} has no config.json", file=scenario.source_file,
                                key_path="executor.model_dir", fix="make one with pipeboost make-checkpoint")
        return path
    name = f"{scenario.model.name}-{scenario.model.dtype}-seed{scenario.seed}"
    return cached_checkpoint(dict(scenario.model_config), Path(work_dir).parent / "checkpoints" / name,
                             seed=scenario.seed, dtype=scenario.model.dtype)


def adapter_options(scenario: Scenario, work_dir: Path) -> dict:
    """``run_executor`` adapter keyword arguments: seeded random PEFT adapters made once per workload adapter
    (beside the run folder), the serving mode, epoch length and the preloaded (most popular) adapters."""
    specs = scenario.workload.adapters
    if not specs:
        return {}
    from executor.lora import make_adapter
    serving = scenario.serving
    folders = {}
    for i, spec in enumerate(specs):
        path = Path(work_dir).parent / "adapters" / f"{scenario.model.name}-{scenario.model.dtype}-{spec.name}"
        if not (path / "adapter_config.json").exists():
            make_adapter(dict(scenario.model_config), path, spec.rank, spec.alpha, spec.target_modules,
                         seed=scenario.seed * 1000 + i, dtype=scenario.model.dtype)
        folders[spec.name] = path
    preload = [s.name for s in specs] if serving.adapter_placement == "all" else \
        [s.name for s in specs[:serving.adapter_preload]]
    return {"adapters": folders, "adapter_mode": serving.adapter_mode,
            "adapter_epoch_s": serving.adapter_epoch_s * scenario.executor.time_scale, "adapter_preload": preload}


def replay_scenario(scenario: Scenario, work_dir: Path) -> ExecutorResult:
    """Run the scenario's plan on the devices of ``scenario.executor``; returns trace and tokens."""
    if scenario.policies.mode == "tensor_parallel":
        raise ScenarioError("the executor does not run tensor_parallel plans", file=scenario.source_file,
                            key_path="policies.mode", fix="run it with --engine sim, or use another mode")
    if scenario.random_failures is not None:
        log.warning("random_failures are simulated only; the executor replays the listed faults")
    plan = build_plan(scenario)
    link = scenario.executor.link_bandwidth_gbps
    try:
        return run_executor(plan, model_dir_for(scenario, work_dir), scenario_requests(scenario),
                            scenario_faults(scenario), devices=scenario.executor.devices,
                            link_bandwidth_bytes_per_s=link * 1e9 if link else None,
                            recovery_policy=recovery_policy(scenario.policies.recovery), seed=scenario.seed,
                            max_batch_size=scenario.serving.max_batch_size,
                            host_pool=None if scenario.serving.source == "host" else False,
                            **adapter_options(scenario, work_dir))
    except PlanError as exc:
        raise ScenarioError(str(exc), file=scenario.source_file, key_path="executor.devices",
                            fix=f"give at least {len(plan.gpus)} devices (serving.cold_start_gpus)") from None
