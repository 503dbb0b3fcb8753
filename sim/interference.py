"""Compute slowed by concurrent activity on the same node (opt-in, a linear interference model).

On CPU virtual devices a device's compute runs slower while other devices compute (shared memory
bandwidth and caches) and while weights are being copied (a loader's memcpy bursts take the memory bus
and the cache, and the loader thread, waking from its pacing sleep, preempts compute threads). Measured
on the executor, neither effect behaves like a share of a fixed number of cores: two devices computing
during loads are slowed by about the sum of the two effects, and the copies themselves keep their link
rate. So, with ``CostParams.compute_interference_per_job`` (alpha) or ``compute_interference_per_gbps``
(beta) set, a compute job of cost-model duration ``d`` that starts on GPU ``g`` takes

    d x (1 + alpha x (other GPUs of the node computing now) + beta x (GB/s being copied to the node now))

seconds; the factor is taken when the job starts (unit jobs are milliseconds, load phases hundreds) and the
job then counts as computing for the others. With ``compute_interference_per_gbps_long`` set, a prefill job's
beta follows its tokens (:meth:`CostParams.copy_term_per_gbps`: the measured 32- and 128-token values,
interpolated in log(tokens)): a long prefill's larger kernels lose less to the loaders. With
``copy_interference_per_job`` (gamma) set as well, the other direction: each GPU link of the node carries
``capacity / (1 + gamma x GPUs of the node computing)``, updated whenever a compute job starts or ends (the
loaders' threads share the cores and the interpreter with the compute threads), so copies in progress slow
down and speed up. With ``host_cores`` the count is multiplied by the cores' oversubscription, ``max(1, GPUs
computing / host_cores)``: with more compute threads than cores a loader waking from its pacing sleep waits
for a core behind them. Measured on the executor (SmolLM2-135M, four CPU virtual devices on two cores, 2.5
devices computing on average while loading), the loaders ran at 1.49-1.72 GB/s of their 2 GB/s, where the
count alone, calibrated with two devices, gave 1.82 (load time per GPU 6-16% early; with the factor, 3%
early). With all three 0 (the default) nothing here is used.

The model's compute profile may add its ``concurrency_slowdown`` (what its units lose while another device
computes, beyond core sharing: the executor's workers share one interpreter), once when any other GPU of the
node computes: it is measured with two devices, and with more core sharing already stretches the job. It
is per phase (:meth:`ComputeProfile.concurrency_slowdown_for`): a job tells the share of its cost-model
time that is prefill.

With ``host_cores`` (:mod:`sim.hostcpu`) as well, compute jobs share the node's cores (which covers devices
slowing each other, so ``compute_interference_per_job`` must be 0: the scenario loader refuses both; a
profile's ``concurrency_slowdown`` is the part core sharing does not cover, and stretches the job's work)
and the copies take ``copy_cpu_s_per_byte`` x their byte rate of those cores. The copy term is then a cap
on the job's thread, ``1 / (1 + beta x GB/s)`` of a core, not a stretch of its work: a job with a core to
itself runs ``d x (1 + beta x GB/s)`` as above, while on oversubscribed cores its fair share, the smaller,
sets its pace. Measured on the executor (prefill layer calls during loads in five suite trace sets, two
to four CPU virtual devices on two cores), one device computing loses 4-5% per GB/s copied, while with
two to four computing the calls run at ``k / (host_cores - copy cores)`` of their time alone to within
2-6%; the earlier product of the two terms was right for two devices only. Calibration uses this
combination on CPU virtual devices (cores for compute against compute and copies, the measured copy term
for loads; calibration reads the copy term on calls of a device computing alone, where it sets the pace).
With ``host_cores_many`` as well, the node's cores are worth :meth:`CostParams.host_cores_for` of its GPUs
computing, updated whenever a compute job starts or ends: measured on the executor (SmolLM2-135M, three and
four CPU virtual devices on two cores), the calls ran 8-10% later than two threads' 1.84 cores gave.
The copy rate counts only the flows over the node's GPU links (the network also carries the host-CPU
work, in core-ns).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Generator, Mapping, Sequence

import simpy

from sim.hostcpu import CORE_NS, compute, cpu_link_name, oversubscription

if TYPE_CHECKING:
    from pipeboost.compute_profile import ComputeProfile
    from pipeboost.costs import CostParams
    from sim.hostcpu import HostCPU
    from sim.network import FluidNetwork


class Interference:
    """Who computes on each node now, and the slowdown factor of a job starting on a GPU."""

    def __init__(self, env: simpy.Environment, params: "CostParams", gpus_per_node: int,
                 networks: Sequence["FluidNetwork"], gpu_links: Mapping[int, str] | None = None,
                 profile: "ComputeProfile | None" = None) -> None:
        self.env = env
        self.per_job = params.compute_interference_per_job
        self.profile = profile
        """The model's compute profile: its concurrency slowdown is charged once when any other GPU of the
        node computes (it is measured with two devices; with more, core sharing already stretches the job)."""
        self.per_gbps = params.compute_interference_per_gbps
        self.params = params
        self.copy_per_job = params.copy_interference_per_job
        self.gpus_per_node = gpus_per_node
        self.networks = list(networks)
        self.computing: list[dict[int, int]] = [{} for _ in self.networks]
        self.node_links: list[list[tuple[str, float]]] = [[] for _ in self.networks]
        """Per node, its GPUs' own links and their nominal capacities (slowed by ``copy_interference_per_job``)."""
        for g, name in (gpu_links or {}).items():
            net = self.networks[g // gpus_per_node]
            self.node_links[g // gpus_per_node].append((name, net.capacity_bytes_per_s[name]))
        self._gpu_link_names = [frozenset(name for name, _ in links) for links in self.node_links]

    @staticmethod
    def enabled(params: "CostParams", profile: "ComputeProfile | None" = None) -> bool:
        model = profile is not None and (profile.concurrency_slowdown > 0
                                         or (profile.prefill_concurrency_slowdown or 0.0) > 0)
        return (params.compute_interference_per_job > 0 or params.compute_interference_per_gbps > 0
                or params.copy_interference_per_job > 0 or model or params.host_cores_vary)

    def copy_gbps(self, node: int) -> float:
        """GB/s being copied to ``node``'s GPUs now: the flows over their own links (the node's network also
        carries host-CPU work in core-ns, which is not copied bytes); every flow without ``gpu_links``."""
        links = self._gpu_link_names[node] if self._gpu_link_names[node] else None
        return self.networks[node].total_rate_bytes_per_s(links) / 1e9

    def copy_term(self, g: int, prefill_share: float = 0.0, prefill_tokens: int | None = None) -> float:
        """``beta x GB/s copied`` to GPU ``g``'s node now, for a job whose cost-model time is ``prefill_share``
        prefill of ``prefill_tokens`` tokens per call (beta: :meth:`CostParams.copy_term_per_gbps`,
        weighted by time)."""
        per_gbps = self.per_gbps
        if prefill_share > 0.0 and self.params.compute_interference_per_gbps_long is not None:
            per_gbps += prefill_share * (self.params.copy_term_per_gbps(prefill_tokens) - self.per_gbps)
        return per_gbps * self.copy_gbps(g // self.gpus_per_node)

    def work_term(self, g: int, prefill_share: float = 0.0) -> float:
        """``alpha x others computing + model slowdown if any other computes`` on GPU ``g``'s node now."""
        node = g // self.gpus_per_node
        others = sum(1 for other, jobs in self.computing[node].items() if jobs and other != g)
        model = self.profile.concurrency_slowdown_for(prefill_share) if others and self.profile else 0.0
        return self.per_job * others + model

    def factor(self, g: int, prefill_share: float = 0.0, prefill_tokens: int | None = None) -> float:
        """``1 + alpha x others computing + model slowdown if any other computes + beta x GB/s copied`` on
        GPU ``g``'s node, now (:meth:`work_term`, :meth:`copy_term`): a job's stretch without host cores."""
        return 1.0 + self.work_term(g, prefill_share) + self.copy_term(g, prefill_share, prefill_tokens)

    def compute(self, gpus: Sequence[int], seconds: float, host_cpus: Sequence["HostCPU"] | None = None,
                prefill_share: float = 0.0, prefill_tokens: int | None = None) -> Generator[simpy.Event, object, None]:
        """A compute job of ``seconds`` (cost model, ``prefill_share`` of it prefill) on ``gpus`` at once.

        Without ``host_cpus`` a timeout of ``seconds`` times the largest :meth:`factor`. On the host cores of
        ``host_cpus`` (per GPU) the work is ``seconds x (1 + largest work term)`` and the copy term caps the
        job's thread at ``1 / (1 + largest copy term)`` of a core (:func:`sim.hostcpu.compute`): the loaders
        slow a thread that has a core to itself, and where the cores are oversubscribed (the copies' own
        CPU, ``copy_cpu_s_per_byte``, included) the fair share is the smaller and sets the pace."""
        if seconds <= 0.0:
            return
        nodes = {g // self.gpus_per_node for g in gpus}
        if host_cpus is None:
            stretch, cap = max(self.factor(g, prefill_share, prefill_tokens) for g in gpus), 1.0
        else:
            stretch = 1.0 + max(self.work_term(g, prefill_share) for g in gpus)
            cap = 1.0 / (1.0 + max(self.copy_term(g, prefill_share, prefill_tokens) for g in gpus))
        for g in gpus:
            jobs = self.computing[g // self.gpus_per_node]
            jobs[g] = jobs.get(g, 0) + 1
        self._slow_copies(nodes)
        self._set_cores(nodes)
        try:
            if host_cpus is None:
                yield self.env.timeout(seconds * stretch)
            else:
                yield from compute([host_cpus[g] for g in gpus], seconds * stretch, speed_cap=cap)
        finally:
            for g in gpus:
                self.computing[g // self.gpus_per_node][g] -= 1
            self._slow_copies(nodes)
            self._set_cores(nodes)

    def _busy(self, node: int) -> int:
        """GPUs of ``node`` computing now."""
        return sum(1 for jobs in self.computing[node].values() if jobs)

    def _set_cores(self, nodes: set[int]) -> None:
        """With ``host_cores_many``: set the host-CPU link of ``nodes`` to the cores' worth of their GPUs
        computing now (:meth:`CostParams.host_cores_for`); work in progress continues at the new shares."""
        if not self.params.host_cores_vary:
            return
        for node in nodes:
            link = cpu_link_name(node)
            if link in self.networks[node].capacity_bytes_per_s:
                self.networks[node].set_capacity(link, self.params.host_cores_for(self._busy(node)) * CORE_NS)

    def _slow_copies(self, nodes: set[int]) -> None:
        """Set the GPU links of ``nodes`` to capacity / (1 + gamma x GPUs computing there x their cores'
        oversubscription ``max(1, computing / host_cores)``, 1 without host cores)."""
        if self.copy_per_job <= 0:
            return
        for node in nodes:
            busy = self._busy(node)
            slowdown = self.copy_per_job * busy * oversubscription(busy, self.params.host_cores_for(busy))
            for name, nominal in self.node_links[node]:
                self.networks[node].set_capacity(name, nominal / (1.0 + slowdown))
