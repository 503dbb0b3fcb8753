"""The PipeBoost error hierarchy.

Every error a user can cause derives from :class:`PipeBoostError` and carries a message that names the
offending file, key or value and what to change.  Recovery code catches the specific subclasses only.
"""

from __future__ import annotations


class PipeBoostError(Exception):
    """Base class of every error PipeBoost raises on purpose."""


EXIT_USAGE = 2
"""Exit status of a command refused for bad input (as argparse's)."""


def report_error(exc: PipeBoostError) -> int:
    """Print ``pipeboost: error: MESSAGE`` to stderr (no traceback) and return :data:`EXIT_USAGE`: how every
    command line tool ends on a :class:`PipeBoostError`."""
    import sys

    print(f"pipeboost: error: {exc}", file=sys.stderr)
    return EXIT_USAGE


class ScenarioError(PipeBoostError):
    """A scenario document (YAML or dict) is malformed or describes something impossible.

    The message has the form ``FILE: KEY.PATH: problem; fix`` so the user can go straight to the key.
    """

    def __init__(self, problem: str, *, file: str | None = None, key_path: str | None = None,
                 fix: str | None = None) -> None:
        self.problem = problem
        self.file = file
        self.key_path = key_path
        self.fix = fix
        parts = []
        if file:
            parts.append(str(file))
        if key_path:
            parts.append(key_path)
        text = ": ".join(parts + [problem]) if parts else problem
        if fix:
            text += f"; {fix}"
        super().__init__(text)


class PlanError(PipeBoostError):
    """A plan violates an invariant (layer coverage, load order, memory) or names an unknown policy."""


class CheckpointError(PipeBoostError):
    """A checkpoint is missing, truncated, or has a tensor of the wrong name, dtype or shape."""


class DeviceFailure(PipeBoostError):
    """A device (GPU or virtual device) failed; ``device`` is its index and ``cause`` says why."""

    def __init__(self, device: int, cause: str = "injected fault") -> None:
        self.device = device
        self.cause = cause
        super().__init__(f"device {device} failed: {cause}")
