"""Shared fixtures of the search tests: a small, fast base scenario."""

from pathlib import Path

import pytest

from pipeboost.scenario import load_scenario

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="session")
def base_scenario():
    """OPT-1.3B on 4 x A100 (the README's example): simulates in well under a second."""
    return load_scenario(ROOT / "scenarios" / "opt-1.3b-4xa100.yaml")
