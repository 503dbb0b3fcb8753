"""The linear interference model (sim.interference): compute stretched by concurrent copies and compute."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pipeboost.costs import unit_compute_s
from pipeboost.trace import TraceKind
from sim import run_simulation
from sim_scenarios import LINK_BYTES_PER_S, of_kind, tiny_scenario

EXACT = dict(rel=1e-12, abs=1e-15)


def _prefills(sc, request=0):
    res = run_simulation(sc)
    return res, of_kind(res.trace, TraceKind.PREFILL, request=request)


def test_compute_during_a_copy_is_stretched_by_the_copy_rate():
    """One GPU, execute-while-load: each unit's prefill runs while the next unit copies at the link rate,
    so it takes cost x (1 + beta x GB/s); the last units, computed after the load, take their cost."""
    base = tiny_scenario("pipeboost", gpus=1, cold_start_gpus=1, prompt=16, output=1)
    beta = 0.05
    sc = replace(base, params=replace(base.params, compute_interference_per_gbps=beta))
    res, prefills = _prefills(sc)
    loads = of_kind(res.trace, TraceKind.LOAD)
    last_load = max(r.t_end_s for r in loads)
    stretched = 1.0 + beta * LINK_BYTES_PER_S / 1e9
    for rec in prefills:
        cost = unit_compute_s(sc.params, sc.topology.gpu, sc.model, rec.layer, 16)
        copying = any(r.t_start_s <= rec.t_start_s < r.t_end_s for r in loads)
        assert rec.duration_s == pytest.approx(cost * (stretched if copying else 1.0), **EXACT)
    assert any(r.t_start_s < last_load for r in prefills) and any(r.t_start_s >= last_load for r in prefills)
    plain, _ = _prefills(base)
    assert res.trace != plain.trace


@pytest.mark.parametrize("prompt, long_share", [(16, 0.0), (128, 1.0), (256, 1.0), (64, 0.5)])
def test_a_long_prefill_pays_the_long_copy_term(prompt, long_share):
    """With ``compute_interference_per_gbps_long`` set, a prefill of ``prompt`` tokens during a copy is
    stretched by beta(prompt): the 32-token value up to 32 tokens, the long value from 128 on, and between
    them linear in log(tokens) (64 tokens: halfway)."""
    base = tiny_scenario("pipeboost", gpus=1, cold_start_gpus=1, prompt=prompt, output=1)
    beta, beta_long = 0.05, 0.02
    sc = replace(base, params=replace(base.params, compute_interference_per_gbps=beta,
                                      compute_interference_per_gbps_long=beta_long))
    assert sc.params.copy_term_per_gbps(prompt) == pytest.approx(beta + long_share * (beta_long - beta))
    res, prefills = _prefills(sc)
    loads = of_kind(res.trace, TraceKind.LOAD)
    stretched = 1.0 + (beta + long_share * (beta_long - beta)) * LINK_BYTES_PER_S / 1e9
    copying = [r for r in prefills if any(x.t_start_s <= r.t_start_s < x.t_end_s for x in loads)]
    assert copying
    for rec in copying:
        cost = unit_compute_s(sc.params, sc.topology.gpu, sc.model, rec.layer, prompt)
        assert rec.duration_s == pytest.approx(cost * stretched, **EXACT)


def test_decode_and_unknown_lengths_keep_the_base_copy_term():
    from pipeboost.costs import CostParams

    params = CostParams(compute_interference_per_gbps=0.05, compute_interference_per_gbps_long=0.02)
    assert params.copy_term_per_gbps(None) == params.copy_term_per_gbps(1) == 0.05
    assert CostParams(compute_interference_per_gbps=0.05).copy_term_per_gbps(512) == 0.05  # none measured


def test_factor_counts_other_gpus_computing_and_the_node_copy_rate():
    import simpy

    from pipeboost.costs import CostParams
    from sim.interference import Interference
    from sim.network import FluidNetwork

    env = simpy.Environment()
    nets = [FluidNetwork(env, {"link0": 2e9}), FluidNetwork(env, {"link1": 2e9})]
    it = Interference(env, CostParams(compute_interference_per_job=0.25, compute_interference_per_gbps=0.05), 2,
                      nets)
    assert it.factor(0) == 1.0
    nets[0].transfer(("link0",), 4e9)
    env.run(until=0.1)
    assert it.factor(0) == pytest.approx(1.1)  # 2 GB/s copied to node 0
    assert it.factor(2) == 1.0  # another node
    ends = []

    def job(g, seconds):
        yield from it.compute((g,), seconds)
        ends.append((g, env.now))
    env.process(job(1, 1.0))  # starts at 0.1 with the copy running: 1.1 s
    env.run(until=0.2)
    assert it.factor(0) == pytest.approx(1.35) and it.factor(1) == pytest.approx(1.1)
    env.process(job(0, 1.0))  # starts at 0.2: gpu 1 computing and 2 GB/s copied -> 1.35 s
    env.run()
    assert ends == [(1, pytest.approx(1.2)), (0, pytest.approx(1.55))]
    assert it.factor(0) == 1.0


def test_host_cores_and_per_job_interference_are_refused_together(tmp_path):
    from pipeboost.errors import ScenarioError
    from pipeboost.scenario import load_params_file

    path = tmp_path / "p.yaml"
    path.write_text("host_cores: 2.0\ncompute_interference_per_job: 0.1\n")
    with pytest.raises(ScenarioError, match=r"p.yaml: compute_interference_per_job: host_cores and "
                                            r"compute_interference_per_job both model"):
        load_params_file(path)
    path.write_text("host_cores: 2.0\ncompute_interference_per_gbps: 0.1\n")
    assert load_params_file(path).compute_interference_per_gbps == 0.1


def test_copies_slow_while_the_node_computes_and_recover_after():
    """gamma = 1: a 4 GB copy on a 2 GB/s link runs at 1 GB/s while GPU 0 computes (1 s to 2 s), so it ends
    at 2.5 s instead of 2 s; the network's capacity is back to nominal afterwards."""
    import simpy

    from pipeboost.costs import CostParams
    from sim.interference import Interference
    from sim.network import FluidNetwork

    env = simpy.Environment()
    net = FluidNetwork(env, {"n0.gpu0": 2e9})
    it = Interference(env, CostParams(copy_interference_per_job=1.0), 2, [net], {0: "n0.gpu0"})
    done = net.transfer(("n0.gpu0",), 4e9)
    ends = {}

    def job():
        yield env.timeout(1.0)
        yield from it.compute((0,), 1.0)
        ends["job"] = env.now

    def copy():
        yield done
        ends["copy"] = env.now
    env.process(job())
    env.process(copy())
    env.run()
    assert ends == {"job": pytest.approx(2.0), "copy": pytest.approx(2.5)}
    assert net.capacity_bytes_per_s["n0.gpu0"] == 2e9


def test_copies_slow_by_the_cores_oversubscription_when_more_gpus_compute_than_host_cores():
    """gamma = 0.25, 4 GPUs on 2 host cores: a 4 GB copy on a 2 GB/s link runs at 2 / (1 + 0.25 x 4 x 4/2) =
    2/3 GB/s while all four compute (1 s to 2 s), so it ends at 2 + (4 - 2 - 2/3) / 2 = 2.667 s; with two
    computing (2 / 2 = 1: no oversubscription) it would run at 2 / 1.5 = 4/3 GB/s."""
    import simpy

    from pipeboost.costs import CostParams
    from sim.interference import Interference
    from sim.network import FluidNetwork

    ends = {}
    for computing in (4, 2):
        env = simpy.Environment()
        net = FluidNetwork(env, {"n0.gpu0": 2e9})
        it = Interference(env, CostParams(copy_interference_per_job=0.25, host_cores=2.0), 4, [net],
                          {0: "n0.gpu0"})
        done = net.transfer(("n0.gpu0",), 4e9)

        def job(g):
            yield env.timeout(1.0)
            yield from it.compute((g,), 1.0)

        def copy():
            yield done
            ends[computing] = env.now
        for g in range(computing):
            env.process(job(g))
        env.process(copy())
        env.run()
    assert ends == {4: pytest.approx(2.0 + (2.0 - 2.0 / 3.0) / 2.0), 2: pytest.approx(2.0 + (2.0 - 4.0 / 3.0) / 2.0)}


def test_a_profile_concurrency_slowdown_stretches_a_job_that_starts_while_another_gpu_computes():
    """Two replicas prefill at the same instant: the job started first sees nobody computing (its
    measured time), the second sees one other GPU computing (x (1 + the profile's concurrency slowdown))."""
    from pipeboost.compute_profile import ComputeProfile, KindProfile, shape_key

    base = tiny_scenario("load_then_run", gpus=2, cold_start_gpus=2, requests=2, prompt=16, output=1,
                         rate_per_s=1e9, max_batch=1)  # one request per replica
    kind = KindProfile((1, 64), (1e-3, 1e-3), (1,), (1e-3,))
    alpha = 0.25
    profile = ComputeProfile(shape_key(base.model), kind, kind, kind, concurrency_slowdown=alpha)
    sc = replace(base, params=replace(base.params, compute_profiles=(profile,)),
                 serving=replace(base.serving, replica_prefill="sequential"))
    res = run_simulation(sc)
    prefills = sorted(of_kind(res.trace, TraceKind.PREFILL), key=lambda r: r.duration_s)
    assert len(prefills) == 2 and {r.gpu for r in prefills} == {0, 1}
    assert prefills[0].t_start_s == prefills[1].t_start_s
    measured = prefills[0].duration_s
    assert prefills[1].duration_s == pytest.approx(measured * (1 + alpha), **EXACT)
    without = replace(sc.params, compute_profiles=(replace(profile, concurrency_slowdown=0.0),))
    plain = run_simulation(replace(sc, params=without))
    assert [r.duration_s for r in of_kind(plain.trace, TraceKind.PREFILL)] == pytest.approx([measured] * 2, **EXACT)


def test_the_model_concurrency_slowdown_counts_once_however_many_others_compute():
    """Measured with two devices, it is charged once when any other GPU computes (core sharing covers
    more), while ``compute_interference_per_job`` stays per other GPU."""
    import simpy

    from pipeboost.costs import CostParams
    from sim.interference import Interference
    from sim.network import FluidNetwork

    from pipeboost.compute_profile import ComputeProfile, KindProfile

    kind = KindProfile((1, 64), (1e-3, 1e-3), (1,), (1e-3,))
    profile = ComputeProfile("toy", kind, kind, kind, concurrency_slowdown=0.2, prefill_concurrency_slowdown=0.05)
    env = simpy.Environment()
    it = Interference(env, CostParams(compute_interference_per_job=0.01), 4, [FluidNetwork(env, {"l": 1e9})],
                      profile=profile)
    assert it.factor(0) == 1.0  # nobody else computes: no concurrency term

    def job(g):
        yield from it.compute((g,), 1.0)
    for g in (1, 2, 3):
        env.process(job(g))
    env.run(until=0.5)
    assert it.factor(0) == pytest.approx(1.0 + 0.01 * 3 + 0.2)  # a decode job
    assert it.factor(0, prefill_share=1.0) == pytest.approx(1.0 + 0.01 * 3 + 0.05)
    assert it.factor(0, prefill_share=0.25) == pytest.approx(1.0 + 0.01 * 3 + 0.25 * 0.05 + 0.75 * 0.2)
    assert Interference.enabled(CostParams(), profile) and not Interference.enabled(CostParams())
    assert not Interference.enabled(CostParams(), ComputeProfile("toy", kind, kind, kind))


def test_prefill_and_decode_pay_their_own_concurrency_slowdown():
    """Two replicas working at once: a prefill job that starts while the other GPU computes is stretched by
    the prefill value, a decode job by the decode value (exact: sequential replicas keep each phase in its
    own job)."""
    from pipeboost.compute_profile import ComputeProfile, KindProfile, shape_key

    base = tiny_scenario("load_then_run", gpus=2, cold_start_gpus=2, requests=2, prompt=16, output=3,
                         rate_per_s=1e9, max_batch=1)
    kind = KindProfile((1, 64), (1e-3, 1e-3), (1,), (1e-3,))
    sc = replace(base, serving=replace(base.serving, replica_prefill="sequential"))

    def durations(prefill_value: float | None, decode_value: float) -> tuple[list[float], list[float]]:
        profile = ComputeProfile(shape_key(base.model), kind, kind, kind, concurrency_slowdown=decode_value,
                                 prefill_concurrency_slowdown=prefill_value)
        res = run_simulation(replace(sc, params=replace(sc.params, compute_profiles=(profile,))))
        return ([r.duration_s for r in of_kind(res.trace, TraceKind.PREFILL)],
                [r.duration_s for r in of_kind(res.trace, TraceKind.DECODE)])
    pre0, dec0 = durations(0.0, 0.0)
    pre, dec = durations(0.0, 0.5)
    assert pre == pytest.approx(pre0, **EXACT)  # the prefills pay nothing
    assert max(d / d0 for d, d0 in zip(dec, dec0)) == pytest.approx(1.5, **EXACT)
    pre_same, _ = durations(None, 0.5)  # unset: the decode value for both
    assert max(d / d0 for d, d0 in zip(pre_same, pre0)) == pytest.approx(1.5, **EXACT)


def _host_node(params, gpus: int = 2):
    """One node with host cores: a 1 GiB/s link per GPU plus the CPU links, and its Interference."""
    import simpy

    from sim.hostcpu import cpu_capacities, host_cpu
    from sim.interference import Interference
    from sim.network import FluidNetwork

    env = simpy.Environment()
    caps = {f"link{g}": 2.0**30 for g in range(gpus)}
    caps.update(cpu_capacities(params, 0, range(gpus)))
    net = FluidNetwork(env, caps)
    cpus = [host_cpu(params, net, 0, g) for g in range(gpus)]
    it = Interference(env, params, gpus, [net], {g: f"link{g}" for g in range(gpus)})
    return env, net, cpus, it


def _run_jobs(env, it, cpus, starts: dict[int, float], seconds: float = 1.0) -> dict[int, float]:
    ends: dict[int, float] = {}

    def job(g, start):
        yield env.timeout(start)
        yield from it.compute((g,), seconds, cpus)
        ends[g] = env.now
    for g, start in starts.items():
        env.process(job(g, start))
    env.run()
    return ends


def test_compute_on_host_cores_is_not_counted_as_bytes_copied():
    """The node's network carries the compute jobs' core-ns too: only flows over the GPUs' links are copies,
    so a job starting while another computes (and nothing is copied) gets no copy term: both end at 1 s
    on two cores (counted as 1 GB/s, the second job took 1.05 s)."""
    from pipeboost.costs import CostParams

    env, net, cpus, it = _host_node(CostParams(host_cores=2.0, compute_interference_per_gbps=0.05))
    ends = _run_jobs(env, it, cpus, {0: 0.0, 1: 0.5})
    assert ends == {0: 1.0, 1: 1.5}
    assert it.copy_gbps(0) == 0.0


def test_the_copy_term_caps_a_thread_that_has_a_core_to_itself():
    """beta = 0.25 per GB/s, a 1 GiB/s copy: a job alone on two cores runs at 1 / (1 + 0.25 x 1.074) of a
    core, so it takes 1.268 s; the thread link is back to one core afterwards."""
    from pipeboost.costs import CostParams
    from sim.hostcpu import CORE_NS

    env, net, cpus, it = _host_node(CostParams(host_cores=2.0, compute_interference_per_gbps=0.25))
    net.transfer(("link0",), 2.0**32)
    ends = _run_jobs(env, it, cpus, {1: 0.0})
    assert ends[1] == pytest.approx(1.0 + 0.25 * 2.0**30 / 1e9, rel=1e-12)
    assert net.capacity_bytes_per_s[cpus[1].thread_link] == CORE_NS


def test_with_the_cores_oversubscribed_the_fair_share_not_the_copy_term_sets_the_pace():
    """Two jobs on one core during a copy: each thread's fair share, half a core, is below the copy term's
    cap (1 / 1.268), so both take 2 s, as without the copy; the copy term does not stretch them further."""
    from pipeboost.costs import CostParams

    env, net, cpus, it = _host_node(CostParams(host_cores=1.0, compute_interference_per_gbps=0.25))
    net.transfer(("link0",), 2.0**34)
    assert _run_jobs(env, it, cpus, {0: 0.0, 1: 0.0}) == {0: pytest.approx(2.0), 1: pytest.approx(2.0)}


def test_copies_take_host_cores_from_compute_when_copy_cpu_is_modelled():
    """``copy_cpu_s_per_byte``: a copy at 1 GiB/s needing 0.5 core leaves 1.5 of two cores to three jobs:
    each runs at 0.5 core (2 s); the copy keeps its rate (its 0.5 core is below its fair share)."""
    from pipeboost.costs import CostParams
    from sim.hostcpu import CORE_NS

    params = CostParams(host_cores=2.0, copy_cpu_s_per_byte=0.5 / 2.0**30)
    env, net, cpus, it = _host_node(params, gpus=3)
    links, extra = cpus[0].copy_links(("link0",))
    done = net.transfer(links, 2.0**32, 0.0, **extra)
    ends = _run_jobs(env, it, cpus, {0: 0.0, 1: 0.0, 2: 0.0})
    assert ends == {g: pytest.approx(2.0, rel=1e-6) for g in range(3)}
    assert net.capacity_bytes_per_s[cpus[0].cpu_link] == 2.0 * CORE_NS
    assert done.triggered


def test_host_cores_follow_the_gpus_computing_with_host_cores_many():
    """``host_cores`` 2 with two threads, ``host_cores_many`` 1 with four: three jobs from 0 s share 1.5 cores
    (half a core each, 0.5 s of work done by 1 s); the fourth job from 1 s leaves 1 core to four (a quarter
    each), so the first three end at 1 + 0.5 / 0.25 = 3 s; the fourth, 0.5 s done by then, alone on its
    thread's one core ends at 3.5 s; the node's cores are back to 2 when nothing computes."""
    from pipeboost.costs import CostParams

    params = CostParams(host_cores=2.0, host_cores_many=1.0, host_cores_many_threads=4)
    env, net, cpus, it = _host_node(params, gpus=4)
    ends = _run_jobs(env, it, cpus, {0: 0.0, 1: 0.0, 2: 0.0, 3: 1.0})
    from sim.hostcpu import CORE_NS

    assert ends == {0: pytest.approx(3.0, rel=1e-9), 1: pytest.approx(3.0, rel=1e-9), 2: pytest.approx(3.0, rel=1e-9),
                    3: pytest.approx(3.5, rel=1e-9)}
    assert net.capacity_bytes_per_s[cpus[0].cpu_link] == 2.0 * CORE_NS
    env, net, cpus, it = _host_node(CostParams(host_cores=2.0), gpus=4)  # without it: 2 cores throughout,
    # two thirds of a core each until 1 s, then half: 1 + (1/3) / 0.5 s; the fourth ends 2/3 s later
    assert _run_jobs(env, it, cpus, {0: 0.0, 1: 0.0, 2: 0.0, 3: 1.0}) == {
        0: pytest.approx(5.0 / 3.0, rel=1e-9), 1: pytest.approx(5.0 / 3.0, rel=1e-9),
        2: pytest.approx(5.0 / 3.0, rel=1e-9), 3: pytest.approx(7.0 / 3.0, rel=1e-9)}


def test_host_cores_for_interpolates_between_two_threads_and_the_many_threads_value():
    from pipeboost.costs import CostParams

    p = CostParams(host_cores=1.8, host_cores_many=1.6, host_cores_many_threads=4)
    assert [p.host_cores_for(k) for k in (1, 2, 3, 4, 6)] == [1.8, 1.8, pytest.approx(1.7), 1.6, 1.6]
    assert CostParams(host_cores=1.8).host_cores_for(4) == 1.8
    assert CostParams().host_cores_for(4) is None
    # host_cores measured with three threads (calibrate --devices cpu:3): the line starts there
    p3 = CostParams(host_cores=1.7, host_cores_many=1.5, host_cores_threads=3, host_cores_many_threads=5)
    assert [p3.host_cores_for(k) for k in (2, 3, 4, 5, 6)] == [1.7, 1.7, pytest.approx(1.6), 1.5, 1.5]


def test_params_refuse_host_cores_many_without_host_cores_and_too_few_threads(tmp_path):
    from pipeboost.errors import PipeBoostError
    from pipeboost.scenario import load_params_file

    for body, key in (("host_cores_many: 1.5\n", "host_cores_many"),
                      ("host_cores: 1.8\nhost_cores_many: 1.5\nhost_cores_many_threads: 2\n", "host_cores_many_threads"),
                      ("host_cores: 1.8\nhost_cores_threads: 4\n", "host_cores_many_threads"),
                      ("host_cores: 1.8\nhost_cores_threads: 0\n", "host_cores_threads"),
                      ("host_cores: 1.8\nhost_cores_threads: 2.5\n", "host_cores_threads")):
        path = tmp_path / "p.yaml"
        path.write_text(body)
        with pytest.raises(PipeBoostError) as err:
            load_params_file(path)
        assert key in str(err.value) and "p.yaml" in str(err.value)
