"""ManiSkill adapter overhead against raw ManiSkill, and env steps/s through mmrl's env pool.

Two measurements on one task (PickCube-v1 by default), CPU backends (``physx_cpu``, ``sapien_cpu``):

- ``overhead``: the same actions (uniform in [-1, 1], one fixed sequence) and the same reset seeds, stepped on raw
  ManiSkill (``gym.make(task, ...)``: batched torch outputs, nothing converted) and on :class:`ManiSkillEnv` (numpy,
  batch dim dropped, instruction, python scalars in ``info``). Both are timed in alternating rounds of ``--steps``
  steps (``--rgb-steps`` in ``rgb`` mode: rendering is ~20x slower) so that load from other processes hits both
  alike; the figure is the median over rounds of ``adapter time / raw time - 1`` (goal: <= 5 %), and beside it the
  adapter's own work per step timed alone (``conversion``: one raw step's outputs converted). Correctness: in
  ``state`` mode every adapter observation must equal raw ManiSkill's (the script exits non-zero otherwise).
- ``pool``: env steps/s of ``EnvPool(lambda: ManiSkillEnv(...), num_envs=N, mode=...)`` with random actions, an env
  reset (masked, as the collector does) when its episode ends: ``sync`` with 1 env, ``async`` (one worker process
  per env, spawned) with each of ``--workers``. Worker start-up is not timed.

Usage:
    python scripts/bench/sim_overhead.py --out runs/bench/sim_overhead.json
    python scripts/bench/sim_overhead.py --steps 50 --rgb-steps 10 --rounds 1 --workers 1   # smoke test

Prints a markdown table and writes the command, machine facts, settings and figures to ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from envs.sim.maniskill import ManiSkillEnv
from mmrl.rollout.pool import EnvPool

BACKENDS = {"sim_backend": "physx_cpu", "render_backend": "sapien_cpu"}
CONTROL = "pd_ee_delta_pos"
WARMUP = 10  # untimed steps on each env before the rounds
CONVERSIONS = 1000  # repetitions of the adapter's output conversion, timed alone


def _drive(step: Callable[[np.ndarray], tuple], reset: Callable[[int], Any], actions: np.ndarray) -> float:
    """Seconds to play ``actions`` from ``reset(0)``, resetting with the next seed whenever an episode ends."""
    seed = 0
    reset(seed)
    start = time.perf_counter()
    for a in actions:  # [A]
        _, _, terminated, truncated, _ = step(a)
        if bool(terminated) or bool(truncated):
            seed += 1
            reset(seed)
    return time.perf_counter() - start


def overhead(task: str, obs_mode: str, steps: int, rounds: int) -> dict[str, Any]:
    """Adapter vs raw ManiSkill on the same actions and seeds: per-round times and the median relative overhead."""
    import mani_skill.envs  # noqa: F401  (registers the tasks)

    raw = gym.make(task, obs_mode=obs_mode, control_mode=CONTROL, reward_mode="normalized_dense", **BACKENDS)
    ours = ManiSkillEnv(task=task, obs_mode=obs_mode, control_mode=CONTROL, **BACKENDS)
    actions = np.random.default_rng(0).uniform(-1, 1, (steps, *ours.action_space.shape)).astype(np.float32)  # [T, A]
    if obs_mode == "state":  # the adapter must see what raw ManiSkill sees
        raw_obs, _ = raw.reset(seed=0)
        obs, _ = ours.reset(seed=0)
        for a in actions[: min(steps, 100)]:
            if not np.array_equal(obs["state"], raw_obs.numpy()[0]):
                raise SystemExit(f"{task} {obs_mode}: adapter observation differs from raw ManiSkill's")
            raw_obs, *_ = raw.step(a)
            obs, *_ = ours.step(a)
    _drive(raw.step, lambda s: raw.reset(seed=s), actions[:WARMUP])  # first steps and renders are slower: not timed
    _drive(ours.step, lambda s: ours.reset(seed=s), actions[:WARMUP])
    raw_s, ours_s = [], []
    for _ in range(rounds):
        raw_s.append(_drive(raw.step, lambda s: raw.reset(seed=s), actions))
        ours_s.append(_drive(ours.step, lambda s: ours.reset(seed=s), actions))
    # the adapter's own work per step, timed apart from the simulator: converting one raw step's outputs
    raw_obs, _, _, _, raw_info = raw.step(actions[0])
    start = time.perf_counter()
    for _ in range(CONVERSIONS):
        ours._obs(raw_obs), ours._info(raw_info)
    conversion_us = (time.perf_counter() - start) / CONVERSIONS * 1e6
    raw.close()
    ours.close()
    ratios = [o / r - 1 for o, r in zip(ours_s, raw_s)]
    return {"obs_mode": obs_mode, "steps": steps, "raw_s": raw_s, "adapter_s": ours_s,
            "raw_steps_per_s": steps / statistics.median(raw_s),
            "adapter_steps_per_s": steps / statistics.median(ours_s),
            "overhead": statistics.median(ratios), "conversion_us": conversion_us}  # fmt: skip


def pool_rate(task: str, obs_mode: str, num_envs: int, mode: str, steps: int) -> dict[str, Any]:
    """Env steps/s of an :class:`EnvPool` of ``num_envs`` envs for ``steps`` pool steps (random actions)."""
    pool = EnvPool(lambda: ManiSkillEnv(task=task, obs_mode=obs_mode, **BACKENDS), num_envs=num_envs, mode=mode)
    rng = np.random.default_rng(0)
    seeds = list(range(num_envs))
    pool.reset(seeds=seeds)
    start = time.perf_counter()
    for _ in range(steps):
        actions = rng.uniform(-1, 1, (num_envs, *pool.single_action_space.shape)).astype(np.float32)  # [N, A]
        _, _, terminated, truncated, _ = pool.step(list(actions))
        ended = terminated | truncated  # [N]
        if ended.any():
            seeds = [s + num_envs if e else s for s, e in zip(seeds, ended)]
            pool.reset(seeds=seeds, mask=ended)
    seconds = time.perf_counter() - start
    pool.close()
    return {"obs_mode": obs_mode, "mode": mode, "num_envs": num_envs, "env_steps": steps * num_envs,
            "seconds": seconds, "env_steps_per_s": steps * num_envs / seconds}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="PickCube-v1")
    parser.add_argument("--steps", type=int, default=500, help="steps per round, state mode")
    parser.add_argument("--rgb-steps", type=int, default=100, help="steps per round, rgb mode")
    parser.add_argument("--rounds", type=int, default=5, help="alternating raw/adapter rounds per mode")
    parser.add_argument("--workers", default="1,2", help="async pool sizes, comma-separated")
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the figures")
    args = parser.parse_args()
    workers = [int(w) for w in args.workers.split(",") if w]

    result: dict[str, Any] = {
        "command": shlex.join([sys.executable, *sys.argv]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_avg": os.getloadavg()},
        "settings": vars(args) | {"out": str(args.out)},
    }
    # EnvPool's AsyncVectorEnv uses the default start method: a forked worker cannot build a ManiSkill env once this
    # process has built one (envs.sim.maniskill), so workers are spawned (a fresh interpreter each).
    multiprocessing.set_start_method("spawn")
    modes = (("state", args.steps), ("rgb", args.rgb_steps))
    result["pool"] = [pool_rate(args.task, obs_mode, n, "async", steps) for obs_mode, steps in modes for n in workers]
    result["pool"] += [pool_rate(args.task, obs_mode, 1, "sync", steps) for obs_mode, steps in modes]
    result["overhead"] = [overhead(args.task, obs_mode, steps, args.rounds) for obs_mode, steps in modes]
    result["machine"]["load_avg_after"] = os.getloadavg()

    print(f"| {args.task} | raw steps/s | adapter steps/s | overhead (median of {args.rounds}) | conversion/step |")
    print("|---|---|---|---|---|")
    for o in result["overhead"]:
        print(f"| {o['obs_mode']} | {o['raw_steps_per_s']:.1f} | {o['adapter_steps_per_s']:.1f} | "
              f"{100 * o['overhead']:+.1f} % | {o['conversion_us']:.0f} us |")  # fmt: skip
    print("\n| obs | pool | envs | env steps/s |\n|---|---|---|---|")
    for p in result["pool"]:
        print(f"| {p['obs_mode']} | {p['mode']} | {p['num_envs']} | {p['env_steps_per_s']:.1f} |")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
