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
