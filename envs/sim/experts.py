"""Scripted experts on ManiSkill's privileged state, and demonstrations made locally by rolling them out.

The experts drive the Panda arm with the ``pd_ee_delta_pos`` controller (action ``[dx, dy, dz, gripper]`` in [-1, 1]:
``±1`` moves the gripper's target ``±0.1`` m along an axis, gripper ``1`` opens, ``-1`` closes). Each is a stateless
proportional controller: it reads the true poses (gripper, cube, goal) from ``env.sim`` every step and heads for the
next waypoint of its task, so it recovers from a slip on its own:

- ``PushCube-v1``: rise over the cube, drop behind it (on the side away from the goal), then push it along ``+x``
  until its centre sits on the target (the target is always ``0.2`` m in front of the cube at reset);
- ``PickCube-v1``: move over the cube with the gripper open, descend, close; once ManiSkill reports a grasp, carry the
  cube to the goal and hold it there (the task also needs the arm to be still).

They are written for demonstrations and tests, not as baselines: mplib's motion-planning solutions (which ManiSkill
ships) need ``pd_joint_pos`` control and are not used here.

Example:
    >>> env = ManiSkillEnv(task="PushCube-v1")  # doctest: +SKIP
    >>> demos = rollout(env, expert_for("PushCube-v1"), seeds=range(10))  # doctest: +SKIP
    >>> success_rate(demos), demos[0].actions.shape  # doctest: +SKIP
    (1.0, (10, 4))
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from envs.sim.maniskill import ManiSkillEnv
from mmrl.config import ConfigError

Policy = Callable[[ManiSkillEnv, dict[str, Any]], np.ndarray]  # (env, observation) -> action [A]

EE_STEP = 0.1  # metres of target motion per unit action (Panda's pd_ee_delta_pos pos_lower/pos_upper)
OPEN, CLOSED = 1.0, -1.0  # gripper commands
ALIGNED = 0.01  # metres: the gripper counts as over / behind / at a point within this distance
CLEARANCE = 0.03  # metres above the cube top the gripper travels at when moving around it
PUSH_GAP = 0.02  # metres between the gripper's centre and the cube's back face when the push starts


def _pos(actor_pose: Any) -> np.ndarray:
    """A ManiSkill pose's position of env 0: ``[1, 3]`` tensor -> ``[3]`` float64."""
    return actor_pose.p.detach().cpu().numpy()[0].astype(np.float64)


def _move(tcp: np.ndarray, target: np.ndarray, gripper: float) -> np.ndarray:
    """The action that sends the gripper from ``tcp`` to ``target`` (saturating at one full step per axis)."""
    delta = np.clip((target - tcp) / EE_STEP, -1.0, 1.0)  # [3]
    return np.array([*delta, gripper], np.float32)


def push_cube(env: ManiSkillEnv, obs: dict[str, Any]) -> np.ndarray:
    """PushCube-v1 expert: get behind the cube at table height, then push it onto the target."""
    sim = env.sim
    tcp, cube, goal = _pos(sim.agent.tcp.pose), _pos(sim.obj.pose), _pos(sim.goal_region.pose)
    half = float(sim.cube_half_size)
    behind = np.array([cube[0] - half - PUSH_GAP, cube[1], half])  # where the push starts
    in_line = abs(tcp[1] - cube[1]) < ALIGNED and tcp[0] < cube[0] - half
    if in_line and tcp[2] < half + 1.5 * ALIGNED:  # low behind the cube: push until the cube's centre is on the goal
        return _move(tcp, np.array([goal[0] - half - PUSH_GAP, goal[1], half]), CLOSED)
    if np.linalg.norm(tcp[:2] - behind[:2]) < ALIGNED:  # right above the start: go down
        return _move(tcp, behind, CLOSED)
    return _move(tcp, np.array([behind[0], behind[1], 2 * half + CLEARANCE]), CLOSED)  # travel above the cube


def pick_cube(env: ManiSkillEnv, obs: dict[str, Any]) -> np.ndarray:
    """PickCube-v1 expert: grasp the cube from above, carry it to the goal, hold still."""
    sim = env.sim
    tcp, cube, goal = _pos(sim.agent.tcp.pose), _pos(sim.cube.pose), _pos(sim.goal_site.pose)
    if bool(sim.agent.is_grasping(sim.cube)[0]):
        return _move(tcp, goal, CLOSED)
    if np.linalg.norm(tcp[:2] - cube[:2]) > ALIGNED:  # not over the cube: travel above it, gripper open
        return _move(tcp, cube + np.array([0.0, 0.0, float(sim.cube_half_size) + CLEARANCE]), OPEN)
    if abs(tcp[2] - cube[2]) > ALIGNED / 2:  # over it: descend to its centre
        return _move(tcp, cube, OPEN)
    return _move(tcp, cube, CLOSED)  # around it: close until ManiSkill reports the grasp


EXPERTS: dict[str, Policy] = {"PushCube-v1": push_cube, "PickCube-v1": pick_cube}


def expert_for(task: str) -> Policy:
    """The scripted expert of ``task``; a one-line :class:`ConfigError` for tasks without one."""
    if task not in EXPERTS:
        raise ConfigError(f"task: no scripted expert for '{task}' (experts: {', '.join(EXPERTS)})")
    return EXPERTS[task]


def random_policy(env: ManiSkillEnv, obs: dict[str, Any]) -> np.ndarray:
    """Uniform actions from ``env.action_space`` (seeded per episode by :func:`rollout`): the baseline."""
    return env.action_space.sample()


@dataclass
class Demo:
    """One episode of a policy on a ManiSkill env."""

    seed: int  # reset seed: the same seed replays the same initial state
    observations: dict[str, np.ndarray]  # per observation key (instruction aside) [T + 1, ...]: reset, then each step's
    actions: np.ndarray  # [T, A] float32, what the env received
    rewards: np.ndarray  # [T] float64
    success: bool  # info["success"] at the last step
    terminated: bool  # the episode ended by the task (success) rather than by the step limit
    instruction: str  # the language instruction of the episode


def rollout(env: ManiSkillEnv, policy: Policy, seeds: Iterable[int]) -> list[Demo]:
    """One episode of ``policy`` per seed, each until it terminates or is truncated; numpy demonstrations."""
    demos = []
    for seed in seeds:
        obs, info = env.reset(seed=int(seed))
        env.action_space.seed(int(seed))  # random_policy replays too
        frames, actions, rewards = [obs], [], []
        terminated = truncated = False
        while not (terminated or truncated):
            action = np.asarray(policy(env, obs), np.float32)
            obs, reward, terminated, truncated, info = env.step(action)
            frames.append(obs)
            actions.append(action)
            rewards.append(reward)
        keys = [k for k in frames[0] if k != "instruction"]
        demos.append(Demo(seed=int(seed), observations={k: np.stack([f[k] for f in frames]) for k in keys},
                          actions=np.stack(actions), rewards=np.asarray(rewards, np.float64),
                          success=bool(info["success"]), terminated=bool(terminated),
                          instruction=obs["instruction"]))  # fmt: skip
    return demos


def success_rate(demos: list[Demo]) -> float:
    """Fraction of episodes that ended in success."""
    return float(np.mean([d.success for d in demos])) if demos else 0.0
