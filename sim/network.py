"""Links as a fluid network: concurrent transfers share every link max-min fairly.

This is SimGrid's fluid model in miniature. A transfer is a *flow* over a path of named links. While a
set of flows is active, each flow moves bytes at a constant rate given by progressive filling
(max-min fairness): repeatedly find the link whose remaining capacity divided by its unfixed flows is
smallest, fix those flows at that share, remove their rate from every link they cross, and continue.
Whenever a flow starts or ends, every flow's remaining bytes are advanced to ``now`` at its old rate, rates
are recomputed and the next completion is rescheduled (one pending timer; stale timers are ignored).

A transfer first pays its latency (per-copy launch plus path latencies) and only then joins the flow set.

A flow may carry ``weights`` (resource used on each of its links per unit of its own work, default 1) and a
fairness ``scale`` (default 1): progressive filling then equalises ``rate / scale`` and a flow at rate ``r``
uses ``r x weight`` of a link. :mod:`sim.hostcpu` uses this to put compute jobs (core-nanoseconds) and
copies (bytes, which also use CPU) on one host-CPU link, fair in cores. Without weighted flows the
unweighted algorithm runs unchanged.

Contract: for given start times, sizes and capacities the completion times are deterministic (flows are
kept in start order and ties are broken by flow id), and a flow completes when its remaining bytes drop to
``EPS_BYTES`` or below.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import AbstractSet, Iterable, Mapping

import simpy

logger = logging.getLogger(__name__)

EPS_BYTES = 1e-3
"""Remaining bytes at or below which a flow counts as complete (absorbs floating-point residue)."""


@dataclass(eq=False)
class Flow:
    """One transfer in progress: ``remaining_bytes`` left to move at ``rate_bytes_per_s``."""

    fid: int
    links: tuple[str, ...]
    nbytes: float
    done: simpy.Event
    remaining_bytes: float = field(init=False)
    rate_bytes_per_s: float = 0.0
    start_s: float = 0.0
    cancelled: bool = False
    weights: tuple[float, ...] | None = None
    scale: float = 1.0

    def __post_init__(self) -> None:
        self.remaining_bytes = float(self.nbytes)


def max_min_rates(flows: Iterable[Flow], capacity_bytes_per_s: Mapping[str, float]) -> dict[int, float]:
    """Max-min fair rate of each flow (by ``fid``) under link capacities, by progressive filling.

    Deterministic: links are visited in sorted name order and flows in ``fid`` order.
    """
    flows = sorted(flows, key=lambda f: f.fid)
    remaining = {}
    users: dict[str, list[Flow]] = {}
    for f in flows:
        for link in f.links:
            remaining.setdefault(link, float(capacity_bytes_per_s[link]))
            users.setdefault(link, []).append(f)
    rates: dict[int, float] = {}
    active = {link: len(fs) for link, fs in users.items()}
    while len(rates) < len(flows):
        share, bottleneck = min((remaining[link] / active[link], link) for link in sorted(active) if active[link])
        for f in users[bottleneck]:
            if f.fid in rates:
                continue
            rates[f.fid] = share
            for link in f.links:
                remaining[link] = max(remaining[link] - share, 0.0)
                active[link] -= 1
    return rates


def weighted_max_min_rates(flows: Iterable[Flow], capacity: Mapping[str, float]) -> dict[int, float]:
    """Weighted progressive filling: max-min fair in ``rate / scale``; a flow at rate ``r`` uses
    ``r * weight`` of each link it crosses (see module docstring). Rates are in each flow's work units/s.

    Deterministic like :func:`max_min_rates`. With unit weights and scales it gives the same rates.
    """
    flows = sorted(flows, key=lambda f: f.fid)
    remaining: dict[str, float] = {}
    demand: dict[str, float] = {}
    active: dict[str, int] = {}
    users: dict[str, list[tuple[Flow, float]]] = {}
    for f in flows:
        weights = f.weights or (1.0,) * len(f.links)
        for link, w in zip(f.links, weights):
            use = w * f.scale
            remaining.setdefault(link, float(capacity[link]))
            demand[link] = demand.get(link, 0.0) + use
            active[link] = active.get(link, 0) + 1
            users.setdefault(link, []).append((f, use))
    levels: dict[int, float] = {}
    while len(levels) < len(flows):
        level, bottleneck = min((remaining[link] / demand[link], link)
                                for link in sorted(active) if active[link] and demand[link] > 0.0)
        for f, _ in users[bottleneck]:
            if f.fid in levels:
                continue
            levels[f.fid] = level
            for link, w in zip(f.links, f.weights or (1.0,) * len(f.links)):
                use = w * f.scale
                remaining[link] = max(remaining[link] - level * use, 0.0)
                demand[link] -= use
                active[link] -= 1
    return {f.fid: levels[f.fid] * f.scale for f in flows}


class FluidNetwork:
    """Named links with capacities (bytes/s) shared max-min fairly by the flows crossing them."""

    def __init__(self, env: simpy.Environment, capacity_bytes_per_s: Mapping[str, float]) -> None:
        self.env = env
        self.capacity_bytes_per_s = dict(capacity_bytes_per_s)
        self._flows: dict[int, Flow] = {}
        self._pending: dict[simpy.Event, Flow] = {}
        self._next_fid = 0
        self._last_update_s = 0.0
        self._timer_generation = 0
        self.rate_updates = 0
        self._weighted = 0

    @property
    def active_flows(self) -> int:
        return len(self._flows)

    def set_capacity(self, link: str, capacity_bytes_per_s: float) -> None:
        """Change a link's capacity now; flows in progress continue at their new max-min rates."""
        if self.capacity_bytes_per_s.get(link) == capacity_bytes_per_s:
            return
        self._advance()
        self.capacity_bytes_per_s[link] = capacity_bytes_per_s
        self._reschedule()

    def total_rate_bytes_per_s(self, links: AbstractSet[str] | None = None) -> float:
        """Sum of the current rates of the flows in progress (units per second); with ``links``, of the flows
        that cross at least one of them only (a network that also carries host-CPU work, in core-ns, counts
        its copies by their PCIe links)."""
        if links is None:
            return sum(f.rate_bytes_per_s for f in self._flows.values())
        return sum(f.rate_bytes_per_s for f in self._flows.values() if not links.isdisjoint(f.links))

    def transfer(self, links: tuple[str, ...], nbytes: float, latency_s: float = 0.0,
                 weights: tuple[float, ...] | None = None, scale: float = 1.0) -> simpy.Event:
        """Start moving ``nbytes`` over ``links`` after ``latency_s``; the returned event fires at completion.

        ``nbytes`` is the flow's work in its own units (bytes for copies); ``weights`` / ``scale`` as in
        :func:`weighted_max_min_rates`. The event's value is the completion time in seconds.
        """
        for link in links:
            if link not in self.capacity_bytes_per_s:
                raise KeyError(f"unknown link {link!r}")
        done = self.env.event()
        flow = Flow(self._next_fid, tuple(links), nbytes, done, weights=weights, scale=scale)
        if weights is not None or scale != 1.0:
            self._weighted += 1
        self._next_fid += 1
        self._pending[done] = flow
        if latency_s > 0.0:
            self.env.timeout(latency_s).callbacks.append(lambda _ev: self._start(flow))
        else:
            self._start(flow)
        return done

    def cancel(self, event: simpy.Event) -> None:
        """Drop the transfer whose completion event is ``event`` (its GPU failed); no-op if already done.

        The event never fires. Works both during the latency phase and while bytes are moving.
        """
        flow = self._pending.pop(event, None)
        if flow is None:
            return
        flow.cancelled = True
        if flow.fid in self._flows:
            self._advance()
            del self._flows[flow.fid]
            self._reschedule()

    # ---- internals ---------------------------------------------------------------------------
    def _start(self, flow: Flow) -> None:
        if flow.cancelled:
            return
        self._advance()
        flow.start_s = self.env.now
        if flow.remaining_bytes <= EPS_BYTES:
            del self._pending[flow.done]
            flow.done.succeed(self.env.now)
            return
        self._flows[flow.fid] = flow
        self._reschedule()

    def _advance(self) -> None:
        """Move every flow's remaining bytes forward to ``now`` at its current rate."""
        now = self.env.now
        dt = now - self._last_update_s
        if dt > 0.0:
            for flow in self._flows.values():
                flow.remaining_bytes -= flow.rate_bytes_per_s * dt
        self._last_update_s = now

    def _reschedule(self) -> None:
        """Recompute rates and arm a timer for the earliest completion."""
        self._timer_generation += 1
        if not self._flows:
            return
        self.rate_updates += 1
        rate_fn = weighted_max_min_rates if self._weighted else max_min_rates
        rates = rate_fn(self._flows.values(), self.capacity_bytes_per_s)
        delay = float("inf")
        for flow in self._flows.values():
            flow.rate_bytes_per_s = rates[flow.fid]
            delay = min(delay, max(flow.remaining_bytes, 0.0) / flow.rate_bytes_per_s)
        generation = self._timer_generation
        self.env.timeout(delay).callbacks.append(lambda _ev: self._on_timer(generation))

    def _on_timer(self, generation: int) -> None:
        if generation != self._timer_generation:
            return
        self._advance()
        finished = [f for f in self._flows.values() if f.remaining_bytes <= EPS_BYTES]
        if not finished:
            # Floating-point residue: the earliest flow is a hair short; finish the closest one.
            finished = [min(self._flows.values(), key=lambda f: (f.remaining_bytes / f.rate_bytes_per_s, f.fid))]
        for flow in finished:
            del self._flows[flow.fid]
            del self._pending[flow.done]
        self._reschedule()
        for flow in finished:
            flow.done.succeed(self.env.now)


def path_links(topology_path: Iterable[tuple[str, float, float]], params_bandwidth) -> tuple[tuple[str, ...], dict[str, float], float]:
    """Split a ``Topology.path`` into link names, achieved capacities and summed path latency.

    ``params_bandwidth(name, nominal)`` maps a nominal bandwidth to the achieved one (see
    :func:`pipeboost.costs.link_bandwidth_bytes_per_s`).
    """
    names: list[str] = []
    caps: dict[str, float] = {}
    latency_s = 0.0
    for name, bandwidth, lat in topology_path:
        names.append(name)
        caps[name] = params_bandwidth(name, bandwidth)
        latency_s += lat
    return tuple(names), caps, latency_s
