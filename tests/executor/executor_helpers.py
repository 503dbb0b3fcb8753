"""Helpers shared by executor tests: request records, plan builders and trace invariants."""

from __future__ import annotations


from pipeboost.plan import LoadPlan, PartitionPlan, Plan
from pipeboost.workload import Request
from pipeboost.trace import TraceKind, TraceRecord


Req = Request  # a request as the engine reads it (id, arrival_s, prompt_tokens, output_tokens)


def make_plan(num_layers: int, boundaries: tuple[int, ...], gpus: tuple[int, ...] | None = None,
              mode: str = "pipeboost", full: bool = True) -> Plan:
    """Stage s on GPU s; each GPU loads its own stage first, then (``full``) the others in ring order."""
    stages = len(boundaries) - 1
    gpus = gpus if gpus is not None else tuple(range(stages))
    orders = []
    for i, _ in enumerate(gpus):
        own = i % stages
        orders.append(tuple((own + k) % stages for k in range(stages if full else 1)))
    stage_gpus = tuple(gpus[s] for s in range(stages))
    return Plan(mode, PartitionPlan(num_layers, boundaries), stage_gpus, LoadPlan(tuple(gpus), tuple(orders)))


def assert_compute_after_load(trace: list[TraceRecord]) -> None:
    """No unit is computed on a device before that device's LOAD record of the unit has ended."""
    loaded = {(r.gpu, r.layer): r.t_end_s for r in trace if r.kind == TraceKind.LOAD}
    for r in trace:
        if r.kind in (TraceKind.PREFILL, TraceKind.DECODE):
            assert (r.gpu, r.layer) in loaded, f"unit {r.layer} computed on GPU {r.gpu} without a load"
            assert loaded[(r.gpu, r.layer)] <= r.t_start_s, f"unit {r.layer} on GPU {r.gpu} ran before loaded"


def assert_request_lifecycle(trace: list[TraceRecord], requests: list[Req]) -> None:
    """Every request arrives, gets its first token, all its tokens and finishes, in that order."""
    for req in requests:
        recs = [r for r in trace if r.request == req.id]
        kinds = [r.kind for r in recs]
        assert kinds.count(TraceKind.ARRIVAL) == 1 and kinds.count(TraceKind.FINISH) == 1
        arrival = next(r for r in recs if r.kind == TraceKind.ARRIVAL)
        first = [r for r in recs if r.kind == TraceKind.FIRST_TOKEN]
        assert len(first) == 1 and first[0].t_start_s >= arrival.t_start_s
        tokens = [r for r in recs if r.kind == TraceKind.TOKEN]
        assert len({r.attrs["index"] for r in tokens}) == req.output_tokens - 1
