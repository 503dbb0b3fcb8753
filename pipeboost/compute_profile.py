"""Measured compute profiles: per-unit times of one model shape on one device kind, from calibration.

The roofline of :mod:`pipeboost.costs` (FLOPs and bytes over efficiencies of the peak figures) predicts
devices nobody has measured. Where ``pipeboost calibrate`` has *profiled* a model shape on the machine
(the executor's own unit modules: prefill vs tokens, decode vs batch and cached context, as Vidur profiles
operators), the cost model uses the measurements instead:

* prefill of ``tokens`` new tokens per sequence for ``batch`` sequences (no cached context):
  piecewise-linear interpolation over the measured token counts at ``tokens x batch`` tokens in all,
  flat below the smallest measured count, extrapolated with the last segment's slope above the largest;
* a decode step (one new token for each of ``batch`` sequences, ``context`` cached tokens each):
  ``step(batch) + c * batch * context`` seconds, where ``step`` interpolates the measured batch sizes
  (piecewise linear; beyond the largest, the average slope from the smallest to the largest) and ``c`` is
  the time per cached token read (a least-squares fit over the measured contexts). The batch is a table,
  not a line: on CPUs a batch of one runs matrix-vector kernels and larger batches GEMMs, so the step time
  jumps from 1 to 2 sequences and then grows slowly;
* a chunk of ``tokens > 1`` after cached context: the chunk's prefill plus ``c`` per cached token read;
* plus ``runtime_overhead_s`` per unit call: the executor runtime's own work around a module call
  (waiting for residency, tracing), measured by calibration outside the modules;
* ``concurrency_slowdown`` (default 0): how much slower the shape's units run while another device of the
  node computes at the same time, beyond host-core sharing (:mod:`sim.interference` applies it), and
  ``prefill_concurrency_slowdown`` (default: the same) the prefill units' own value: on CPU virtual devices
  a prefill spends its time in torch kernels that release the interpreter, a decode step in the Python
  around them, so the two phases lose very differently to a second worker thread.

A profile applies to every :class:`~pipeboost.spec.ModelSpec` of the same *shape* (:func:`shape_key`:
family, hidden size, FFN size, attention and KV heads, vocabulary, dtype): the number of layers may differ,
since the profile is per unit. All times are seconds.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from pipeboost.spec import EMBED_UNIT, ModelSpec

UNIT_KINDS = ("embed", "layer", "head")


class ProfileError(ValueError):
    """A malformed compute profile (the params loader turns it into a ScenarioError naming the key)."""


def shape_key(model: ModelSpec) -> str:
    """``family:h<hidden>:f<ffn>:a<heads>/<kv heads>:v<vocab>:<dtype>``: what a profile is valid for."""
    return (f"{model.family}:h{model.hidden_size}:f{model.intermediate_size}:a{model.num_heads}/"
            f"{model.num_kv_heads}:v{model.vocab_size}:{model.dtype}")


def unit_kind(model: ModelSpec, unit: int) -> str:
    """``embed``, ``layer`` or ``head`` for a unit index of ``model``."""
    if unit == EMBED_UNIT:
        return "embed"
    return "head" if unit == model.head_unit else "layer"


@dataclass(frozen=True)
class KindProfile:
    """Measured times of one unit kind: prefill at ``prefill_tokens`` (ascending) and the decode fit."""

    prefill_tokens: tuple[int, ...]
    prefill_s: tuple[float, ...]
    decode_batches: tuple[int, ...]
    decode_s: tuple[float, ...]
    """Decode step seconds at ``decode_batches`` sequences with no cached context."""
    decode_context_s: float = 0.0
    """Seconds per cached token read in a decode step (summed over the batch's sequences)."""

    def __post_init__(self) -> None:
        for what, xs, ys in (("prefill", self.prefill_tokens, self.prefill_s),
                             ("decode", self.decode_batches, self.decode_s)):
            if not xs or len(xs) != len(ys):
                raise ProfileError(f"{what} needs one or more [count, seconds] points")
            if list(xs) != sorted(set(xs)) or xs[0] < 1:
                raise ProfileError(f"{what} counts must be distinct, ascending and >= 1, got {list(xs)}")
            if min(ys) < 0:
                raise ProfileError(f"{what} seconds must not be negative, got {list(ys)}")
        if self.decode_context_s < 0:
            raise ProfileError(f"decode context_s_per_token must not be negative, got {self.decode_context_s}")

    def prefill_at(self, tokens_total: float) -> float:
        """Prefill seconds for ``tokens_total`` new tokens (interpolated; see the module docstring)."""
        return _interpolate(self.prefill_tokens, self.prefill_s, tokens_total, last_segment=True)

    def decode_at(self, batch: int, context_total: float) -> float:
        """One decode step for ``batch`` sequences with ``context_total`` cached tokens in all."""
        return _interpolate(self.decode_batches, self.decode_s, batch, last_segment=False) + \
            self.decode_context_s * context_total

    def to_dict(self) -> dict[str, Any]:
        return {"prefill": [[t, s] for t, s in zip(self.prefill_tokens, self.prefill_s)],
                "decode": {"batches": [[b, s] for b, s in zip(self.decode_batches, self.decode_s)],
                           "context_s_per_token": self.decode_context_s}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "KindProfile":
        try:
            points = sorted((int(t), float(s)) for t, s in data["prefill"])
            batches = sorted((int(b), float(s)) for b, s in data["decode"]["batches"])
            per_token = float(data["decode"].get("context_s_per_token", 0.0))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ProfileError("needs prefill: [[tokens, seconds], ...] and decode: {batches: [[batch, seconds], "
                               f"...], context_s_per_token: seconds}} ({type(exc).__name__}: {exc})") from None
        return cls(tuple(t for t, _ in points), tuple(s for _, s in points),
                   tuple(b for b, _ in batches), tuple(s for _, s in batches), per_token)


def _interpolate(xs: Sequence[int], ys: Sequence[float], x: float, last_segment: bool) -> float:
    """Piecewise-linear ``y(x)``: flat below ``xs[0]``; above ``xs[-1]`` the last segment's slope
    (``last_segment``) or the average slope from the first to the last point (never below 0)."""
    if x <= xs[0]:
        return ys[0]
    if len(xs) == 1:
        return ys[0] * x / xs[0]
    if x >= xs[-1]:
        x0, y0 = (xs[-2], ys[-2]) if last_segment else (xs[0], ys[0])
        slope = max((ys[-1] - y0) / (xs[-1] - x0), 0.0)
        return ys[-1] + slope * (x - xs[-1])
    i = bisect.bisect_left(xs, x)
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


@dataclass(frozen=True)
class ComputeProfile:
    """Profiles of the three unit kinds of one model shape (see the module docstring)."""

    shape: str
    embed: KindProfile
    layer: KindProfile
    head: KindProfile
    runtime_overhead_s: float = 0.0
    info: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)
    """Where it came from (model preset, device, residuals of the decode fits): not used for predictions."""
    concurrency_slowdown: float = 0.0
    """Extra slowdown of this shape's units per other device of the node computing at the same time, beyond
    the sharing of ``CostParams.host_cores`` (the interpreter and memory the executor's workers share on CPU
    virtual devices); used by :mod:`sim.interference`. 0: none. Decode units, and prefill units unless
    :attr:`prefill_concurrency_slowdown` is set."""
    prefill_concurrency_slowdown: float | None = None
    """The same for prefill units; None: :attr:`concurrency_slowdown`."""

    def concurrency_slowdown_for(self, prefill_share: float) -> float:
        """The concurrency slowdown of a job whose cost-model time is ``prefill_share`` (0..1) prefill and
        the rest decode: the two phases' values weighted by time."""
        prefill = self.concurrency_slowdown if self.prefill_concurrency_slowdown is None \
            else self.prefill_concurrency_slowdown
        return prefill_share * prefill + (1.0 - prefill_share) * self.concurrency_slowdown

    def kind(self, name: str) -> KindProfile:
        return {"embed": self.embed, "layer": self.layer, "head": self.head}[name]

    def unit_s(self, model: ModelSpec, unit: int, tokens: int, batch: int = 1, context: int = 0) -> float:
        """Measured seconds of ``unit`` (module time only; :attr:`runtime_overhead_s` is separate)."""
        kind = self.kind(unit_kind(model, unit))
        if tokens <= 1:
            return kind.decode_at(batch, batch * context)
        return kind.prefill_at(tokens * batch) + kind.decode_context_s * batch * context

    def decode_step_s(self, model: ModelSpec, unit: int, batch: int, context_total: float) -> float:
        """Measured seconds of one decode step of ``unit`` (``context_total`` cached tokens in all)."""
        return self.kind(unit_kind(model, unit)).decode_at(batch, context_total)

    def to_dict(self) -> dict[str, Any]:
        return {"shape": self.shape, "runtime_overhead_s": self.runtime_overhead_s,
                "concurrency_slowdown": self.concurrency_slowdown,
                **({} if self.prefill_concurrency_slowdown is None
                   else {"prefill_concurrency_slowdown": self.prefill_concurrency_slowdown}),
                **{k: self.kind(k).to_dict() for k in UNIT_KINDS}, "info": dict(self.info)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ComputeProfile":
        unknown = set(data) - {"shape", "runtime_overhead_s", "concurrency_slowdown",
                               "prefill_concurrency_slowdown", "info", *UNIT_KINDS}
        if unknown:
            raise ProfileError(f"unknown keys {sorted(unknown)}; valid: shape, runtime_overhead_s, "
                               f"concurrency_slowdown, prefill_concurrency_slowdown, info, {', '.join(UNIT_KINDS)}")
        if not isinstance(data.get("shape"), str):
            raise ProfileError("needs shape: a string such as 'opt:h768:f3072:a12/12:v50272:float32'")
        kinds = {}
        for k in UNIT_KINDS:
            if not isinstance(data.get(k), Mapping):
                raise ProfileError(f"needs {k}: {{prefill: [[tokens, seconds], ...], decode: {{batches: ...}}}}")
            try:
                kinds[k] = KindProfile.from_dict(data[k])
            except ProfileError as exc:
                raise ProfileError(f"{k}: {exc}") from None
        numbers = {}
        for key in ("runtime_overhead_s", "concurrency_slowdown", "prefill_concurrency_slowdown"):
            if key == "prefill_concurrency_slowdown" and data.get(key) is None:
                numbers[key] = None
                continue
            try:
                numbers[key] = float(data.get(key, 0.0))
            except (TypeError, ValueError):
                raise ProfileError(f"{key} must be a number, got {data.get(key)!r}") from None
            if numbers[key] < 0:
                raise ProfileError(f"{key} must not be negative, got {numbers[key]}")
        return cls(data["shape"], kinds["embed"], kinds["layer"], kinds["head"], numbers["runtime_overhead_s"],
                   dict(data.get("info") or {}), numbers["concurrency_slowdown"],
                   numbers["prefill_concurrency_slowdown"])


def find_profile(profiles: Sequence[ComputeProfile], model: ModelSpec) -> ComputeProfile | None:
    """The profile whose shape is ``model``'s, or None (the roofline applies)."""
    key = shape_key(model)
    for profile in profiles:
        if profile.shape == key:
            return profile
    return None
