"""Parsers for each scenario section: a :class:`Node` in, a validated spec out.

Units: a quantity may be written in SI (``bandwidth_bytes_per_s``, ``latency_s``, ``memory_bytes``) or in the
friendly unit (``bandwidth_gbps`` = GB/s = 1e9 bytes/s, ``latency_us``, ``memory_gb``/``memory_gib``).
:func:`pipeboost.scenario.scenario_to_dict` writes SI, so a round trip is exact.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from pipeboost.config_reader import Node, at_least, in_range, positive
from pipeboost.costs import CostParams
from pipeboost.errors import ScenarioError
from pipeboost.faults import FaultSpec, RandomFailureSpec
from pipeboost.hardware import GPU_PRESETS, TOPOLOGY_PRESETS
from pipeboost.model_config import MODEL_PRESETS, load_hf_config, model_spec_from_hf_config, preset_config
from pipeboost.plan import SERVING_MODES
from pipeboost.scenario_model import ExecutorSpec, PolicySpec, ServingSpec
from pipeboost.spec import DTYPE_BYTES, GPULinkSpec, GPUSpec, HostSpec, LinkSpec, ModelSpec, Topology
from pipeboost.workload import (ARRIVAL_KINDS, LENGTH_KINDS, AdapterSpec, ArrivalSpec, LengthDist,
                                WorkloadSpec)

BANDWIDTH = {"_bytes_per_s": 1.0, "_gbps": 1e9}
LATENCY = {"_s": 1.0, "_us": 1e-6}
MEMORY = {"_bytes": 1.0, "_gb": 1e9, "_gib": float(1024**3)}
FLOPS = {"_flops": 1.0, "_tflops": 1e12}
ADAPTER_MODES = ("unmerged", "merged")
ADAPTER_PLACEMENTS = ("all", "popular")
REPLICA_PREFILL_MODES = ("batched", "sequential")
REPLICA_DISPATCH_MODES = ("shared_queue", "least_busy")
MAX_LAYERS = 1024
MAX_DIMENSION = 10_000_000


def resolve(node: Node, relative: str) -> Path:
    """A path written in the scenario, relative to the scenario file's folder."""
    path = Path(relative)
    if not path.is_absolute() and node.file:
        path = Path(node.file).parent / path
    return path


# ---- model ---------------------------------------------------------------------------------------
def parse_model(node: Node) -> tuple[ModelSpec, dict[str, Any], str | None]:
    sources = [k for k in ("preset", "config", "hf_config") if node.has(k)]
    if len(sources) != 1:
        raise node.error("needs exactly one of preset, config, hf_config",
                         f"e.g. preset: opt-1.3b (valid presets: {', '.join(MODEL_PRESETS)})")
    dtype = node.choice("dtype", tuple(DTYPE_BYTES), None)
    name = node.get("name", str, None)
    preset = None
    if sources[0] == "preset":
        preset = node.choice("preset", tuple(MODEL_PRESETS))
        config = preset_config(preset)
    elif sources[0] == "config":
        config = load_hf_config(resolve(node, node.get("config", str)))
    else:
        config = dict(node.child("hf_config").data)
    node.done()
    try:
        spec = model_spec_from_hf_config(config, name or preset or "model", dtype)
    except (ValueError, TypeError, ZeroDivisionError, OverflowError) as exc:
        raise node.error(f"model config rejected: {exc}", "fix the config values (positive integers)",
                         sources[0]) from None
    sizes = (spec.num_layers, spec.hidden_size, spec.num_heads, spec.num_kv_heads, spec.intermediate_size,
             spec.vocab_size, spec.max_position_embeddings, spec.head_dim, spec.word_embed_proj_dim)
    if spec.num_layers > MAX_LAYERS or max(sizes) > MAX_DIMENSION:
        raise node.error(f"sizes {sizes} are beyond any supported model",
                         f"use at most {MAX_LAYERS} layers and dimensions up to {MAX_DIMENSION}", sources[0])
    if min(sizes) < 1 or spec.num_heads % spec.num_kv_heads:
        raise node.error("model config has a non-positive size or heads not divisible by KV heads",
                         "check num_hidden_layers, hidden_size, num_attention_heads, num_key_value_heads, "
                         "intermediate_size/ffn_dim, vocab_size, max_position_embeddings", sources[0])
    return spec, config, preset


# ---- cluster --------------------------------------------------------------------------------------
def _parse_gpu(node: Node, base: GPUSpec | None) -> GPUSpec:
    if node.has("preset"):
        base = GPU_PRESETS[node.choice("preset", tuple(GPU_PRESETS))]
    name = node.get("name", str, base.name if base else None)
    memory = node.quantity("memory", MEMORY, base.memory_bytes if base else None)
    flops = node.quantity("peak", FLOPS, base.peak_flops if base else None)
    mem_bw = node.quantity("memory_bandwidth", BANDWIDTH, base.memory_bandwidth_bytes_per_s if base else None)
    node.done()
    if None in (name, memory, flops, mem_bw):
        raise node.error("incomplete GPU", "give preset, or name, memory_gb, peak_tflops, memory_bandwidth_gbps")
    return GPUSpec(name, int(memory), flops, mem_bw)


def _parse_host(node: Node, base: HostSpec | None) -> HostSpec:
    mem = node.quantity("memory_bandwidth", BANDWIDTH, base.memory_bandwidth_bytes_per_s if base else None)
    nvme = node.quantity("nvme_bandwidth", BANDWIDTH, base.nvme_bandwidth_bytes_per_s if base else None)
    pinned = node.get("pinned_pool", bool, base.pinned_pool if base else True)
    node.done()
    if mem is None:
        raise node.error("is required", "add memory_bandwidth_gbps", "memory_bandwidth_gbps")
    return HostSpec(mem, nvme, pinned)


def _parse_switch(node: Node) -> LinkSpec:
    spec = LinkSpec(node.get("name", str), node.quantity("bandwidth", BANDWIDTH),
                    node.quantity("latency", LATENCY, 0.0, strictly_positive=False), node.get("upstream", str, None))
    node.done()
    return spec


def _parse_link(node: Node) -> GPULinkSpec:
    spec = GPULinkSpec(node.get("gpu", int, check=at_least(0)), node.quantity("bandwidth", BANDWIDTH),
                       node.quantity("latency", LATENCY, 0.0, strictly_positive=False), node.get("upstream", str, None))
    node.done()
    return spec


def _check_tree(node: Node, switches: tuple[LinkSpec, ...], links: tuple[GPULinkSpec, ...]) -> None:
    names = [s.name for s in switches]
    if len(set(names)) != len(names):
        raise node.error("two switches share a name", "give every switch a distinct name", "switches")
    for i, link in enumerate(links):
        if link.gpu != i:
            raise node.error(f"gpu must be {i} (links list GPUs 0..N-1 in order)", "renumber the links",
                             key_path=f"{node.key_path('links')}[{i}].gpu")
    by_name = {s.name: s for s in switches}
    for where, items in (("switches", switches), ("links", links)):
        for i, item in enumerate(items):
            seen, up = set(), item.upstream
            while up is not None:
                if up not in by_name:
                    raise node.error(f"upstream {up!r} is not a switch", f"use one of: {', '.join(names) or '(none)'}",
                                     key_path=f"{node.key_path(where)}[{i}].upstream")
                if up in seen:
                    raise node.error(f"upstream chain loops through {up!r}", "make the switches a tree",
                                     key_path=f"{node.key_path(where)}[{i}].upstream")
                seen.add(up)
                up = by_name[up].upstream


def parse_cluster(node: Node) -> tuple[Topology, str | None]:
    preset = node.choice("preset", tuple(TOPOLOGY_PRESETS), None)
    base = TOPOLOGY_PRESETS[preset] if preset else None
    gpu_node = node.child("gpu", None)
    gpu = _parse_gpu(gpu_node, base.gpu if base else None) if gpu_node else (base.gpu if base else None)
    host_node = node.child("host", None)
    host = _parse_host(host_node, base.host if base else None) if host_node else (base.host if base else None)
    switches = tuple(_parse_switch(n) for n in node.children("switches")) if node.has("switches") else \
        (base.switches if base else ())
    links = tuple(_parse_link(n) for n in node.children("links")) if node.has("links") else \
        (base.gpu_links if base else ())
    nodes = node.get("nodes", int, 1, check=at_least(1))
    node.done()
    if gpu is None or host is None or not links:
        raise node.error("incomplete cluster", f"give preset (one of {', '.join(TOPOLOGY_PRESETS)}) "
                         "or gpu, host and links")
    _check_tree(node, switches, links)
    return Topology(gpu, host, switches, links, nodes), preset


# ---- serving, policies, executor ------------------------------------------------------------------
def parse_serving(node: Node) -> ServingSpec:
    spec = ServingSpec(
        cold_start_gpus=node.get("cold_start_gpus", int, 1, check=at_least(1)),
        max_batch_size=node.get("max_batch_size", int, 8, check=at_least(1)),
        keep_alive_s=node.get("keep_alive_s", float, 60.0, check=positive),
        weight_memory_fraction=node.get("weight_memory_fraction", float, 0.9, check=in_range(0.01, 1.0)),
        source=node.choice("source", ("host", "nvme"), "host"),
        adapter_mode=node.choice("adapter_mode", ADAPTER_MODES, "unmerged"),
        adapter_epoch_s=node.get("adapter_epoch_s", float, 0.5, check=positive),
        adapter_placement=node.choice("adapter_placement", ADAPTER_PLACEMENTS, "all"),
        adapter_preload=node.get("adapter_preload", int, 1, check=at_least(0)),
        pipeline_micro_batch_size=node.get("pipeline_micro_batch_size", int, None, check=at_least(1)),
        pipeline_max_in_flight=node.get("pipeline_max_in_flight", int, None, check=at_least(1)),
        replica_prefill=node.choice("replica_prefill", REPLICA_PREFILL_MODES, "batched"),
        replica_dispatch=node.choice("replica_dispatch", REPLICA_DISPATCH_MODES, "shared_queue"))
    node.done()
    return spec


def parse_policies(node: Node) -> PolicySpec:
    from pipeboost.policies import policy_names

    spec = PolicySpec(
        mode=node.choice("mode", SERVING_MODES, "pipeboost"),
        partition=node.choice("partition", policy_names("partition"), "even_layers"),
        loading_order=node.choice("loading_order", policy_names("loading_order"), "own_stage_first_then_next"),
        recovery=node.choice("recovery", policy_names("recovery"), "reroute_to_holder"),
        num_stages=node.get("num_stages", int, None, check=at_least(1)))
    node.done()
    return spec


def parse_executor(node: Node) -> ExecutorSpec:
    devices = node.get("devices", str, "cpu:2")
    if not _valid_devices(devices):
        raise node.error(f"devices {devices!r} not understood", "write cpu:N (N virtual devices) or "
                         "cuda:0,1,... (GPU indices)", "devices")
    spec = ExecutorSpec(
        devices=devices,
        link_bandwidth_gbps=node.get("link_bandwidth_gbps", float, None, check=positive),
        model_dir=node.get("model_dir", str, None),
        time_scale=node.get("time_scale", float, 1.0, check=positive),
        max_requests=node.get("max_requests", int, 8, check=at_least(1)))
    node.done()
    return spec


def _valid_devices(text: str) -> bool:
    kind, _, rest = text.partition(":")
    if kind == "cpu":
        return rest.isdigit() and int(rest) >= 1
    if kind == "cuda":
        return bool(rest) and all(p.isdigit() for p in rest.split(","))
    return False


def parse_params(node: Node) -> CostParams:
    """Cost parameters, inline or from ``file:`` (a params YAML such as ``scenarios/params/NAME.yaml``)."""
    if node.has("file"):
        from pipeboost.scenario import load_params_file

        path = resolve(node, node.get("file", str))
        node.done()
        return load_params_file(path)
    defaults = CostParams()
    values: dict[str, Any] = {}
    for field_name, default in defaults.to_dict().items():
        if field_name == "provenance":
            prov = node.child("provenance", None)
            values[field_name] = dict(prov.data) if prov else dict(default)
        elif field_name == "compute_profiles":
            values[field_name] = _parse_profiles(node)
        elif field_name == "link_bandwidth_overrides_bytes_per_s":
            over = node.child(field_name, None)
            values[field_name] = {k: over.get(k, float, check=positive) for k in over.data} if over else {}
        else:
            values[field_name] = node.get(field_name, float, default, check=_param_check(field_name))
    node.done()
    if values.get("host_cores") is not None and values["compute_interference_per_job"] > 0:
        raise node.error("host_cores and compute_interference_per_job both model devices slowing each other",
                         "keep host_cores (core sharing) or compute_interference_per_job, not both",
                         "compute_interference_per_job")
    if values.get("host_cores_many") is not None and values.get("host_cores") is None:
        raise node.error("host_cores_many is set without host_cores", "set host_cores (the cores' worth with two "
                         "compute threads) as well, or drop host_cores_many", "host_cores_many")
    if values["host_cores_threads"] < 1 or values["host_cores_threads"] != int(values["host_cores_threads"]):
        raise node.error(f"host_cores_threads ({values['host_cores_threads']:g}) must be a whole number of threads, "
                         "at least 1", "set the compute threads host_cores was measured with (the calibrated "
                         "device count)", "host_cores_threads")
    if values["host_cores_many_threads"] <= values["host_cores_threads"]:
        raise node.error(f"host_cores_many_threads ({values['host_cores_many_threads']:g}) must exceed "
                         f"host_cores_threads ({values['host_cores_threads']:g}, the threads host_cores was "
                         "measured with)", "set the thread count host_cores_many was measured with "
                         "(4 from pipeboost calibrate)", "host_cores_many_threads")
    if values["compute_interference_long_tokens"] <= values["compute_interference_base_tokens"]:
        raise node.error(f"compute_interference_long_tokens ({values['compute_interference_long_tokens']:g}) must "
                         f"exceed compute_interference_base_tokens ({values['compute_interference_base_tokens']:g})",
                         "set the token count the long copy term was measured at (128 from pipeboost calibrate)",
                         "compute_interference_long_tokens")
    return CostParams(**values)


def _parse_profiles(node: Node) -> tuple:
    """``compute_profiles``: a list of measured profiles (:mod:`pipeboost.compute_profile`)."""
    from pipeboost.compute_profile import ComputeProfile, ProfileError

    profiles = []
    for i, item in enumerate(node.raw_list("compute_profiles")):
        try:
            if not isinstance(item, dict):
                raise ProfileError("must be a mapping")
            profiles.append(ComputeProfile.from_dict(item))
        except ProfileError as exc:
            raise node.error(str(exc), "re-run pipeboost calibrate, or fix the entry as "
                             "pipeboost.compute_profile describes", key_path=node.key_path(f"compute_profiles[{i}]"))
    shapes = [p.shape for p in profiles]
    for shape in shapes:
        if shapes.count(shape) > 1:
            raise node.error(f"two profiles for shape {shape!r}", "keep one", "compute_profiles")
    return tuple(profiles)


def _param_check(name: str):
    if name in ("link_efficiency", "compute_efficiency", "memory_efficiency"):
        return in_range(1e-6, 1.0)
    if (name.endswith("bytes_per_s") or name in ("host_cores", "host_cores_many") or name.endswith("_tokens")
            or name.endswith("_threads")):
        return positive
    return lambda v: None if v >= 0 else "must not be negative"


# ---- workload and faults --------------------------------------------------------------------------
def _parse_length(parent: Node, key: str, default: LengthDist) -> LengthDist:
    raw = parent.data.get(key)
    if isinstance(raw, int) and not isinstance(raw, bool):
        parent.get(key, int, check=at_least(1))
        return LengthDist("constant", value=raw)
    node = parent.child(key, None)
    if node is None:
        return default
    kind = node.choice("kind", LENGTH_KINDS)
    dist = LengthDist(kind, value=node.get("value", int, 128, check=at_least(1)),
                      low=node.get("low", int, 1, check=at_least(1)),
                      high=node.get("high", int, 2048, check=at_least(1)),
                      median=node.get("median", float, 128.0, check=positive),
                      sigma=node.get("sigma", float, 0.5, check=positive))
    node.done()
    if dist.low > dist.high:
        raise node.error(f"low {dist.low} is above high {dist.high}", "swap them", "low")
    return dist


def _check_trace_file(node: Node, file: str) -> None:
    path = resolve(node, file)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise node.error(f"cannot read trace file {path} ({exc.strerror})", "fix the path (relative to the "
                         "scenario file)", "file") from None
    if not rows or "arrival_s" not in rows[0]:
        raise node.error(f"trace file {path} has no arrival_s column or no rows",
                         "write a CSV with a header line containing arrival_s", "file")
    for i, row in enumerate(rows, start=2):
        for col in ("arrival_s", "prompt_tokens", "output_tokens"):
            value = row.get(col)
            try:
                bad = value not in (None, "") and not float(value) >= 0
            except ValueError:
                bad = True
            if bad:
                raise node.error(f"trace file {path} line {i}: {col} {value!r} is not a non-negative number",
                                 "fix that line", "file")


def _parse_arrivals(node: Node) -> ArrivalSpec:
    kind = node.choice("kind", ARRIVAL_KINDS)
    needs_rate = kind != "trace"
    spec = ArrivalSpec(kind, rate_per_s=node.get("rate_per_s", float, None if needs_rate else 1.0, check=positive),
                       cv=node.get("cv", float, 1.0, check=positive),
                       on_s=node.get("on_s", float, 1.0, check=positive),
                       off_s=node.get("off_s", float, 10.0, check=positive),
                       trace_file=node.get("file", str, None if kind == "trace" else None))
    if kind == "trace":
        if spec.trace_file is None:
            raise node.error("is required for kind trace", "add file: path/to/arrivals.csv", "file")
        _check_trace_file(node, spec.trace_file)
    node.done()
    return spec


def _parse_adapter(node: Node) -> AdapterSpec:
    modules = node.raw_list("target_modules") or ["q_proj", "v_proj"]
    if not all(isinstance(m, str) for m in modules):
        raise node.error("must list module names", "e.g. [q_proj, v_proj]", "target_modules")
    spec = AdapterSpec(node.get("name", str), node.get("rank", int, 8, check=at_least(1)),
                       node.get("alpha", float, 16.0, check=positive), tuple(modules))
    node.done()
    return spec


def parse_workload(node: Node) -> WorkloadSpec:
    arrivals = _parse_arrivals(node.child("arrivals"))
    spec = WorkloadSpec(
        arrivals=arrivals,
        prompt_tokens=_parse_length(node, "prompt_tokens", LengthDist("constant", value=128)),
        output_tokens=_parse_length(node, "output_tokens", LengthDist("constant", value=16)),
        num_requests=node.get("num_requests", int, None, check=at_least(1)),
        duration_s=node.get("duration_s", float, None, check=positive),
        start_s=node.get("start_s", float, 0.0, check=lambda v: None if v >= 0 else "must not be negative"),
        adapters=tuple(_parse_adapter(n) for n in node.children("adapters")),
        adapter_zipf_s=node.get("adapter_zipf_s", float, 1.0, check=positive))
    node.done()
    if spec.num_requests is None and spec.duration_s is None and arrivals.kind != "trace":
        raise node.error("needs num_requests or duration_s", "add num_requests: 16 (or duration_s)")
    names = [a.name for a in spec.adapters]
    if len(set(names)) != len(names):
        raise node.error("two adapters share a name", "rename one", "adapters")
    return spec


def parse_fault(node: Node, num_gpus: int, model: ModelSpec) -> FaultSpec:
    gpu = node.get("gpu", int, check=in_range(0, num_gpus - 1))
    spec = FaultSpec(gpu, at_s=node.get("at_s", float, None, check=lambda v: None if v >= 0 else "must not be negative"),
                     loading_unit=node.get("loading_layer", int, None, check=in_range(-1, model.num_layers)),
                     prefill=node.get("prefill", bool, False),
                     decode_step=node.get("decode_step", int, None, check=at_least(1)))
    node.done()
    triggers = [t for t in ("at_s", "loading_unit", "prefill", "decode_step")
                if getattr(spec, t) not in (None, False)]
    if len(triggers) != 1:
        raise node.error(f"needs exactly one trigger, got {len(triggers)}",
                         "give one of at_s, loading_layer (-1 embedding .. L head), prefill: true, decode_step")
    return spec


def parse_random_failures(node: Node) -> RandomFailureSpec:
    spec = RandomFailureSpec(node.get("mtbf_s", float, check=positive),
                             node.get("max_failures", int, 1, check=at_least(0)))
    node.done()
    return spec


def scenario_error_from(exc: Exception, file: str | None, key_path: str, fix: str) -> ScenarioError:
    return ScenarioError(str(exc), file=file, key_path=key_path, fix=fix)
