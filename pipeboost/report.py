"""Plain-text tables for the CLI: plans with their byte counts and a run's summary."""

from __future__ import annotations

from typing import Any, Sequence

from pipeboost.costs import load_cost
from pipeboost.plan import Plan
from pipeboost.scenario_model import Scenario


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A left-aligned text table with a rule under the header."""
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_plan_report(scenario: Scenario, plan: Plan) -> str:
    """The scenario's plan: stages with layers and bytes, and per-GPU load orders with own-stage load time."""
    model, part = scenario.model, plan.partition
    head = (f"{scenario.name}: {model.name} ({model.total_bytes / 1e9:.2f} GB {model.dtype}, {model.num_layers} layers) "
            f"on {len(plan.gpus)} x {scenario.topology.gpu.name}, mode {plan.mode}\n"
            f"partition {scenario.policies.partition if plan.mode in ('pipeboost', 'pipeline_only') else '(one stage)'}: "
            f"{part}\nloading order: {scenario.policies.loading_order if plan.mode == 'pipeboost' else plan.mode}")
    stage_rows = []
    for s in range(part.num_stages):
        r = part.layer_range(s)
        stage_rows.append([s, f"{r.start}-{r.stop - 1}", len(part.units_of_stage(s)),
                           f"{part.stage_bytes(model, s) / 1e9:.3f}", plan.stage_gpus[s]])
    gpu_rows = []
    for gpu, order in zip(plan.load.gpus, plan.load.orders):
        own = part.stage_bytes(model, order[0])
        total = sum(part.stage_bytes(model, s) for s in order)
        own_s = load_cost(scenario.params, scenario.topology, gpu, own, scenario.serving.source).total_s
        full = "yes" if len(order) == part.num_stages else "no (memory)"
        gpu_rows.append([gpu, ",".join(map(str, order)), f"{total / 1e9:.3f}", own_s, full])
    return "\n".join([head, "", format_table(["stage", "layers", "units", "GB", "gpu"], stage_rows), "",
                      format_table(["gpu", "load order", "GB total", "first slice s (alone)", "full replica"],
                               gpu_rows)])


def format_summary(scenario: Scenario, engine: str, summary: dict[str, Any]) -> str:
    """A run's headline metrics as a two-column table."""
    def stat(key: str, q: str) -> Any:
        value = summary.get(key) or {}
        return value.get(q) if isinstance(value, dict) else None

    rows = [
        ["requests / finished / errors / lost", f"{summary['requests']} / {summary['finished']} / "
                                                f"{summary['errors']} / {summary['lost']}"],
        ["cold start (first arrival -> first token) s", summary["cold_start_s"]],
        ["TTFT p50 / p99 s", f"{_fmt(stat('ttft_s', 'p50'))} / {_fmt(stat('ttft_s', 'p99'))}"],
        ["TPOT p50 s", stat("tpot_s", "p50")],
        ["latency p50 / p99 s", f"{_fmt(stat('latency_s', 'p50'))} / {_fmt(stat('latency_s', 'p99'))}"],
        ["first pipeline -> replica switch s", summary["first_mode_switch_s"]],
        ["time to full replica (mean) s", stat("time_to_full_replica_s", "mean")],
        ["failures / recovery max s", f"{summary['failures']} / {_fmt(stat('recovery_s', 'max'))}"],
        ["GPU-seconds", summary["gpu_seconds"]],
        ["makespan s", summary["makespan_s"]],
    ]
    return f"{scenario.name} [{engine}, mode {scenario.policies.mode}]\n" + format_table(["metric", "value"], rows)
