"""PPO-GAE with a critic on a Gymnasium classic-control task, trained by the shared mmrl learner.

Proves the learner is right, not just consistent: the same ``Learner.update`` that trains the VLMs solves Pendulum-v1
(Gaussian MLP policy) and CartPole-v1 (categorical MLP policy) on CPU. Figures and commands: BENCHMARKS.md, section
"PPO-GAE on classic control".

Usage:
    python scripts/ppo_gym.py --env Pendulum-v1 --total-steps 200000 --seed 0 --out runs/ppo_pendulum
    python scripts/ppo_gym.py --env CartPole-v1 --total-steps 100000 --seed 0 --out runs/ppo_cartpole

Writes ``<out>/metrics.jsonl`` (one row per PPO iteration, ``step`` = env steps), ``<out>/curves.png`` and prints the
mean return of the last 10 training episodes, the env steps at which that mean first reached ``--threshold``, and the
mean return of ``--eval-episodes`` fresh episodes with the deterministic policy (mean action).
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from collections import deque
from pathlib import Path

import numpy as np
import torch

from mmrl.algos.learner import Learner
from mmrl.config import AlgoConfig
from mmrl.policies.mlp import mlp_policy_for
from mmrl.rollout.gym_loop import GymCollector, evaluate, make_vec_env
from mmrl.trainer.logging import MetricsLogger
from mmrl.trainer.progress import Progress
from mmrl.viz.plots import plot_curves

logger = logging.getLogger("ppo_gym")

# Per-env defaults; every one can be overridden on the command line (--vf-clip 0 turns value clipping off). CleanRL
# ppo_continuous_action.py is the base (lr 3e-4, 10 epochs, 32 minibatches, lam 0.95, clip 0.2, value clip 0.2, vf_coef
# 0.5, ent 0, max_grad_norm 0.5, linear lr decay, log-std starting at 0).
PRESETS: dict[str, dict[str, float | int]] = {
    # Pendulum: gamma 0.95 (dense reward, short credit horizon), lr 1e-3, 8 envs x 256 steps. Tuned on
    # seeds 0-2: gamma 0.9 or log_std_init -0.5 let seed 2 collapse its std in a -450 local optimum (no swing-up).
    "Pendulum-v1": {"num_envs": 8, "num_steps": 256, "lr": 1e-3, "gamma": 0.95, "minibatches": 32, "threshold": -200.0},
    # CartPole: CleanRL ppo.py's 4 envs x 128 steps, 4 minibatches, 4 epochs, but lr 2.5e-3 (10x) and normalised rewards
    # (CleanRL keeps them raw: the critic then chases returns of ~100 and the value loss swamps the clipped gradient).
    "CartPole-v1": {"num_envs": 4, "num_steps": 128, "lr": 2.5e-3, "gamma": 0.99, "minibatches": 4, "epochs": 4,
                    "norm_obs": 0, "threshold": 475.0},
}  # fmt: skip
DEFAULTS: dict[str, float | int] = {"num_envs": 1, "num_steps": 2048, "lr": 3e-4, "gamma": 0.99, "lam": 0.95,
                                    "epochs": 10, "minibatches": 32, "clip": 0.2, "vf_coef": 0.5, "vf_clip": 0.2,
                                    "ent_coef": 0.0, "max_grad_norm": 0.5, "norm_obs": 1, "norm_reward": 1,
                                    "anneal_lr": 1, "log_std_init": 0.0, "threshold": math.inf}  # fmt: skip
PLOT_KEYS = ("episode/return_last10", "value_loss", "explained_variance", "approx_kl", "clipfrac", "entropy")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--env", default="Pendulum-v1", help="Gymnasium env id")
    p.add_argument("--total-steps", type=int, default=200_000, help="env steps to train for")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="run directory (default runs/ppo_<env>)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest for 64-unit MLPs)")
    p.add_argument("--eval-episodes", type=int, default=10, help="deterministic evaluation episodes at the end")
    p.add_argument("--no-progress", action="store_true", help="no rich progress bar")
    for key, value in DEFAULTS.items():  # hyper-parameters: None = the env's preset, else DEFAULTS
        p.add_argument("--" + key.replace("_", "-"), type=type(value), default=None, help=f"default {value}")
    args = p.parse_args(argv)
    for key, value in {**DEFAULTS, **PRESETS.get(args.env, {})}.items():
        if getattr(args, key) is None:
            setattr(args, key, type(DEFAULTS[key])(value))
    args.out = Path(args.out or f"runs/ppo_{args.env.split('-')[0].lower()}")
    return args


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)

    envs = make_vec_env(args.env, args.num_envs, args.gamma, norm_obs=bool(args.norm_obs),
                        norm_reward=bool(args.norm_reward))  # fmt: skip
    envs.action_space.seed(args.seed)
    policy = mlp_policy_for(envs.single_observation_space, envs.single_action_space, log_std_init=args.log_std_init)
    batch_size = args.num_envs * args.num_steps
    cfg = AlgoConfig(
        advantage="gae", loss="ppo_clip", agg="token-mean", epochs=args.epochs,
        minibatch_size=batch_size // args.minibatches, lr=args.lr, max_grad_norm=args.max_grad_norm,
        clip_low=args.clip, clip_high=args.clip, entropy_coef=args.ent_coef, vf_coef=args.vf_coef,
        vf_clip=args.vf_clip if args.vf_clip > 0 else None, norm_adv=True, gamma=args.gamma, lam=args.lam,
    )  # fmt: skip
    learner = Learner(policy, cfg)
    collector = GymCollector(envs, policy, args.num_steps, args.gamma, args.lam, seed=args.seed)
    metrics = MetricsLogger(args.out, tensorboard=False)
    gen = torch.Generator().manual_seed(args.seed)
    logger.info("PPO-GAE on %s: %d envs x %d steps, %d iterations; run dir %s", args.env, args.num_envs,
                args.num_steps, args.total_steps // batch_size, args.out)  # fmt: skip

    iterations = args.total_steps // batch_size
    recent: deque[float] = deque(maxlen=10)  # last 10 episode returns
    steps_to_threshold: int | None = None
    t_start = time.perf_counter()
    with Progress(enabled=not args.no_progress).task(f"PPO {args.env}", iterations) as advance:
        for it in range(iterations):
            if args.anneal_lr:  # linear decay to 0, as CleanRL
                learner.optimizer.param_groups[0]["lr"] = args.lr * (1.0 - it / iterations)
            batch, roll = collector.collect()  # collect -> GAE advantages
            t_update = time.perf_counter()
            stats = learner.update(batch, generator=gen)  # PPO epochs with the shared learner
            update_s = time.perf_counter() - t_update
            recent.extend(roll["episode_returns"])
            step = collector.total_steps
            row = {k: stats[k] for k in ("approx_kl", "clipfrac", "entropy", "value_loss", "explained_variance",
                                         "grad_norm", "loss") if k in stats}  # fmt: skip
            row.update({"env_steps_per_s": roll["env_steps_per_s"], "update_s": update_s,
                        "lr": learner.optimizer.param_groups[0]["lr"], "episodes": len(roll["episode_returns"])})  # fmt: skip
            if roll["episode_returns"]:
                row["episode/return_mean"] = float(np.mean(roll["episode_returns"]))
            if recent:
                row["episode/return_last10"] = float(np.mean(recent))
                if steps_to_threshold is None and len(recent) == recent.maxlen and np.mean(recent) >= args.threshold:
                    steps_to_threshold = step
            metrics.log(step, row)
            advance(f"return {row.get('episode/return_last10', float('nan')):.1f}")
    wall = time.perf_counter() - t_start
    eval_returns = evaluate(policy, args.env, args.eval_episodes, seed=args.seed + 10_000, train_envs=envs)
    metrics.log(collector.total_steps, {"eval/return_mean": float(np.mean(eval_returns)),
                                        "eval/return_std": float(np.std(eval_returns))})  # fmt: skip
    metrics.close()
    envs.close()
    plot_curves(metrics.path, args.out / "curves.png", keys=PLOT_KEYS)

    final = float(np.mean(recent)) if recent else float("nan")
    summary = {"final_return_last10": final, "eval_return": float(np.mean(eval_returns)), "wall_s": wall,
               "env_steps": collector.total_steps,
               "steps_to_threshold": steps_to_threshold if steps_to_threshold is not None else -1}  # fmt: skip
    print(f"{args.env}: mean return over the last 10 episodes {final:.1f} after {collector.total_steps} env steps "
          f"in {wall:.0f} s; reached {args.threshold:g} at "
          f"{steps_to_threshold if steps_to_threshold is not None else 'never'} steps; deterministic eval "
          f"{np.mean(eval_returns):.1f} +- {np.std(eval_returns):.1f} over {len(eval_returns)} episodes")  # fmt: skip
    return summary


if __name__ == "__main__":
    main()
