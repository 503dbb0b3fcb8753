"""Provenance of a calibration: machine, devices, date, package versions, git revision.

Everything here is read-only introspection; nothing is written. The dict goes into
``CostParams.provenance`` so a prediction says which calibration (and which code) it used.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import logging
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PACKAGES = ("torch", "transformers", "safetensors", "simpy", "numpy", "scipy")


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each package (``None`` when not installed)."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_revision(repo_dir: Path | None = None) -> str | None:
    """``git rev-parse HEAD`` of the executor's checkout (plus ``-dirty`` if executor/ has changes)."""
    repo_dir = repo_dir or Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo_dir, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "executor"], cwd=repo_dir,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("-dirty" if dirty else "")


def machine_info() -> dict[str, Any]:
    """Host name, OS, CPU model and logical core count (from :mod:`platform` and ``/proc/cpuinfo``)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"node": platform.node(), "system": platform.platform(), "cpu": cpu, "cores": os.cpu_count(),
            "python": platform.python_version()}


def device_info(devices: str) -> dict[str, Any]:
    """The device spec and, on CUDA, the GPU names."""
    info: dict[str, Any] = {"spec": devices}
    if devices.startswith("cuda"):
        import torch

        info["names"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def build_provenance(devices: str, model: str, dtype: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The provenance dict of one calibration run (``extra`` is merged in last)."""
    prov: dict[str, Any] = {
        "source": "pipeboost calibrate (executor microbenchmarks)",
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "devices": device_info(devices),
        "model": model,
        "dtype": dtype,
        "packages": package_versions(),
        "executor_git_revision": git_revision(),
    }
    prov.update(extra or {})
    return prov
