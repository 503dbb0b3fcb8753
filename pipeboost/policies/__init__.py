"""Policies: pure functions from specs to plans, in registries keyed by kind and name.

Kinds: ``partition`` (model -> stages), ``loading_order`` (stages -> per-GPU order), ``recovery``
(failure -> who serves what). :func:`build_plan` combines a scenario's choices into a validated plan.
"""

from pipeboost.policies.build import build_partition, build_plan, recovery_policy
from pipeboost.policies.registry import POLICY_KINDS, get_policy, policy_names, register_policy

__all__ = ["build_partition", "build_plan", "recovery_policy", "POLICY_KINDS", "get_policy", "policy_names",
           "register_policy"]
