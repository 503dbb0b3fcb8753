"""Policy registries: one dict per policy kind, filled by the :func:`register_policy` decorator."""

from __future__ import annotations

from typing import Callable, TypeVar

from pipeboost.errors import PlanError

POLICY_KINDS = ("partition", "loading_order", "recovery")

_REGISTRY: dict[str, dict[str, Callable]] = {kind: {} for kind in POLICY_KINDS}

F = TypeVar("F", bound=Callable)


def register_policy(kind: str, name: str) -> Callable[[F], F]:
    """Register a pure policy function under ``kind``/``name``."""
    if kind not in _REGISTRY:
        raise ValueError(f"unknown policy kind {kind!r}; valid: {', '.join(POLICY_KINDS)}")

    def decorate(fn: F) -> F:
        if name in _REGISTRY[kind]:
            raise ValueError(f"{kind} policy {name!r} registered twice")
        _REGISTRY[kind][name] = fn
        return fn

    return decorate


def policy_names(kind: str) -> tuple[str, ...]:
    """Registered names of ``kind``, sorted."""
    _ensure_loaded()
    return tuple(sorted(_REGISTRY[kind]))


def get_policy(kind: str, name: str) -> Callable:
    """The policy ``kind``/``name``; an unknown name raises :class:`PlanError` listing the valid ones."""
    _ensure_loaded()
    try:
        return _REGISTRY[kind][name]
    except KeyError:
        valid = ", ".join(policy_names(kind)) if kind in _REGISTRY else ""
        raise PlanError(f"unknown {kind} policy {name!r}; valid: {valid}") from None


def _ensure_loaded() -> None:
    # Importing the policy modules registers them; done lazily to avoid import cycles.
    from pipeboost.policies import loading, partition, recovery  # noqa: F401
