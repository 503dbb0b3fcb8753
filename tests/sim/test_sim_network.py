"""Fluid network: exact completion times on hand-computed cases.

Sizes, capacities and latencies are powers of two (or sums of them) so every expected time is exact in
binary floating point and the assertions use ``==``.
"""

from __future__ import annotations

import simpy

from pipeboost.costs import CostParams, link_bandwidth_bytes_per_s
from pipeboost.hardware import topology_preset
from sim.network import FluidNetwork, Flow, max_min_rates, path_links

GB = 2.0**30


def _run(net_caps, transfers):
    """transfers: list of (start_s, links, nbytes, latency_s); returns completion times."""
    env = simpy.Environment()
    net = FluidNetwork(env, net_caps)
    done: dict[int, float] = {}

    def start(i, start_s, links, nbytes, latency_s):
        yield env.timeout(start_s)
        t = yield net.transfer(links, nbytes, latency_s)
        done[i] = t

    for i, tr in enumerate(transfers):
        env.process(start(i, *tr))
    env.run()
    return [done[i] for i in range(len(transfers))]


def test_one_flow_pays_latency_then_bytes_over_bandwidth():
    assert _run({"a": GB}, [(0.0, ("a",), 2 * GB, 0.25)]) == [2.25]


def test_one_flow_bottleneck_is_slowest_link():
    assert _run({"host": 4 * GB, "gpu0": GB}, [(0.0, ("host", "gpu0"), GB, 0.0)]) == [1.0]


def test_two_flows_on_one_link_share_it_equally():
    assert _run({"a": GB}, [(0.0, ("a",), GB, 0.0), (0.0, ("a",), GB, 0.0)]) == [2.0, 2.0]


def test_two_gpus_behind_one_switch_uplink():
    # Each GPU link could do 1 GB/s, the shared uplink 1 GB/s: each flow gets 0.5 GB/s.
    caps = {"host": 8 * GB, "sw0": GB, "gpu0": GB, "gpu1": GB}
    out = _run(caps, [(0.0, ("host", "sw0", "gpu0"), GB, 0.0), (0.0, ("host", "sw0", "gpu1"), GB, 0.0)])
    assert out == [2.0, 2.0]


def test_flow_starting_midway_slows_the_first_then_speeds_up():
    # A: 1 GB from t=0 at 1 GB/s; B: 1 GB from t=0.5. After 0.5 s A has 0.5 GB left, both at 0.5 GB/s,
    # A ends at 1.5 s; B then has 0.5 GB left at full rate: ends at 2.0 s.
    out = _run({"a": GB}, [(0.0, ("a",), GB, 0.0), (0.5, ("a",), GB, 0.0)])
    assert out == [1.5, 2.0]


def test_latency_is_paid_before_joining_the_flow_set():
    # B asks at t=0 but pays 0.5 s latency: identical to the mid-way case.
    out = _run({"a": GB}, [(0.0, ("a",), GB, 0.0), (0.0, ("a",), GB, 0.5)])
    assert out == [1.5, 2.0]


def test_max_min_gives_unused_share_to_unconstrained_flow():
    # Flow 0 is capped at 0.25 GB/s by its own link; flow 1 gets the rest of the shared 1 GB/s link.
    caps = {"shared": GB, "slow": GB / 4, "fast": 4 * GB}
    env = simpy.Environment()
    flows = [Flow(0, ("shared", "slow"), 1, env.event()), Flow(1, ("shared", "fast"), 1, env.event())]
    assert max_min_rates(flows, caps) == {0: GB / 4, 1: 3 * GB / 4}


def test_cancelled_flow_frees_bandwidth():
    env = simpy.Environment()
    net = FluidNetwork(env, {"a": GB})
    ev_a = net.transfer(("a",), GB)
    ev_b = net.transfer(("a",), GB)

    def canceller():
        yield env.timeout(0.5)  # each has moved 0.25 GB
        net.cancel(ev_b)

    env.process(canceller())
    env.run()
    assert ev_a.value == 1.25 and not ev_b.triggered


def test_path_links_from_topology_uses_achieved_bandwidth():
    topo = topology_preset("4xa100-pcie4")
    params = CostParams(link_efficiency=0.5)
    names, caps, latency = path_links(topo.path(1), lambda n, bw: link_bandwidth_bytes_per_s(params, n, bw))
    assert names == ("n0.host_mem", "n0.sw0", "n0.gpu1")
    assert caps["n0.gpu1"] == 31.5e9 * 0.5
    assert latency == topo.path_latency_s(1)
