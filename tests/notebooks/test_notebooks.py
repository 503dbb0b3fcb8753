"""Every notebook executes top to bottom with small parameters (PIPEBOOST_NB_SMALL=1), in well under 30 s."""

import os
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((Path(__file__).parents[2] / "notebooks").glob("*.ipynb"))


def execute(path: Path, small: bool, timeout_s: int = 120) -> "nbformat.NotebookNode":
    """Run a notebook in its folder with a fresh kernel; the executed notebook is returned, not saved."""
    nb = nbformat.read(path, as_version=4)
    previous = os.environ.get("PIPEBOOST_NB_SMALL")
    os.environ["PIPEBOOST_NB_SMALL"] = "1" if small else "0"
    try:
        nbclient.NotebookClient(nb, timeout=timeout_s, kernel_name="python3",
                                resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        if previous is None:
            os.environ.pop("PIPEBOOST_NB_SMALL", None)
        else:
            os.environ["PIPEBOOST_NB_SMALL"] = previous
    return nb


def test_there_are_four_notebooks():
    assert [p.stem for p in NOTEBOOKS] == ["01_cold_start_walkthrough", "02_policy_search", "03_calibration_report",
                                           "04_failure_recovery"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes_small_and_draws_figures(path):
    t0 = time.perf_counter()
    nb = execute(path, small=True)
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert images, "every notebook shows at least one figure"
    assert time.perf_counter() - t0 < 60


def test_committed_notebooks_carry_their_figures():
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        assert any("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", [])), f"{path.name}: execute it once and save the outputs"
