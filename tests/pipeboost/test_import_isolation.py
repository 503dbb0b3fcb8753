"""The shared vocabulary must not import the engines' heavy dependencies."""

import subprocess
import sys


def test_pipeboost_imports_neither_simpy_nor_torch():
    code = (
        "import sys, pkgutil, importlib, pipeboost\n"
        "for m in pkgutil.walk_packages(pipeboost.__path__, 'pipeboost.'):\n"
        "    if m.name != 'pipeboost.plots':\n"
        "        importlib.import_module(m.name)\n"
        "bad = [n for n in ('simpy', 'torch', 'transformers') if n in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
