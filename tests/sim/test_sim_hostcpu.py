"""Host cores shared by compute and copies (``CostParams.host_cores``): hand-computed timelines.

Durations and capacities are powers of two so the expected times are exact in binary floating point.
"""

from __future__ import annotations

import dataclasses

import pytest
import simpy

from pipeboost.costs import CostParams
from pipeboost.trace import TraceKind
from sim import run_simulation
from sim.hostcpu import compute, cpu_capacities, host_cpu, loader_work
from sim.network import FluidNetwork, Flow, max_min_rates, weighted_max_min_rates
from sim_scenarios import EXACT_PARAMS, of_kind, tiny_scenario

GB = 2.0**30


def _node(host_cores: float, copy_cpu_s_per_byte: float = 0.0, gpus: int = 2):
    """One node: a 1 GiB/s link per GPU plus the CPU links; returns (env, net, HostCPU per GPU)."""
    env = simpy.Environment()
    params = CostParams(host_cores=host_cores, copy_cpu_s_per_byte=copy_cpu_s_per_byte)
    caps = {f"link{g}": GB for g in range(gpus)}
    caps.update(cpu_capacities(params, 0, range(gpus)))
    net = FluidNetwork(env, caps)
    return env, net, [host_cpu(params, net, 0, g) for g in range(gpus)]


def _job(env, done, key, start_s, gen):
    def proc():
        yield env.timeout(start_s)
        yield from gen()
        done[key] = env.now
    env.process(proc())


def _copy(net, cpu, g, nbytes):
    links, extra = cpu.copy_links((f"link{g}",))

    def gen():
        yield net.transfer(links, nbytes, 0.0, **extra)
    return gen


def test_two_compute_jobs_on_one_shared_core_take_twice_as_long():
    env, _, cpus = _node(host_cores=1.0)
    done: dict[str, float] = {}
    _job(env, done, "a", 0.0, lambda: compute((cpus[0],), 1.0))
    _job(env, done, "b", 0.0, lambda: compute((cpus[1],), 1.0))
    env.run()
    assert done == {"a": 2.0, "b": 2.0}


def test_two_cores_run_two_jobs_in_parallel_and_a_job_is_capped_at_one_core():
    env, _, cpus = _node(host_cores=2.0, gpus=3)
    done: dict[str, float] = {}
    _job(env, done, "alone", 0.0, lambda: compute((cpus[0],), 0.5))  # 0.5 s: alone on 2 cores, still 1 core
    _job(env, done, "a", 1.0, lambda: compute((cpus[1],), 1.0))
    _job(env, done, "b", 1.0, lambda: compute((cpus[2],), 1.0))
    env.run()
    assert done == {"alone": 0.5, "a": 2.0, "b": 2.0}


def test_a_late_job_slows_an_earlier_one_from_its_start():
    env, _, cpus = _node(host_cores=1.0)
    done: dict[str, float] = {}
    _job(env, done, "a", 0.0, lambda: compute((cpus[0],), 1.0))
    _job(env, done, "b", 0.5, lambda: compute((cpus[1],), 0.25))
    env.run()
    # a alone 0.5 s (0.5 done), then both at 0.5 core: b needs 0.5 s, a's 0.5 remaining at 0.5 core too.
    assert done == {"b": 1.0, "a": 1.25}


def test_copy_occupying_half_a_core_slows_a_concurrent_compute_job():
    # Copy at the full 1 GiB/s occupies 0.5 core; one core in all. CPU shared fair in cores: the copy
    # needs only 0.5 (full speed), compute gets the other 0.5 while the copy runs (1 s), then 1 core.
    env, net, cpus = _node(host_cores=1.0, copy_cpu_s_per_byte=0.5 / GB)
    done: dict[str, float] = {}
    _job(env, done, "copy", 0.0, _copy(net, cpus[1], 1, GB))
    _job(env, done, "compute", 0.0, lambda: compute((cpus[0],), 1.0))
    env.run()
    assert done == pytest.approx({"copy": 1.0, "compute": 1.5}, rel=1e-12)  # 1/weight scale: 1 ulp off


def test_copy_is_slowed_when_compute_leaves_it_less_than_it_needs():
    # The copy wants a whole core at 1 GiB/s; two compute jobs and the copy share 1 core fairly (1/3 each):
    # the copy moves 1/3 GiB/s until the jobs (1/3 core-s each) finish at t=1, then the rest at 1 GiB/s.
    env, net, cpus = _node(host_cores=1.0, copy_cpu_s_per_byte=1.0 / GB, gpus=3)
    done: dict[str, float] = {}
    _job(env, done, "copy", 0.0, _copy(net, cpus[2], 2, GB))
    _job(env, done, "a", 0.0, lambda: compute((cpus[0],), 1.0 / 3.0))
    _job(env, done, "b", 0.0, lambda: compute((cpus[1],), 1.0 / 3.0))
    env.run()
    assert done["a"] == pytest.approx(1.0, rel=1e-12) and done["b"] == pytest.approx(1.0, rel=1e-12)
    assert done["copy"] == pytest.approx(1.0 + 2.0 / 3.0, rel=1e-12)


def test_cancelled_compute_job_frees_its_share():
    env, _, cpus = _node(host_cores=1.0)
    done: dict[str, float] = {}
    _job(env, done, "a", 0.0, lambda: compute((cpus[0],), 1.0))
    victim = env.process(compute((cpus[1],), 8.0))
    env.timeout(0.5).callbacks.append(lambda _ev: victim.interrupt("failed"))
    victim.callbacks.append(lambda ev: setattr(ev, "defused", True))
    env.run()
    assert done == {"a": 1.25}  # 0.5 s at half a core, then the remaining 0.75 alone


def test_weighted_rates_equal_unweighted_with_unit_weights():
    env = simpy.Environment()
    caps = {"host": 8 * GB, "sw0": GB, "gpu0": GB, "gpu1": 0.25 * GB}
    paths = [("host", "sw0", "gpu0"), ("host", "sw0", "gpu1"), ("host", "gpu0")]
    flows = [Flow(i, p, GB, env.event()) for i, p in enumerate(paths)]
    assert weighted_max_min_rates(flows, caps) == max_min_rates(flows, caps)


def test_host_cores_off_by_default_and_ample_cores_leave_the_timeline_unchanged():
    base = tiny_scenario("pipeboost", gpus=2, requests=3, output=3)
    assert base.params.host_cores is None
    ample = dataclasses.replace(base, params=EXACT_PARAMS.with_(host_cores=64.0))
    a, b = run_simulation(base).trace, run_simulation(ample).trace
    assert [(r.kind, r.gpu, r.layer, r.request) for r in a] == [(r.kind, r.gpu, r.layer, r.request) for r in b]
    for x, y in zip(a, b):
        assert y.t_start_s == pytest.approx(x.t_start_s, rel=1e-9, abs=1e-12)
        assert y.t_end_s == pytest.approx(x.t_end_s, rel=1e-9, abs=1e-12)


def test_shared_core_and_busy_copies_delay_the_first_token():
    base = tiny_scenario("pipeboost", gpus=2, requests=2, output=2)
    shared = dataclasses.replace(base, params=EXACT_PARAMS.with_(host_cores=1.0, copy_cpu_s_per_byte=1.0 / GB))
    first = lambda sc: of_kind(run_simulation(sc).trace, TraceKind.FIRST_TOKEN, request=0)[0].t_start_s  # noqa: E731
    assert first(shared) > first(base)


def test_loader_work_and_compute_share_one_core():
    env, _, cpus = _node(host_cores=1.0)
    done: dict[str, float] = {}

    def work():
        yield loader_work(cpus[1], 0.5)
    _job(env, done, "load", 0.0, work)
    _job(env, done, "compute", 0.0, lambda: compute((cpus[0],), 1.0))
    env.run()
    assert done == {"load": 1.0, "compute": 1.5}


def test_unit_load_cpu_overlaps_link_time_and_shows_for_small_units():
    sc = tiny_scenario("load_then_run", gpus=1, cold_start_gpus=1, prompt=16, output=2)
    floor = 0.25  # above every opt-tiny unit's link time (< 0.001 s at 1 GiB/s)
    slow = dataclasses.replace(sc, params=EXACT_PARAMS.with_(unit_load_cpu_s=floor))
    loads = of_kind(run_simulation(slow).trace, TraceKind.LOAD)
    t = 0.5  # startup
    for rec in loads:
        assert rec.t_start_s == pytest.approx(t, rel=1e-12) and rec.duration_s == pytest.approx(floor, rel=1e-12)
        t += floor
    shared = dataclasses.replace(sc, params=EXACT_PARAMS.with_(unit_load_cpu_s=floor, host_cores=1.0))
    assert [r.duration_s for r in of_kind(run_simulation(shared).trace, TraceKind.LOAD)] == pytest.approx(
        [r.duration_s for r in loads], rel=1e-9)  # nothing computes during load_then_run's loads
