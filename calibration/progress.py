"""A tqdm progress bar that can be switched off (tests, non-interactive runs)."""

from __future__ import annotations

from typing import Any


class Progress:
    """``tick(n)`` advances, ``stage(name)`` sets the description; a no-op when ``enabled`` is false."""

    def __init__(self, total: int, enabled: bool = True, desc: str = "calibrate") -> None:
        self._bar: Any = None
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit="step", leave=True)

    def stage(self, name: str) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(name)

    def tick(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
