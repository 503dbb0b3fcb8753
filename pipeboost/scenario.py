"""Scenario loading: the one place YAML is parsed, strictly.

``load_scenario(path)`` reads a YAML file; ``scenario_from_dict(doc, file)`` validates an already parsed
document; ``scenario_to_dict`` / ``dump_scenario_yaml`` write it back in SI units so that
``Scenario -> dict -> YAML -> Scenario`` is lossless. Every problem is a :class:`ScenarioError` naming the
file, the key path and the fix; no other exception escapes for any document.

Top-level keys: ``name``, ``seed``, ``model``, ``cluster``, ``serving``, ``policies``, ``workload``,
``faults``, ``random_failures``, ``params``, ``executor``. See ``README.md`` for a commented example.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from pipeboost.config_reader import Node
from pipeboost.costs import CostParams
from pipeboost.errors import PlanError, ScenarioError
from pipeboost.model_config import preset_config
from pipeboost.scenario_model import ExecutorSpec, PolicySpec, Scenario, ServingSpec
from pipeboost.scenario_sections import (parse_cluster, parse_executor, parse_fault, parse_model,
                                         parse_params, parse_policies, parse_random_failures, parse_serving,
                                         parse_workload)
from pipeboost.workload import WorkloadSpec

__all__ = ["Scenario", "load_scenario", "scenario_from_dict", "scenario_to_dict", "dump_scenario_yaml",
           "load_params_file", "save_params_file"]


def _read_yaml(path: Path) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError("file does not exist", file=str(path), fix="check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"cannot read file ({exc})", file=str(path)) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ScenarioError(f"not valid YAML{where}: {getattr(exc, 'problem', exc)}", file=str(path),
                            fix="fix the YAML syntax") from None


def load_scenario(path: str | Path) -> Scenario:
    """Load and validate a scenario YAML file."""
    return scenario_from_dict(_read_yaml(Path(path)), file=str(path))


def _check_consistency(root: Node, scenario: Scenario) -> None:
    n_gpus = scenario.topology.num_gpus
    if scenario.serving.cold_start_gpus > n_gpus:
        raise root.error(f"{scenario.serving.cold_start_gpus} cold-start GPUs but the cluster has {n_gpus}",
                         f"use at most {n_gpus}", key_path="serving.cold_start_gpus")
    if scenario.num_stages > scenario.serving.cold_start_gpus:
        raise root.error(f"{scenario.num_stages} stages but only {scenario.serving.cold_start_gpus} cold-start GPUs",
                         "use at most one stage per GPU, or raise serving.cold_start_gpus",
                         key_path="policies.num_stages")
    if scenario.num_stages > scenario.model.num_layers:
        raise root.error(f"{scenario.num_stages} stages but the model has {scenario.model.num_layers} layers",
                         f"use at most {scenario.model.num_layers} stages", key_path="policies.num_stages")
    if scenario.serving.source == "nvme" and scenario.topology.host.nvme_bandwidth_bytes_per_s is None:
        raise root.error("source nvme but the cluster host has no NVMe", "set cluster.host.nvme_bandwidth_gbps "
                         "or use source: host", key_path="serving.source")
    from pipeboost.policies import build_plan

    try:
        build_plan(scenario)
    except PlanError as exc:
        raise root.error(f"no valid plan: {exc}", None, key_path="policies") from None


def scenario_from_dict(doc: Any, file: str | None = None) -> Scenario:
    """Validate a parsed document into a :class:`Scenario` (raises :class:`ScenarioError` only)."""
    root = Node(doc, "", file)
    try:
        return _build(root, file)
    except ScenarioError:
        raise
    except RecursionError:
        raise root.error("document nests too deeply") from None


def _section(root: Node, key: str, parser: Any, default: Any) -> Any:
    node = root.child(key, None)
    return default if node is None else parser(node)


def _build(root: Node, file: str | None) -> Scenario:
    name = root.get("name", str, Path(file).stem if file else "scenario")
    seed = root.get("seed", int, 0, check=lambda v: None if v >= 0 else "must not be negative")
    model, config, model_preset = parse_model(root.child("model"))
    topology, cluster_preset = parse_cluster(root.child("cluster"))
    serving = _section(root, "serving", parse_serving, ServingSpec())
    policies = _section(root, "policies", parse_policies, PolicySpec())
    workload = _section(root, "workload", parse_workload, WorkloadSpec())
    faults = tuple(parse_fault(n, topology.num_gpus, model) for n in root.children("faults"))
    rnd = root.child("random_failures", None)
    params = _section(root, "params", parse_params, CostParams())
    executor = _section(root, "executor", parse_executor, ExecutorSpec())
    root.done()
    scenario = Scenario(name=name, seed=seed, model=model, model_config=config, topology=topology,
                        policies=policies, serving=serving, workload=workload, faults=faults,
                        random_failures=parse_random_failures(rnd) if rnd else None, params=params,
                        executor=executor, model_preset=model_preset, cluster_preset=cluster_preset,
                        source_file=file)
    _check_consistency(root, scenario)
    return scenario


# ---- writing --------------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _model_dict(scenario: Scenario) -> dict[str, Any]:
    data: dict[str, Any] = {"name": scenario.model.name, "dtype": scenario.model.dtype}
    if scenario.model_preset and preset_config(scenario.model_preset) == scenario.model_config:
        data["preset"] = scenario.model_preset
    else:
        data["hf_config"] = dict(scenario.model_config)
    return data


def _cluster_dict(scenario: Scenario) -> dict[str, Any]:
    topo = scenario.topology
    gpu = topo.gpu
    data: dict[str, Any] = {
        "gpu": {"name": gpu.name, "memory_bytes": gpu.memory_bytes, "peak_flops": gpu.peak_flops,
                "memory_bandwidth_bytes_per_s": gpu.memory_bandwidth_bytes_per_s},
        "host": {"memory_bandwidth_bytes_per_s": topo.host.memory_bandwidth_bytes_per_s,
                 "nvme_bandwidth_bytes_per_s": topo.host.nvme_bandwidth_bytes_per_s,
                 "pinned_pool": topo.host.pinned_pool},
        "switches": [{"name": s.name, "bandwidth_bytes_per_s": s.bandwidth_bytes_per_s, "latency_s": s.latency_s,
                      "upstream": s.upstream} for s in topo.switches],
        "links": [{"gpu": l.gpu, "bandwidth_bytes_per_s": l.bandwidth_bytes_per_s, "latency_s": l.latency_s,
                   "upstream": l.upstream} for l in topo.gpu_links],
        "nodes": topo.nodes,
    }
    if scenario.cluster_preset:
        data["preset"] = scenario.cluster_preset
    return data


def _workload_dict(workload: WorkloadSpec) -> dict[str, Any]:
    data = _plain(workload)
    arrivals = data.pop("arrivals")
    arrivals["file"] = arrivals.pop("trace_file")
    data["arrivals"] = arrivals
    return data


def scenario_to_dict(scenario: Scenario) -> dict[str, Any]:
    """A plain dict that :func:`scenario_from_dict` turns back into an equal scenario."""
    faults = []
    for f in scenario.faults:
        fault = {"gpu": f.gpu, "at_s": f.at_s, "loading_layer": f.loading_unit, "decode_step": f.decode_step}
        if f.prefill:
            fault["prefill"] = True
        faults.append({k: v for k, v in fault.items() if v is not None})
    data = {
        "name": scenario.name, "seed": scenario.seed, "model": _model_dict(scenario),
        "cluster": _cluster_dict(scenario), "serving": _plain(scenario.serving),
        "policies": _plain(scenario.policies), "workload": _workload_dict(scenario.workload),
        "faults": faults, "params": scenario.params.to_dict(), "executor": _plain(scenario.executor),
    }
    if scenario.random_failures is not None:
        data["random_failures"] = _plain(scenario.random_failures)
    return data


def dump_scenario_yaml(scenario: Scenario) -> str:
    """YAML text of :func:`scenario_to_dict` (block style, keys in a stable order)."""
    return yaml.safe_dump(scenario_to_dict(scenario), sort_keys=False)


# ---- cost parameter files -------------------------------------------------------------------------
def load_params_file(path: str | Path) -> CostParams:
    """Read a calibrated ``CostParams`` YAML (``scenarios/params/*.yaml``), strictly."""
    doc = _read_yaml(Path(path))
    return parse_params(Node(doc, "", str(path)))


def save_params_file(params: CostParams, path: str | Path) -> None:
    """Write ``params`` (with provenance) as YAML."""
    Path(path).write_text(yaml.safe_dump(params.to_dict(), sort_keys=False), encoding="utf-8")
