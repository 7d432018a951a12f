"""Held-out success of finished runs' starting (warmed-up / BC) policy and final checkpoint, on more episodes than the
runs evaluated during training (their ``train.eval_size``).

A run's evaluation before RL is of its warmed-up policy, which no checkpoint holds; it is replayed here: the run's own
``config.json`` and seed, the warm-up run again (deterministic: on the run's first ``train.eval_size`` env seeds it
reproduces the run's step-0 figure, which is printed beside it as a check). The final policy is the run's last
checkpoint, evaluated through ``mmrl eval``'s code. Both on env seeds ``0..N-1`` of the eval env (the same held-out
seeds the runs used, extended).

Usage:
    python scripts/bench/reeval_runs.py runs/maniskill_flow_sde_ppo_s0 runs/maniskill_flow_sde_ppo_s1 --episodes 200
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from mmrl.config import load_config  # noqa: E402
from mmrl.rollout.collector import Collector  # noqa: E402
from mmrl.trainer import checkpoint as ckpt  # noqa: E402
from mmrl.trainer.build import eval_episodes, evaluate_run, make_pool  # noqa: E402
from mmrl.trainer.loop import Trainer  # noqa: E402
from mmrl.trainer.scoring import episode_return  # noqa: E402


def first_eval(run_dir: Path) -> dict[str, float]:
    """The run's own step-0 evaluation (before RL) from its metrics.jsonl."""
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["step"] == 0 and "eval/return" in row:
            return row
    raise SystemExit(f"{run_dir}: no evaluation before RL in metrics.jsonl")


def reevaluate(run_dir: Path, episodes: int) -> dict[str, float | int | str]:
    """Start and final policy of ``run_dir`` on ``episodes`` eval seeds, and the replay check."""
    final = ckpt.latest_checkpoint(run_dir)
    if final is None:
        raise SystemExit(f"{run_dir}: no checkpoint in checkpoints/ (the trainer saves every run's last step)")
    with tempfile.TemporaryDirectory() as scratch:
        cfg = load_config(run_dir / "config.json", [f"train.eval_size={episodes}", f"train.output_dir={scratch}",
                                                    "train.overwrite=true"])  # fmt: skip
        trainer = Trainer(cfg, show_progress=False)
        pool = make_pool(cfg, evaluation=True)
        try:
            trainer.warmup()
            trajs = eval_episodes(Collector(trainer.policy, pool, cfg.env.max_turns), trainer.rewards, cfg)
        finally:
            pool.close()
            trainer.close()
        [after] = evaluate_run(cfg, [final])
    k = json.loads((run_dir / "config.json").read_text())["train"]["eval_size"]  # the run's own eval size
    start = np.array([float(t.success) if "success" in t.info else np.nan for t in trajs])
    returns = np.array([episode_return(t) for t in trajs])
    logged = first_eval(run_dir)
    return {
        "run": run_dir.name, "episodes": len(trajs), "checkpoint": final.name,
        "start_success": float(np.mean(start)), "final_success": float(after.get("eval/success", np.nan)),
        "start_return": float(np.mean(returns)), "final_return": float(after["eval/return"]),
        "replayed_first": float(np.mean(start[:k])) if "eval/success" in logged else float(np.mean(returns[:k])),
        "logged_first": float(logged.get("eval/success", logged["eval/return"])), "logged_episodes": k,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="run directories (each with config.json, metrics.jsonl, checkpoints/)")
    ap.add_argument("--episodes", type=int, default=200, help="eval env seeds 0..N-1")
    ap.add_argument("--out", type=Path, default=None, help="write the rows as JSON here too")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = [reevaluate(r, args.episodes) for r in args.runs]
    print(f"| run | start | final | change (points) | replay check: first {rows[0]['logged_episodes']} (logged) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['start_success']:.3f} | {r['final_success']:.3f} | "
              f"{100 * (r['final_success'] - r['start_success']):+.1f} | {r['replayed_first']:.2f} ({r['logged_first']:.2f}) |")  # fmt: skip
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
