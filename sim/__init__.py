"""SimPy simulator of PipeBoost cold starts, serving, baselines and failures.

Entry point: :func:`run_simulation` (``scenario -> SimResult``); :func:`sim.compare.compare_modes` runs
PipeBoost against its baselines on the same scenario and costs.
"""

from sim.engine import SimResult, Simulation, run_simulation

__all__ = ["SimResult", "Simulation", "run_simulation"]
