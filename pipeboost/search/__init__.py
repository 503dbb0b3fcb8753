"""Policy search in the simulator (optuna): spaces, evaluation, the ask/tell loop, tidy result rows.

Import :mod:`pipeboost.search.runner` (needs optuna) only to search; :mod:`space` and :mod:`tidy` need
nothing beyond the base install.
"""

from pipeboost.search.space import Constraint, Objective, ParamSpec, SearchSpace, load_space, space_from_dict
from pipeboost.search.tidy import METRIC_NAMES, flat_metrics, pareto_mask, write_rows_csv

__all__ = ["Constraint", "Objective", "ParamSpec", "SearchSpace", "load_space", "space_from_dict", "METRIC_NAMES",
           "flat_metrics", "pareto_mask", "write_rows_csv"]
