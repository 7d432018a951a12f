"""Roll a scripted ManiSkill expert (:mod:`envs.sim.experts`) and write the demonstration ``.npz`` that the flow and
diffusion families' behaviour-cloning warm-up reads (``policy.kwargs.demos``, :mod:`mmrl.policies.flow.family`).

Each episode runs step by step on :class:`envs.sim.maniskill.ManiSkillEnv` (the expert is closed-loop: it reads the
privileged state at every step) with the controller the policy will use, then is cut into action chunks of the
chunk wrapper's horizon ``H`` (:mod:`envs.sim.chunk`): one row per chunk start ``t = 0, stride, 2 stride, ...``
holding the observation at ``t`` (``obs.<key>``, every array key of the env's observation: ``obs.state`` for
``obs_mode=state``, ``obs.rgb`` and ``obs.proprio`` for ``obs_mode=rgb``; and ``obs.instruction``, the language
instruction as a string array, read by the pi0 family) and the ``H`` actions the expert took from there
(``actions [N, H, A]``, env units). The episode's last chunk is usually short (the episode ended by success or by the
step limit): it is padded to ``H`` by repeating its last action, what the policy will learn to do at the end of a
chunk it never gets to run. ``stride = H`` (the default) gives exactly the chunks a chunk-executing env would have
run; ``stride = 1`` every window (more rows from the same episodes).

``--noise s`` executes the expert's action plus Gaussian noise of std ``s`` (clipped to the action bounds) and
records the clean action the expert chose, so the demonstrations also show the expert recovering from off-track
states. Seeds ``--first-seed .. --first-seed + episodes - 1`` (default 10000: disjoint from the evaluation seeds
``0 .. train.eval_size - 1``). Only successful episodes are kept unless ``--keep-failures``.

Usage:
    python scripts/make_demos.py --task PushCube-v1 --horizon 8 --episodes 10 --out runs/demos/pushcube_h8_n10.npz
    python scripts/make_demos.py --obs-mode rgb --image-size 64 --episodes 3 --stride 1 --out runs/demos/rgb.npz

With ``--obs-mode rgb`` pass the camera size the policy's env uses (``env.kwargs.image_size``): the images are
recorded as the env renders them.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from envs.sim.experts import Demo, expert_for
from envs.sim.maniskill import ManiSkillEnv

logger = logging.getLogger("make_demos")


def chunk_rows(demo: Demo, horizon: int, stride: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``({key: [n, ...]}, actions [n, H, A])``: one row per chunk start of ``demo``, the short last chunks padded by
    repeating their last action."""
    T = len(demo.actions)
    starts = list(range(0, T, stride))
    idx = np.minimum(np.arange(horizon)[None, :] + np.asarray(starts)[:, None], T - 1)  # [n, H]: past T-1 repeats
    obs = {k: v[starts] for k, v in demo.observations.items()}  # [n, ...] the observation at each chunk start
    return obs, demo.actions[idx]  # [n, H, A]


def run_expert(env: ManiSkillEnv, seed: int, noise: float, rng: np.random.Generator) -> Demo:
    """One episode of the task's expert from ``reset(seed)``: clean expert actions recorded, noisy ones executed."""
    expert = expert_for(env.task)
    low, high = env.action_space.low, env.action_space.high
    obs, info = env.reset(seed=seed)
    frames, actions, rewards = [obs], [], []
    terminated = truncated = False
    while not (terminated or truncated):
        action = np.asarray(expert(env, obs), np.float32)  # [A]
        executed = np.clip(action + noise * rng.standard_normal(action.shape), low, high) if noise > 0 else action
        obs, reward, terminated, truncated, info = env.step(executed.astype(np.float32))
        frames.append(obs)
        actions.append(action)
        rewards.append(reward)
    keys = [k for k in frames[0] if k != "instruction"]
    return Demo(seed=seed, observations={k: np.stack([f[k] for f in frames]) for k in keys},
                actions=np.stack(actions), rewards=np.asarray(rewards, np.float64), success=bool(info["success"]),
                terminated=bool(terminated), instruction=obs["instruction"])  # fmt: skip


def make_demos(task: str, horizon: int, episodes: int, out: Path, obs_mode: str = "state",
               control_mode: str = "pd_ee_delta_pos", stride: int = 0, noise: float = 0.0, first_seed: int = 10_000,
               keep_failures: bool = False, image_size: int | None = None) -> dict[str, float]:  # fmt: skip
    """Write the demonstration file; returns ``{"episodes", "successes", "rows"}``."""
    env = ManiSkillEnv(task=task, obs_mode=obs_mode, control_mode=control_mode, image_size=image_size)
    rng = np.random.default_rng(first_seed)
    obs_parts: dict[str, list[np.ndarray]] = {}
    action_parts: list[np.ndarray] = []
    successes = 0
    try:
        for seed in range(first_seed, first_seed + episodes):
            demo = run_expert(env, seed, noise, rng)
            successes += demo.success
            if not (demo.success or keep_failures):
                logger.warning("seed %d: the expert failed; episode left out", seed)
                continue
            obs, chunks = chunk_rows(demo, horizon, stride or horizon)
            obs["instruction"] = np.full(len(chunks), demo.instruction)  # [n] str: arrays only, no pickle
            for k, v in obs.items():
                obs_parts.setdefault(k, []).append(v)
            action_parts.append(chunks)
    finally:
        env.close()
    if not action_parts:
        raise SystemExit("no successful expert episode: nothing to write")
    arrays = {f"obs.{k}": np.concatenate(v) for k, v in obs_parts.items()}
    arrays["actions"] = np.concatenate(action_parts).astype(np.float32)  # [N, H, A]
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    return {"episodes": float(episodes), "successes": float(successes), "rows": float(len(arrays["actions"]))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="PushCube-v1", help="ManiSkill task with a scripted expert")
    p.add_argument("--horizon", type=int, default=8, help="H: actions per chunk (the chunk wrapper's horizon)")
    p.add_argument("--episodes", type=int, default=10, help="expert episodes rolled (one seed each)")
    p.add_argument("--out", type=Path, required=True, help="the .npz to write (e.g. under runs/demos/)")
    p.add_argument("--obs-mode", default="state", help="state | rgb: the policy's observation mode")
    p.add_argument("--image-size", type=int, default=None, help="rgb: camera side in pixels (the env's image_size)")
    p.add_argument("--control-mode", default="pd_ee_delta_pos", help="the controller (the experts drive this one)")
    p.add_argument("--stride", type=int, default=0, help="steps between chunk starts (0 = the horizon)")
    p.add_argument("--noise", type=float, default=0.0, help="std of the noise added to the executed actions")
    p.add_argument("--first-seed", type=int, default=10_000, help="seed of the first episode")
    p.add_argument("--keep-failures", action="store_true", help="keep episodes where the expert failed")
    a = p.parse_args()
    size = 1 if a.image_size is None else a.image_size  # None: the task's camera size
    if min(a.horizon, a.episodes, size) < 1 or a.stride < 0 or a.noise < 0:
        p.error("--horizon, --episodes and --image-size must be >= 1, --stride and --noise >= 0")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    stats = make_demos(a.task, a.horizon, a.episodes, a.out, a.obs_mode, a.control_mode, a.stride, a.noise,
                       a.first_seed, a.keep_failures, a.image_size)  # fmt: skip
    logger.info("%s: %d of %d expert episodes succeeded, %d chunk rows", a.out, stats["successes"], a.episodes,
                stats["rows"])  # fmt: skip


if __name__ == "__main__":
    main()
