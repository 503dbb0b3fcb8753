"""The request pool's dispatch order of idle servers."""

from __future__ import annotations

import simpy

from sim.pool import RELEASE, RequestPool
from sim.state import Tracer


def _pool() -> tuple[simpy.Environment, RequestPool]:
    env = simpy.Environment()
    return env, RequestPool(env, Tracer(), lambda: None)


class _Req:
    done = False


def test_a_request_wakes_the_lowest_gpu_of_the_most_recently_idle_instance():
    env, pool = _pool()
    a0, a1 = pool.wait_work(("replica", 0, 0)), pool.wait_work(("replica", 0, 1))
    b2 = pool.wait_work(("replica", 1, 2))
    b3 = pool.wait_work(("replica", 1, 3))  # the last to turn idle, but not the lowest GPU of its instance
    pool.push(_Req())
    assert (b2.triggered, b3.triggered, a0.triggered, a1.triggered) == (True, False, False, False)
    pool.push(_Req())
    assert b3.triggered and not a0.triggered
    pool.push(_Req())
    assert a0.triggered and not a1.triggered and a0.value is None


def test_withdrawn_and_forgotten_owners_are_never_woken():
    env, pool = _pool()
    pipeline = pool.wait_work(("pipeline", 0))
    replica = pool.wait_work(("replica", 0, 1))
    pool.withdraw(("pipeline", 0))
    assert pipeline.value == RELEASE
    again = pool.wait_work(("replica", 0, 0))
    pool.forget(("replica", 0, 0))
    pool.push(_Req())
    assert replica.triggered and not again.triggered
    pool.push(_Req())  # nobody idle now; a woken server takes from the queue itself
    assert len(pool) == 2 and not again.triggered


def test_least_busy_dispatch_assigns_on_arrival_and_wakes_only_the_chosen_replica():
    from sim.pool import ReplicaQueue

    env, pool = _pool()
    running = {0: 1, 1: 0, 2: 0}
    replicas = {g: ReplicaQueue(("replica", 0, g), g, lambda g=g: running[g]) for g in (2, 0, 1)}
    for r in replicas.values():
        pool.attach(r)
    idle1, idle2 = pool.wait_work(("replica", 0, 1)), pool.wait_work(("replica", 0, 2))
    first, second, third = _Req(), _Req(), _Req()
    pool.push(first)  # gpu 1 and 2 have nothing: the lower GPU
    assert list(replicas[1].queue) == [first] and idle1.triggered and not idle2.triggered
    pool.push(second)  # gpu 0 runs one, gpu 1 holds one queued: gpu 2
    pool.push(third)  # all at one: gpu 0
    assert list(replicas[2].queue) == [second] and list(replicas[0].queue) == [third] and idle2.triggered
    assert len(pool) == 0 and replicas[0].take(5) == [third]
    assert pool.detach(("replica", 0, 2)) == [second] and pool.detach(("replica", 0, 2)) == []
    last = _Req()
    pool.push(last)  # gpu 2 detached; gpu 0 runs one, gpu 1 holds one queued: the tie goes to gpu 0
    assert list(replicas[0].queue) == [last] and len(replicas[1].queue) == 1
