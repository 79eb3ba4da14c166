"""plot_curves writes a real PNG of the configured size without touching pyplot; plot_run_metrics writes
exactly the panels whose metrics have data."""
import json
import math
import sys

import pytest

from harness.tracking.plots import (
    DEFAULT_PANELS,
    DPI,
    FIGSIZE,
    metric_series,
    plot_curves,
    plot_run_metrics,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _assert_png(path):
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = imread(path)
    assert image.shape[:2] == (round(FIGSIZE[1] * DPI), round(FIGSIZE[0] * DPI))
    assert image.ndim == 3 and image.shape[2] in (3, 4)


def _leftovers(directory):
    return sorted(p.name for p in directory.rglob("*") if p.is_file() and not p.name.endswith(".png"))


def test_plot_curves_writes_png_and_skips_nan(tmp_path):
    series = {
        "train/loss": [(1, 2.0), (2, float("nan")), (3, 1.0), (4, None), (5, "nan"), (6, 0.5)],
        "val/loss": [(0, 2.5), (3, 1.2)],
    }
    out = plot_curves(series, tmp_path / "sub" / "loss.png", title="loss", ylabel="loss")
    assert out == tmp_path / "sub" / "loss.png"
    _assert_png(out)
    assert _leftovers(tmp_path) == []


def test_plot_curves_rejects_empty(tmp_path):
    with pytest.raises(ValueError, match="no finite points"):
        plot_curves({"a": []}, tmp_path / "a.png", title="a")
    with pytest.raises(ValueError, match="no finite points"):
        plot_curves({"a": [(1, float("nan"))]}, tmp_path / "a.png", title="a")
    assert list(tmp_path.iterdir()) == []


def test_metric_series_keeps_finite_values_sorted_last_wins():
    records = [
        {"step": 0, "val/accuracy": 0.4},
        {"step": 0, "val/accuracy": 0.5},  # repeated after a restart: last one counts
        {"step": 2, "val/accuracy": "nan"},
        {"step": 1, "train/loss": 1.0},
        {"step": 3, "val/accuracy": float("inf")},
        {"step": 4, "val/accuracy": 0.75},
    ]
    assert metric_series(records, "val/accuracy") == [(0, 0.5), (4, 0.75)]
    assert metric_series(records, "missing") == []


def _write_metrics(run_dir, records):
    run_dir.mkdir(parents=True)
    with open(run_dir / "metrics.jsonl", "w") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")


def test_plot_run_metrics_sft(tmp_path):
    records = [{"step": s, "train/loss": 3.0 / s} for s in range(1, 41)]
    records[9]["val/loss"] = 0.5
    records[19]["val/loss"] = "nan"  # how Tracker writes NaN
    records[39]["val/loss"] = 0.3
    _write_metrics(tmp_path / "run", records)
    written = plot_run_metrics(tmp_path / "run", tmp_path / "plots")
    assert [p.name for p in written] == ["loss.png"]
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["loss.png"]
    _assert_png(written[0])


def test_plot_run_metrics_rl_skips_panels_without_data(tmp_path):
    records = [{"step": 0, "val/accuracy": 0.4, "val/score/mean": 0.4}]
    for step in range(1, 6):
        records.append({
            "step": step,
            "critic/score/mean": 0.4 + 0.05 * step,
            "actor/pg_loss": -0.01 * step,
            "actor/ppo_kl": float("nan") if step == 1 else 0.001 * step,
            "response_length/mean": 10.0 + step,
            "timing_s/step": 1.5,
        })
    records.append({"step": 5, "val/accuracy": 0.6, "val/score/mean": 0.6})
    _write_metrics(tmp_path / "run", records)
    written = plot_run_metrics(tmp_path / "run", tmp_path / "plots")
    # no critic/vf_loss (GRPO has no critic) and no train/loss -> those panels are skipped
    assert [p.name for p in written] == ["reward.png", "accuracy.png", "actor.png", "response_length.png"]
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(p.name for p in written)
    for path in written:
        _assert_png(path)

    custom = plot_run_metrics(tmp_path / "run", tmp_path / "custom", panels={"t": ["timing_s/step"], "none": ["x"]})
    assert [p.name for p in custom] == ["t.png"]


def test_default_panels_cover_sft_and_rl():
    assert {"loss", "reward", "accuracy"} <= set(DEFAULT_PANELS)
    assert "train/loss" in DEFAULT_PANELS["loss"] and "val/loss" in DEFAULT_PANELS["loss"]
    assert "critic/score/mean" in DEFAULT_PANELS["reward"]
    assert DEFAULT_PANELS["accuracy"] == ["val/accuracy"]


def test_repeated_calls_leave_no_figures_or_temp_files(tmp_path):
    pyplot_loaded = "matplotlib.pyplot" in sys.modules
    series = {"a": [(i, math.sin(i)) for i in range(50)], "b": [(0, 0.0), (49, 1.0)]}
    for i in range(30):
        plot_curves(series, tmp_path / f"p{i % 3}.png", title=str(i))
    if pyplot_loaded:
        import matplotlib.pyplot as plt

        assert plt.get_fignums() == []
    else:
        assert "matplotlib.pyplot" not in sys.modules  # the module never imports pyplot
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p0.png", "p1.png", "p2.png"]
    assert _leftovers(tmp_path) == []


def test_import_does_not_load_matplotlib():
    import subprocess

    code = "import sys, harness.tracking.plots; assert 'matplotlib' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)
