"""Hardware presets: GPUs, PCIe generations and whole servers.

Figures are datasheet values (dense FP16/BF16 tensor throughput without sparsity, HBM bandwidth, PCIe x16
raw bandwidth per direction after 128b/130b encoding). Achieved fractions of these figures live in
:class:`pipeboost.costs.CostParams` (defaults: 80% of PCIe, see ``costs.py``) so a calibration changes
efficiencies, not datasheets.

Sources: NVIDIA A100 datasheet (312 TFLOP/s FP16, 1,555 GB/s for 40 GB, 1,935 GB/s for 80 GB PCIe),
NVIDIA H100 datasheet (PCIe: 756 TFLOP/s BF16, 2.0 TB/s; SXM: 989 TFLOP/s, 3.35 TB/s), PCI-SIG
(Gen3 8 GT/s, Gen4 16 GT/s, Gen5 32 GT/s per lane: 15.75 / 31.5 / 63.0 GB/s for x16).
The ``cpu-virtual`` GPU stands for one executor virtual device on a 2-core machine
(see ``../shared/ENVIRONMENT-NOTES.md``: ~0.1-0.4 TFLOP/s, ~20 GB/s memcpy).
"""

from __future__ import annotations

from pipeboost.spec import GB, GIB, GPULinkSpec, GPUSpec, HostSpec, LinkSpec, Topology

GPU_PRESETS: dict[str, GPUSpec] = {
    "a100-40gb-pcie": GPUSpec("a100-40gb-pcie", 40 * GIB, 312e12, 1555 * GB),
    "a100-80gb-pcie": GPUSpec("a100-80gb-pcie", 80 * GIB, 312e12, 1935 * GB),
    "h100-80gb-pcie": GPUSpec("h100-80gb-pcie", 80 * GIB, 756e12, 2000 * GB),
    "h100-80gb-sxm": GPUSpec("h100-80gb-sxm", 80 * GIB, 989e12, 3350 * GB),
    "l4-24gb": GPUSpec("l4-24gb", 24 * GIB, 121e12, 300 * GB),
    "cpu-virtual": GPUSpec("cpu-virtual", 4 * GIB, 0.2e12, 20 * GB),
}

PCIE_X16_GBPS: dict[str, float] = {"gen3": 15.75, "gen4": 31.5, "gen5": 63.0}
"""Raw x16 bandwidth per direction in GB/s (1e9 bytes/s)."""

PCIE_LATENCY_S = 1.0e-6
SWITCH_LATENCY_S = 0.5e-6


def _gpu_links(count: int, gen: str, upstreams: list[str | None]) -> tuple[GPULinkSpec, ...]:
    bw = PCIE_X16_GBPS[gen] * GB
    return tuple(GPULinkSpec(i, bw, PCIE_LATENCY_S, upstreams[i]) for i in range(count))


def _switched(gpu: str, count: int, gen: str, per_switch: int, host_gbps: float,
              nvme_gbps: float | None) -> Topology:
    """``count`` GPUs, ``per_switch`` of them behind each PCIe switch with an x16 uplink."""
    n_sw = (count + per_switch - 1) // per_switch
    switches = tuple(LinkSpec(f"sw{i}", PCIE_X16_GBPS[gen] * GB, SWITCH_LATENCY_S) for i in range(n_sw))
    links = _gpu_links(count, gen, [f"sw{i // per_switch}" for i in range(count)])
    return Topology(GPU_PRESETS[gpu], HostSpec(host_gbps * GB, nvme_gbps and nvme_gbps * GB), switches, links)


def _direct(gpu: str, count: int, gen: str, host_gbps: float, nvme_gbps: float | None) -> Topology:
    """``count`` GPUs each on its own root-port x16 link."""
    links = _gpu_links(count, gen, [None] * count)
    return Topology(GPU_PRESETS[gpu], HostSpec(host_gbps * GB, nvme_gbps and nvme_gbps * GB), (), links)


def _cpu_virtual(count: int, link_gbps: float) -> Topology:
    links = tuple(GPULinkSpec(i, link_gbps * GB, 0.0, None) for i in range(count))
    return Topology(GPU_PRESETS["cpu-virtual"], HostSpec(20 * GB, None, pinned_pool=False), (), links)


TOPOLOGY_PRESETS: dict[str, Topology] = {
    # DGX-A100-like PCIe box: GPU pairs share a Gen4 switch uplink (aggregate 2 x 31.5 GB/s).
    "4xa100-pcie4": _switched("a100-40gb-pcie", 4, "gen4", 2, host_gbps=150, nvme_gbps=12),
    "8xa100-pcie4": _switched("a100-80gb-pcie", 8, "gen4", 2, host_gbps=200, nvme_gbps=25),
    "4xa100-pcie4-direct": _direct("a100-40gb-pcie", 4, "gen4", host_gbps=150, nvme_gbps=12),
    "1xa100-pcie4": _direct("a100-40gb-pcie", 1, "gen4", host_gbps=150, nvme_gbps=12),
    # 8 x H100 PCIe, each on its own Gen5 root port.
    "8xh100-pcie5": _direct("h100-80gb-pcie", 8, "gen5", host_gbps=400, nvme_gbps=50),
    "4xl4-pcie4": _direct("l4-24gb", 4, "gen4", host_gbps=100, nvme_gbps=7),
    "8xv100-like-pcie3": _switched("a100-40gb-pcie", 8, "gen3", 2, host_gbps=100, nvme_gbps=6),
    # Executor virtual devices on this 2-core machine, links capped at 2 GB/s each.
    "2xcpu-virtual": _cpu_virtual(2, 2.0),
    "4xcpu-virtual": _cpu_virtual(4, 2.0),
}


def topology_preset(name: str) -> Topology:
    if name not in TOPOLOGY_PRESETS:
        raise KeyError(f"unknown cluster preset {name!r}; valid: {', '.join(sorted(TOPOLOGY_PRESETS))}")
    return TOPOLOGY_PRESETS[name]


def gpu_preset(name: str) -> GPUSpec:
    if name not in GPU_PRESETS:
        raise KeyError(f"unknown GPU preset {name!r}; valid: {', '.join(sorted(GPU_PRESETS))}")
    return GPU_PRESETS[name]
