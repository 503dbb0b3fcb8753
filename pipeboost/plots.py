"""Pictures of a run folder: a per-GPU timeline and a TTFT CDF (matplotlib + seaborn, PNG files).

Imported only by ``pipeboost plot`` and notebooks; uses the non-interactive Agg backend.
"""

from __future__ import annotations

from pathlib import Path

from pipeboost.metrics import request_metrics
from pipeboost.trace import TraceKind, TraceRecord, read_jsonl

_COLORS = {TraceKind.STARTUP: "#bbbbbb", TraceKind.LOAD: "#4c72b0", TraceKind.PREFILL: "#dd8452",
           TraceKind.DECODE: "#55a868", TraceKind.HOP: "#8172b3"}
_ROWS = {TraceKind.STARTUP: 0, TraceKind.LOAD: 0, TraceKind.PREFILL: 1, TraceKind.DECODE: 1, TraceKind.HOP: 1}
MAX_BARS = 20000


def _merge_bars(records: list[TraceRecord]) -> dict[tuple[int, TraceKind], list[tuple[float, float]]]:
    """Per (GPU, kind), intervals with touching/overlapping neighbours merged (keeps big runs drawable)."""
    bars: dict[tuple[int, TraceKind], list[tuple[float, float]]] = {}
    for rec in sorted(records, key=lambda r: r.t_start_s):
        if rec.gpu is None or rec.kind not in _COLORS or rec.t_end_s <= rec.t_start_s:
            continue
        spans = bars.setdefault((rec.gpu, rec.kind), [])
        if spans and rec.t_start_s <= spans[-1][1] + 1e-12:
            spans[-1] = (spans[-1][0], max(spans[-1][1], rec.t_end_s))
        else:
            spans.append((rec.t_start_s, rec.t_end_s))
    return bars


def plot_timeline(trace: list[TraceRecord], path: Path, title: str = "") -> Path:
    """One row pair per GPU (copy engine above, compute below); failures as red crosses,
    pipeline->replica switches and replica-ready instants as vertical marks; idle is blank."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    bars = _merge_bars(trace)
    gpus = sorted({g for g, _ in bars} | {r.gpu for r in trace if r.gpu is not None})
    fig, ax = plt.subplots(figsize=(11, 0.7 * max(len(gpus), 1) + 1.6))
    for (gpu, kind), spans in bars.items():
        y = gpus.index(gpu) * 2 + _ROWS[kind]
        spans = spans[:MAX_BARS]
        ax.broken_barh([(a, b - a) for a, b in spans], (y - 0.4, 0.8), facecolors=_COLORS[kind])
    for rec in trace:
        if rec.gpu is None:
            continue
        y = gpus.index(rec.gpu) * 2 + 0.5
        if rec.kind is TraceKind.FAILURE:
            ax.plot(rec.t_start_s, y, "x", color="red", markersize=12, mew=3)
        elif rec.kind is TraceKind.REPLICA_READY:
            ax.plot(rec.t_start_s, y, "|", color="black", markersize=18, mew=2)
    for rec in trace:
        if rec.kind is TraceKind.MODE_SWITCH:
            ax.axvline(rec.t_start_s, color="black", linestyle="--", linewidth=1)
    ax.set_yticks([i * 2 + 0.5 for i in range(len(gpus))], [f"GPU {g}" for g in gpus])
    ax.invert_yaxis()
    ax.set_xlabel("time (s)")
    ax.set_title(title or "per-GPU timeline: copy (top) and compute (bottom) rows")
    handles = [Patch(color=c, label=k.value) for k, c in _COLORS.items()]
    handles.append(plt.Line2D([], [], color="red", marker="x", linestyle="", label="failure"))
    handles.append(plt.Line2D([], [], color="black", marker="|", linestyle="", label="full replica"))
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=7, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_ttft_cdf(trace: list[TraceRecord], path: Path, title: str = "") -> Path:
    """Empirical CDF of time to first token (seconds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    ttfts = [r.ttft_s for r in request_metrics(trace) if r.ttft_s is not None]
    fig, ax = plt.subplots(figsize=(6, 4))
    if ttfts:
        sns.ecdfplot(x=ttfts, ax=ax)
    ax.set_xlabel("TTFT (s)")
    ax.set_ylabel("fraction of requests")
    ax.set_title(title or "TTFT CDF")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_run(run_dir: Path) -> list[Path]:
    """Draw ``timeline.png`` and ``ttft_cdf.png`` from ``run_dir/trace.jsonl``."""
    from pipeboost.errors import PipeBoostError

    trace_path = Path(run_dir) / "trace.jsonl"
    if not trace_path.exists():
        raise PipeBoostError(f"{trace_path} does not exist; give a folder written by pipeboost run")
    trace = read_jsonl(trace_path)
    name = Path(run_dir).name
    return [plot_timeline(trace, Path(run_dir) / "timeline.png", f"{name}: per-GPU timeline"),
            plot_ttft_cdf(trace, Path(run_dir) / "ttft_cdf.png", f"{name}: TTFT CDF")]
