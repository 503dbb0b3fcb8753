"""Host cores shared by the GPUs of a node (opt-in: ``CostParams.host_cores``).

On CPU virtual devices the "copy engine" and the "SMs" of every device are threads on the same few host
cores, so background loads slow compute and two devices computing at once slow each other. With
``host_cores`` set, each node's fluid network (:mod:`sim.network`) gets two kinds of extra links:

* ``node{n}.host_cpu`` with capacity ``host_cores`` cores, shared max-min fairly (fair in cores) by
* a compute job per GPU: work = its cost-model duration x 1 core, crossing the host-CPU link and the GPU's
  own ``gpu{g}.cpu_thread`` link of capacity 1 core (a compute thread uses at most one core), and
* every weight copy to a GPU of the node: besides its PCIe links it uses ``copy_cpu_s_per_byte`` x its byte
  rate cores of the host-CPU link, and
* per unit load, ``unit_load_cpu_s`` of work on the host-CPU link and the GPU's ``gpu{g}.loader_thread``
  link (1 core), alongside the copy (:func:`loader_work`).

Work on the CPU links is counted in core-nanoseconds (:data:`CORE_NS`) so that the network's completion
tolerance (``EPS_BYTES`` of work) stays far below a microsecond. A job alone on an idle node runs exactly
its cost-model duration when ``host_cores >= 1``. With ``host_cores = None`` nothing here is used and the
simulator's timelines are unchanged.

Not modelled on the CPU: activation hops, start-up, LoRA merges (plain timeouts as without host cores).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generator, Sequence

import simpy

from pipeboost.errors import DeviceFailure
from sim.network import FluidNetwork

if TYPE_CHECKING:
    from pipeboost.costs import CostParams

logger = logging.getLogger(__name__)

CORE_NS = 1e9
"""Work units per core-second on the CPU links (core-nanoseconds)."""


@dataclass(frozen=True)
class HostCPU:
    """The CPU links of one GPU: its node's network, the shared host-CPU link and its thread link."""

    net: FluidNetwork
    cpu_link: str
    thread_link: str
    loader_link: str
    copy_weight: float
    """Host-CPU work (core-ns) per byte copied to this GPU; 0 when copies cost no CPU."""

    def copy_links(self, links: tuple[str, ...]) -> tuple[tuple[str, ...], dict]:
        """Links and :meth:`FluidNetwork.transfer` keywords of a weight copy over PCIe ``links``.

        The copy's fairness scale makes its level the cores it occupies (1 / weight per byte)."""
        if self.copy_weight <= 0.0:
            return links, {}
        weights = (1.0,) * len(links) + (self.copy_weight,)
        return links + (self.cpu_link,), {"weights": weights, "scale": 1.0 / self.copy_weight}


def oversubscription(computing: float, host_cores: float | None) -> float:
    """How oversubscribed ``host_cores`` are by ``computing`` compute threads: ``max(1, computing /
    host_cores)``, 1 without host cores. Equal jobs sharing the cores in :func:`compute` each run this much
    slower than alone; :mod:`sim.interference` multiplies the loaders' slowdown by it."""
    return max(1.0, computing / host_cores) if host_cores else 1.0


def cpu_capacities(params: "CostParams", node: int, gpus: Sequence[int]) -> dict[str, float]:
    """Capacities (core-ns per second) of node ``node``'s host-CPU link and its GPUs' thread links."""
    caps = {cpu_link_name(node): float(params.host_cores) * CORE_NS}
    caps.update({thread_link_name(g): CORE_NS for g in gpus})
    caps.update({loader_link_name(g): CORE_NS for g in gpus})
    return caps


def cpu_link_name(node: int) -> str:
    return f"node{node}.host_cpu"


def thread_link_name(g: int) -> str:
    return f"gpu{g}.cpu_thread"


def loader_link_name(g: int) -> str:
    return f"gpu{g}.loader_thread"


def host_cpu(params: "CostParams", net: FluidNetwork, node: int, g: int) -> HostCPU:
    """The :class:`HostCPU` of GPU ``g`` on ``node`` (its network must hold :func:`cpu_capacities`)."""
    return HostCPU(net, cpu_link_name(node), thread_link_name(g), loader_link_name(g),
                   params.copy_cpu_s_per_byte * CORE_NS)


def loader_work(cpu: HostCPU, seconds: float) -> simpy.Event:
    """Start ``seconds`` of loader-thread CPU work (``unit_load_cpu_s``) on the GPU's loader thread link;
    cancel it with ``cpu.net.cancel(event)``."""
    return cpu.net.transfer((cpu.cpu_link, cpu.loader_link), seconds * CORE_NS)


def compute(cpus: Sequence[HostCPU], seconds: float, speed_cap: float = 1.0) -> Generator[simpy.Event, object, None]:
    """Run a compute job of ``seconds`` (cost-model duration, 1 core) on each GPU of ``cpus`` at once and
    wait for all of them; on an interrupt or failure the jobs are cancelled (their CPU share is freed).

    ``speed_cap`` (0 < cap <= 1) caps each job's thread at that fraction of a core for the whole job (its
    thread link's capacity, restored to one core when the job ends): a job alone then takes ``seconds /
    speed_cap``, and with the cores oversubscribed the smaller of the cap and its fair share sets its pace.
    A GPU runs one compute job at a time (its compute resource serialises them), so the cap is the job's."""
    if seconds <= 0.0:
        return
    if not 0.0 < speed_cap <= 1.0:
        raise ValueError(f"speed_cap must be in (0, 1], got {speed_cap}")
    if speed_cap < 1.0:
        for c in cpus:
            c.net.set_capacity(c.thread_link, speed_cap * CORE_NS)
    events = [c.net.transfer((c.cpu_link, c.thread_link), seconds * CORE_NS) for c in cpus]
    try:
        if len(events) == 1:
            yield events[0]
        else:
            yield simpy.AllOf(cpus[0].net.env, events)
    except (simpy.Interrupt, DeviceFailure):
        for c, ev in zip(cpus, events):
            c.net.cancel(ev)
        raise
    finally:
        if speed_cap < 1.0:
            for c in cpus:
                c.net.set_capacity(c.thread_link, CORE_NS)
