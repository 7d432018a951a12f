"""ManiSkillEnv on the CPU backends: observations and success checked against the simulator's own state, seeding,
Gymnasium's API, action chunks, worker processes, and the scripted experts against random actions."""

from __future__ import annotations

import functools
import multiprocessing

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

pytest.importorskip("mani_skill", reason="ManiSkill tests need the 'sim' extra")

from envs.sim.chunk import ActionChunk  # noqa: E402
from envs.sim.experts import expert_for, random_policy, rollout, success_rate  # noqa: E402
from envs.sim.maniskill import ManiSkillEnv  # noqa: E402
from mmrl.config import ConfigError  # noqa: E402

PANDA_DOF = 9  # 7 arm joints + 2 fingers: the first entries of ManiSkill's agent state (qpos, then qvel)
POSE = 7  # position + quaternion


@pytest.fixture(scope="module")
def push() -> ManiSkillEnv:
    env = ManiSkillEnv(task="PushCube-v1", obs_mode="state")
    yield env
    env.close()


@pytest.fixture(scope="module")
def pick_rgb() -> ManiSkillEnv:
    env = ManiSkillEnv(task="PickCube-v1", obs_mode="rgb", render_mode="rgb_array")
    yield env
    env.close()


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy()[0]


def _contains_run(vector: np.ndarray, run: np.ndarray) -> bool:
    """``run`` appears contiguously in ``vector`` (float32 exact)."""
    n = len(run)
    return any(np.array_equal(vector[i : i + n], run) for i in range(len(vector) - n + 1))


def push_success_by_hand(env: ManiSkillEnv) -> bool:
    """PushCube's success from the poses (ManiSkill docs): cube centre within the goal radius in xy, cube on the table."""
    cube, goal = _np(env.sim.obj.pose.p), _np(env.sim.goal_region.pose.p)
    half = float(env.sim.cube_half_size)
    return bool(np.hypot(*(cube[:2] - goal[:2])) < env.sim.goal_radius and cube[2] < half + 5e-3)


def test_state_observation_is_the_simulator_state(push: ManiSkillEnv) -> None:
    obs, info = push.reset(seed=0)
    assert (
        set(obs) == {"state", "instruction"} and obs["instruction"] == "Push the blue cube to the red and white target."
    )
    assert obs["state"].dtype == np.float32 and obs["state"].ndim == 1 and push.observation_space.contains(obs)
    np.testing.assert_array_equal(obs["state"][:PANDA_DOF], _np(push.sim.agent.robot.get_qpos()))
    assert _contains_run(obs["state"], _np(push.sim.obj.pose.raw_pose).astype(np.float32))
    assert info["success"] is False and info["elapsed_steps"] == 0


def test_step_api_success_and_truncation(push: ManiSkillEnv) -> None:
    push.reset(seed=5)
    push.action_space.seed(5)
    for t in range(1, push.max_episode_steps + 1):
        obs, reward, terminated, truncated, info = push.step(push.action_space.sample())
        assert isinstance(reward, float) and type(terminated) is bool and type(truncated) is bool
        assert info["success"] is push_success_by_hand(push) and terminated is info["success"]
        assert info["elapsed_steps"] == t and truncated is (t == push.max_episode_steps)
        if terminated:
            break
    assert push.max_episode_steps == 50


def test_seeding_repeats_episodes(push: ManiSkillEnv) -> None:
    actions = np.random.default_rng(0).uniform(-1, 1, (8, 4)).astype(np.float32)

    def play(seed: int) -> list[np.ndarray]:
        states = [push.reset(seed=seed)[0]["state"]]
        states += [push.step(a)[0]["state"] for a in actions]
        return states

    first, again, other = play(11), play(11), play(12)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])


def test_env_checker_and_config_errors(push: ManiSkillEnv) -> None:
    check_env(push, skip_render_check=True)
    with pytest.raises(ConfigError, match="task: 'NoSuchTask-v1' is not a ManiSkill env id"):
        ManiSkillEnv(task="NoSuchTask-v1")
    with pytest.raises(ConfigError, match="obs_mode: unknown observation mode 'depth'"):
        ManiSkillEnv(task="PushCube-v1", obs_mode="depth")
    with pytest.raises(ConfigError, match="unknown config key 'taks'"):
        ManiSkillEnv(taks="PushCube-v1")


def test_rgb_observation_shows_the_red_cube(pick_rgb: ManiSkillEnv) -> None:
    obs, _ = pick_rgb.reset(seed=0)
    rgb = obs["rgb"]
    assert rgb.shape == (128, 128, 3) and rgb.dtype == np.uint8 and pick_rgb.observation_space.contains(obs)
    red = (rgb[..., 0] > 120) & (rgb[..., 1] < 60) & (rgb[..., 2] < 60)  # PickCube's cube is pure red
    assert 10 < red.sum() < 0.2 * red.size
    np.testing.assert_array_equal(obs["proprio"][:PANDA_DOF], _np(pick_rgb.sim.agent.robot.get_qpos()))
    # proprio = qpos, qvel, is_grasped, gripper pose, goal (hidden from the camera): the cube pose is not in it
    assert obs["proprio"].shape == (2 * PANDA_DOF + 1 + POSE + 3,)
    assert not _contains_run(obs["proprio"], _np(pick_rgb.sim.cube.pose.p).astype(np.float32))
    moved = pick_rgb.reset(seed=1)[0]["rgb"]
    assert not np.array_equal(moved, rgb)
    frame = pick_rgb.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[-1] == 3


def test_chunk_on_maniskill_matches_single_steps(push: ManiSkillEnv) -> None:
    chunk = np.random.default_rng(1).uniform(-2, 2, (4, 4)).astype(np.float32)  # half of it out of bounds
    push.reset(seed=3)
    by_hand = [push.step(np.clip(a, -1, 1)) for a in chunk]
    chunked = ActionChunk(push, horizon=4)
    chunked.reset(seed=3)
    obs, reward, terminated, truncated, info = chunked.step(chunk)
    np.testing.assert_array_equal(obs["state"], by_hand[-1][0]["state"])
    assert reward == pytest.approx(sum(step[1] for step in by_hand), rel=1e-9)
    assert info["executed"] == 4 and info["success"] is by_hand[-1][4]["success"]


def test_expert_succeeds_where_random_actions_fail(push: ManiSkillEnv) -> None:
    seeds = [0, 1, 2]
    demos = rollout(push, expert_for("PushCube-v1"), seeds)
    assert success_rate(demos) == 1.0 and all(d.terminated for d in demos)
    d = demos[0]
    assert d.actions.shape == (len(d.rewards), 4) and d.observations["state"].shape[0] == len(d.rewards) + 1
    assert success_rate(rollout(push, random_policy, seeds)) == 0.0
    pick = ManiSkillEnv(task="PickCube-v1")
    try:
        assert success_rate(rollout(pick, expert_for("PickCube-v1"), seeds)) == 1.0
        assert success_rate(rollout(pick, random_policy, seeds)) == 0.0
    finally:
        pick.close()
    with pytest.raises(ConfigError, match="no scripted expert for 'StackCube-v1'"):
        expert_for("StackCube-v1")


def test_runs_in_a_spawned_worker_of_the_pool_and_closes_cleanly() -> None:
    """mmrl's env pool with env.start_method=spawn (what a ManiSkill recipe sets) plays what a local env plays."""
    from mmrl.rollout.pool import EnvPool

    pool = EnvPool(functools.partial(ManiSkillEnv, task="PushCube-v1"), 1, mode="async", start_method="spawn")
    obs, _ = pool.reset([4])
    local = ManiSkillEnv(task="PushCube-v1")
    try:
        np.testing.assert_array_equal(obs[0]["state"], local.reset(seed=4)[0]["state"])
        obs, reward, terminated, truncated, info = pool.step([np.zeros(4, np.float32)])
        np.testing.assert_array_equal(obs[0]["state"], local.step(np.zeros(4, np.float32))[0]["state"])
    finally:
        processes = list(pool.vec.processes)
        pool.close()
        local.close()
        local.close()  # twice is harmless
    assert [p.exitcode for p in processes] == [0]


def _build_in_child(queue: multiprocessing.Queue) -> None:
    try:
        ManiSkillEnv(task="PushCube-v1")
        queue.put("built")
    except RuntimeError as e:
        queue.put(str(e))


def test_a_forked_child_refuses_instead_of_hanging(push: ManiSkillEnv) -> None:
    """This process has built envs (the fixture): a forked child would hang in SAPIEN, so it fails at once."""
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_build_in_child, args=(queue,))
    child.start()
    message = queue.get(timeout=60)
    child.join(10)
    assert "forked from one that had built a ManiSkill env" in message and "'spawn' or 'forkserver'" in message
