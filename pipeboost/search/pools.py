"""Where trial evaluations run: in this process, in local worker processes, or as Ray tasks.

Each pool is a context manager with ``submit(fn, *args) -> concurrent.futures.Future``; the optuna study
lives only in the parent process (ask/tell), so workers never touch the storage.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from pipeboost.errors import PipeBoostError

log = logging.getLogger(__name__)
Submit = Callable[..., Future]


class InlinePool:
    """Evaluates at submission, in this process (``--jobs 1``: easy to debug, no pickling)."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except Exception as exc:  # handed to the caller through the future, as a process pool would
            future.set_exception(exc)
        return future


@contextmanager
def open_pool(jobs: int, ray_address: str | None = None) -> Iterator[Submit]:
    """A ``submit`` function running up to ``jobs`` evaluations at once (Ray: as many as the cluster runs)."""
    if ray_address:
        yield _ray_submit(ray_address)
        return
    if jobs <= 1:
        yield InlinePool().submit
        return
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        yield pool.submit


def _ray_submit(address: str) -> Submit:
    try:
        import ray
    except ImportError:
        raise PipeBoostError("install ray to use --ray (pip install 'ray[default]'), or drop --ray to run "
                             "trials in local processes with --jobs") from None
    ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    log.info("connected to Ray at %s", address)

    def submit(fn: Callable[..., Any], *args: Any) -> Future:
        return ray.remote(fn).remote(*args).future()
    return submit
