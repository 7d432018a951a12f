"""Curve plots of runs' ``metrics.jsonl``: one run's metrics, or one metric over several seeds of several recipes."""

from __future__ import annotations

from pathlib import Path

from mmrl.trainer.logging import read_metrics

DEFAULT_KEYS = ("reward/mean", "episode/return_recent", "eval/success", "eval/return", "loss", "approx_kl", "clipfrac",
                "entropy", "explained_variance")


def plot_curves(metrics_path: str | Path, out_path: str | Path, keys: tuple[str, ...] = DEFAULT_KEYS) -> Path:
    """One panel per metric present in the log (reward first), against the step; returns ``out_path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    present = [k for k in keys if any(k in r for r in rows)]
    n = max(len(present), 1)
    cols = min(n, 3)
    fig, axes = plt.subplots((n + cols - 1) // cols, cols, figsize=(4.2 * cols, 3.0 * ((n + cols - 1) // cols)),
                             squeeze=False)  # fmt: skip
    for ax, key in zip(axes.flat, present):
        pts = [(r["step"], r[key]) for r in rows if key in r]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o" if len(pts) < 20 else None, lw=1.5)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(present) :]:
        ax.axis("off")
    fig.suptitle(Path(metrics_path).parent.name)
    fig.tight_layout()
    out_path = Path(out_path)
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path


def plot_seeds(panels: dict[str, dict[str, str | Path]], out_path: str | Path, key: str = "eval/success") -> Path:
    """One panel per recipe, one line per run (seed) of ``key`` against the step: ``{panel title: {run label:
    metrics.jsonl path}}`` (how BENCHMARKS.md shows a recipe on several seeds); returns ``out_path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False, sharey=True)
    for ax, (title, runs) in zip(axes.flat, panels.items()):
        for label, path in runs.items():
            pts = [(r["step"], r[key]) for r in read_metrics(path) if key in r]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", lw=1.5, label=label)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes.flat[0].set_ylabel(key)
    fig.tight_layout()
    out_path = Path(out_path)
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path
