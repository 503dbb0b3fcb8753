"""Failure detection and recovery: a supervisor thread that turns a device failure into a RecoveryPlan.

The recovery-plan producer is pluggable: any callable with the signature of :data:`RecoveryPolicy`
(the ``pipeboost.policies.recovery`` functions have it). When a device fails, the supervisor

1. records DETECT, asks the policy for a :class:`~pipeboost.plan.RecoveryPlan` given what every survivor
   holds, and records REPLAN (``attrs.plan``);
2. makes each survivor load its ``load_first`` stages before anything else still queued;
3. reroutes in-flight requests that used the failed device (they re-prefill prompt + generated tokens);
4. records RECOVERY from the failure to the first token a moved request produces (or to the replan when
   no request was in flight).
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Callable

from executor.loader import Loader
from executor.pipeline import RequestState, Runtime
from pipeboost.errors import PlanError
from pipeboost.plan import PartitionPlan, RecoveryPlan
from pipeboost.policies import get_policy
from pipeboost.trace import TraceKind

log = logging.getLogger(__name__)

RecoveryPolicy = Callable[[PartitionPlan, tuple[int, ...], int, dict[int, set[int]], tuple[int, ...]],
                          RecoveryPlan]
"""``(partition, stage_gpus, failed_gpu, resident: {gpu: units}, alive) -> RecoveryPlan``."""


def default_recovery_policy() -> RecoveryPolicy:
    """The shared ``reroute_to_holder`` policy (``pipeboost.policies.recovery``), as the simulator uses it."""
    return get_policy("recovery", "reroute_to_holder")


class Supervisor(threading.Thread):
    """Detects device failures (reported through :meth:`report`) and carries out the recovery plan."""

    def __init__(self, runtime: Runtime, loaders: dict[int, Loader], policy: RecoveryPolicy) -> None:
        super().__init__(name="supervisor", daemon=True)
        self.runtime = runtime
        self.loaders = loaders
        self.policy = policy
        self._failures: queue.Queue[tuple[int, float]] = queue.Queue()
        self._pending: dict[int, tuple[float, set[int]]] = {}
        self._lock = threading.Lock()
        self.errors: list[BaseException] = []
        runtime.on_token = self._on_token

    def report(self, gpu: int, t_fail_s: float) -> None:
        """Called by the failing side right after the device was marked failed."""
        self._failures.put((gpu, t_fail_s))

    def run(self) -> None:
        stop = self.runtime.stop
        while not stop.is_set():
            try:
                gpu, t_fail_s = self._failures.get(timeout=0.02)
            except queue.Empty:
                continue
            try:
                self._recover(gpu, t_fail_s)
            except PlanError as exc:
                self.errors.append(exc)
                self._give_up(str(exc))

    def _recover(self, failed: int, t_fail_s: float) -> None:
        rt = self.runtime
        tracer = rt.tracer
        tracer.instant(TraceKind.DETECT, gpu=failed)
        alive = rt.alive()
        resident = {g: rt.devices[g].resident_units() for g in alive}
        plan = self.policy(rt.partition, rt.stage_gpus, failed, resident, alive)
        if failed in plan.stage_gpus or any(g not in alive for g in plan.stage_gpus):
            raise PlanError(f"recovery plan {plan} routes a stage to a failed GPU (alive: {list(alive)})")
        tracer.instant(TraceKind.REPLAN, gpu=failed, attrs={"plan": plan.to_dict()})
        for gpu, stages in plan.load_first:
            units = tuple(u for s in stages for u in rt.partition.units_of_stage(s))
            self.loaders[gpu].prepend(units)
        with rt.lock, self._lock:  # lock order: runtime, then supervisor (as in emit -> _on_token)
            moved = rt.reroute(failed, plan.stage_gpus)
            if moved:
                self._pending[failed] = (t_fail_s, set(moved))
        if not moved:
            tracer.add(t_fail_s, tracer.now_s(), TraceKind.RECOVERY, gpu=failed, attrs={"requests": []})
        log.info("recovered from failure of device %d with %s; moved requests %s", failed, plan, moved)

    def _on_token(self, req: RequestState) -> None:
        with self._lock:
            for failed, (t_fail_s, moved) in list(self._pending.items()):
                if req.id in moved:
                    tracer = self.runtime.tracer
                    tracer.add(t_fail_s, tracer.now_s(), TraceKind.RECOVERY, gpu=failed,
                               attrs={"requests": sorted(moved), "first_request": req.id})
                    del self._pending[failed]

    def _give_up(self, reason: str) -> None:
        """No recovery possible: end every unfinished request with REQUEST_ERROR."""
        rt = self.runtime
        with rt.lock:
            for req in rt.requests.values():
                if not req.finished:
                    req.finished = True
                    rt.tracer.instant(TraceKind.REQUEST_ERROR, request=req.id, attrs={"reason": reason})
            rt.unrecoverable = reason
            rt.all_done.set()
