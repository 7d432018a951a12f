"""Seed plots: one panel per recipe, one line per seed, from metrics.jsonl files."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from mmrl.viz.plots import plot_seeds


def _metrics(path, values):
    rows = [{"step": 0, "warmup/nll": 1.0}] + [{"step": 25 * i, "eval/success": v} for i, v in enumerate(values)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_plot_seeds_draws_one_panel_per_recipe(tmp_path, monkeypatch):
    import matplotlib.axes

    drawn = []
    original = matplotlib.axes.Axes.plot

    def spy(self, x, y, *args, **kwargs):
        drawn.append((self.get_title() or None, list(x), list(y), kwargs.get("label")))
        return original(self, x, y, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", spy)
    a = _metrics(tmp_path / "a.jsonl", [0.2, 0.5, 1.0])
    b = _metrics(tmp_path / "b.jsonl", [0.3, 0.3])
    out = plot_seeds({"recipe A": {"seed 0": a, "seed 1": b}, "recipe B": {"seed 0": b}}, tmp_path / "p.png")
    assert [(x, y, label) for _, x, y, label in drawn] == [
        ([0, 25, 50], [0.2, 0.5, 1.0], "seed 0"), ([0, 25], [0.3, 0.3], "seed 1"), ([0, 25], [0.3, 0.3], "seed 0")
    ]  # fmt: skip
    image = np.asarray(Image.open(out).convert("L"))
    assert image.shape == (320, 840) and image.std() > 5  # two 4.2 x 3.2 in panels at 100 dpi, not blank
