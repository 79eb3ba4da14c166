"""PNG plots of a run's metrics.jsonl: one image per panel of related curves.

matplotlib is imported inside the functions (training code imports this package without plotting) and only
through Figure + FigureCanvasAgg, so pyplot's global state and backend are never touched.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Tuple, Union

from harness.tracking.tracker import read_metrics

PathLike = Union[str, os.PathLike]

DEFAULT_PANELS: dict[str, list[str]] = {
    "loss": ["train/loss", "val/loss"],
    "reward": ["critic/score/mean", "val/score/mean"],
    "accuracy": ["val/accuracy"],
    "actor": ["actor/pg_loss", "actor/ppo_kl"],
    "critic": ["critic/vf_loss"],
    "response_length": ["response_length/mean"],
}

FIGSIZE = (6.0, 4.0)
DPI = 100
MARKER_MAX_POINTS = 20  # below this a line alone hides where the (sparse, e.g. validation) points are


def _finite(value: Any) -> Optional[float]:
    # Tracker writes NaN/inf as the strings "nan"/"inf"; bools are flags, not curves.
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def metric_series(records: Iterable[dict], key: str) -> list[Tuple[int, float]]:
    """(step, value) for each step where `key` is present and finite, sorted by step; a step logged twice
    (e.g. validation repeated after a restart) keeps its last value."""
    by_step: dict[int, float] = {}
    for record in records:
        value = _finite(record.get(key))
        if value is not None and "step" in record:
            by_step[int(record["step"])] = value
    return sorted(by_step.items())


def plot_curves(
    series: dict[str, Sequence[Tuple[float, float]]],
    path: PathLike,
    title: str,
    xlabel: str = "step",
    ylabel: str = "",
) -> Path:
    """Write one PNG with a line per named series; points with a None/NaN/inf coordinate are skipped and
    series left with no points are omitted. Raises ValueError when nothing at all is left to plot."""
    cleaned: dict[str, Tuple[list[float], list[float]]] = {}
    for name, points in series.items():
        kept = [(x, y) for x, y in ((_finite(x), _finite(y)) for x, y in points) if x is not None and y is not None]
        if kept:
            cleaned[name] = ([x for x, _ in kept], [y for _, y in kept])
    if not cleaned:
        raise ValueError(f"plot_curves({title!r}): no finite points in series {sorted(series)}")

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for name, (xs, ys) in cleaned.items():
        marker = "o" if len(xs) <= MARKER_MAX_POINTS else None
        ax.plot(xs, ys, label=name, marker=marker, markersize=4, linewidth=1.5)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if all(float(x).is_integer() for xs, _ in cleaned.values() for x in xs):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps: no "1.25" ticks on short runs
    if len(cleaned) > 1:
        ax.legend(loc="best", fontsize="small")
    # Fixed margins instead of tight_layout, which re-measures every tick label and doubles the cost.
    fig.subplots_adjust(left=0.15, right=0.97, bottom=0.12, top=0.91)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A reader (dashboard, `ls` during training) must never see a half-written image.
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fig.savefig(staging, format="png", dpi=DPI)
        os.replace(staging, path)
    finally:
        if staging.exists():
            staging.unlink()
    return path


def plot_run_metrics(
    run_dir: PathLike, out_dir: PathLike, panels: Optional[dict[str, list[str]]] = None
) -> list[Path]:
    """One `<panel>.png` in out_dir per panel (name -> metric keys) with any data in run_dir/metrics.jsonl;
    panels without data are skipped. Returns the written paths in panel order."""
    records = read_metrics(str(run_dir))
    run_name = Path(run_dir).resolve().name
    written: list[Path] = []
    for panel, keys in (DEFAULT_PANELS if panels is None else panels).items():
        series = {key: metric_series(records, key) for key in keys}
        series = {key: points for key, points in series.items() if points}
        if not series:
            continue
        ylabel = next(iter(series)) if len(series) == 1 else panel
        written.append(plot_curves(series, Path(out_dir) / f"{panel}.png", f"{run_name}: {panel}", ylabel=ylabel))
    return written
