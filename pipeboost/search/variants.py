"""Run named variants of one scenario (serving modes, recovery policies, ...) and return tidy rows.

A variant is a mapping of search parameters (``{"policies.mode": "load_then_run"}``) applied with
:func:`pipeboost.search.evaluate.apply_params`. Notebooks call these and only plot the rows.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any, Mapping

from pipeboost.metrics import request_metrics, summarize
from pipeboost.scenario_model import Scenario
from pipeboost.search.evaluate import apply_params, simulate
from pipeboost.search.tidy import flat_metrics
from pipeboost.trace import TraceRecord

Traces = dict[str, list[TraceRecord]]


def mode_variants(modes: tuple[str, ...] = ("pipeboost", "load_then_run", "pipeline_only", "tensor_parallel")
                  ) -> dict[str, dict[str, Any]]:
    """One variant per serving mode, labelled by the mode name."""
    return {m: {"policies.mode": m} for m in modes}


def with_requests(scenario: Scenario, num_requests: int) -> Scenario:
    """The scenario with its workload cut to ``num_requests`` requests (notebooks' small mode)."""
    return replace(scenario, workload=replace(scenario.workload, num_requests=num_requests))


def run_variants(scenario: Scenario, variants: Mapping[str, Mapping[str, Any]], detail: bool = True) -> Traces:
    """Simulate every variant; label -> trace (``detail``: keep per-token and per-step records for timelines)."""
    return {label: simulate(apply_params(scenario, params), detail=detail) for label, params in variants.items()}


def summary_rows(traces: Traces) -> list[dict[str, Any]]:
    """One row per variant: ``variant`` plus the flat metrics (seconds, GPU-seconds)."""
    return [{"variant": label, **flat_metrics(summarize(trace))} for label, trace in traces.items()]


def request_rows(traces: Traces) -> list[dict[str, Any]]:
    """One row per request and variant: arrival, TTFT, TPOT, latency (seconds), tokens, error."""
    return [{"variant": label, **asdict(r)} for label, trace in traces.items() for r in request_metrics(trace)]
