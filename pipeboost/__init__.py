"""PipeBoost: shared vocabulary (specs, scenarios, plans, policies, costs, traces, metrics) and the CLI.

This package imports neither simpy nor torch: the engines live in ``sim`` and ``executor``.
"""

__version__ = "0.1.0"
