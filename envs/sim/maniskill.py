"""ManiSkill3 tasks as Gymnasium envs with numpy observations, a language instruction and ``info["success"]``.

ManiSkill returns batched torch tensors (``[num_envs, ...]``) even for one env; :class:`ManiSkillEnv` converts them to
numpy and, for the usual single env, drops the batch dim, so the env plugs into any Gymnasium loop and into
:class:`mmrl.rollout.pool.EnvPool` (one env per worker process on CPU: ``mode="async"``, workers spawned: below).

Observation modes (``obs_mode``), each a ``Dict`` observation with the task's ``instruction`` string:

============  =======================================================================================================
``state``     ``state``: the task's privileged flat state (robot, object and goal poses) ``[D]`` float32
``rgb``       ``rgb``: one camera image ``[H, W, 3]`` uint8, ``proprio``: robot state and the task's non-visual extras
              (joint positions and velocities, gripper pose, is_grasped, the goal when it is hidden from the camera) ``[P]``
              float32
============  =======================================================================================================

Episodes follow ManiSkill's rules: ``terminated`` when the task succeeds (or fails, for tasks that can), ``truncated``
at the task's step limit (50 for PickCube, PushCube and StackCube; ``max_episode_steps`` overrides it). Actions are
clipped to ``action_space`` by ManiSkill's controller. Seeds: ``reset(seed=s)`` gives the same episode every time;
``reset()`` without a seed draws the next episode from ManiSkill's own generator.

Worker processes: start them with ``spawn`` or ``forkserver``, never ``fork`` once this process has built a
ManiSkill env (Gymnasium's ``AsyncVectorEnv`` builds one in the parent to read the spaces): a forked child hangs
while building its own scene, so :class:`ManiSkillEnv` refuses to start in one, with an error that says so.

Backends: CPU by default (``sim_backend="physx_cpu"``, ``render_backend="sapien_cpu"``: Mesa's lavapipe Vulkan, the
``sim`` part of ``scripts/setup.sh``). ``sim_backend="physx_cuda"``, ``render_backend="gpu"`` and ``num_envs > 1`` pass
through to ManiSkill's GPU-parallel simulation; the env then stays batched (observations ``[N, ...]``, reward,
terminated, truncated and each info value ``[N]`` arrays, ``reset(options={"env_idx": ...})`` for partial resets): a
vectorised env in itself, not one to put in an :class:`EnvPool`. That path follows ManiSkill's API but has not been run
here (no GPU on the development machine).

Example:
    >>> env = ManiSkillEnv(task="PushCube-v1", obs_mode="state")  # doctest: +SKIP
    >>> obs, info = env.reset(seed=0)  # doctest: +SKIP
    >>> obs["state"].shape, obs["instruction"]  # doctest: +SKIP
    ((35,), 'Push the blue cube to the red and white target.')
    >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())  # doctest: +SKIP
    >>> info["success"]  # doctest: +SKIP
    False
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.vqa.base import image_hw, text_space
from mmrl.config import ConfigError, from_dict

OBS_MODES = ("state", "rgb")
# what the policy is told to do, per task; other tasks get a generic sentence (pass ``instruction`` to set one)
INSTRUCTIONS = {  # colours as the tasks build them (mani_skill/envs/tasks/tabletop)
    "PickCube-v1": "Pick up the red cube and move it to the goal position.",
    "PushCube-v1": "Push the blue cube to the red and white target.",
    "StackCube-v1": "Stack the red cube on top of the green cube.",
}
SENSOR_KEYS = ("sensor_data", "sensor_param")  # ManiSkill's camera outputs; everything else is state
_BUILDER_PID: int | None = None  # the process that built a ManiSkill env here (a forked child inherits the value)


def _require_mani_skill() -> None:
    """Import ManiSkill (registering its tasks with Gymnasium) or fail with the extra to install."""
    try:
        import mani_skill.envs  # noqa: F401  (registers the tasks)
    except ImportError as e:
        raise ImportError(f"ManiSkill envs need the 'sim' extra: pip install 'mmrl[sim]' ({e})") from e


def _refuse_forked_child() -> None:
    """Fail at once in a process forked from one that has built a ManiSkill env: SAPIEN's physics and render state do
    not survive ``fork`` (the child hangs, e.g. in ManiSkill's ``gc.collect()`` while it builds its scene)."""
    global _BUILDER_PID
    if _BUILDER_PID is not None and _BUILDER_PID != os.getpid():
        raise RuntimeError("ManiSkillEnv: this process was forked from one that had built a ManiSkill env, which hangs; "
                           "start env worker processes with the 'spawn' or 'forkserver' method")  # fmt: skip
    _BUILDER_PID = os.getpid()


def _to_numpy(x: Any) -> Any:
    """A torch tensor (on any device) as a numpy array; numpy arrays and Python values unchanged."""
    return x.detach().cpu().numpy() if hasattr(x, "detach") else x


def _leaves(space: spaces.Space) -> list[spaces.Space]:
    """The non-``Dict`` spaces inside ``space``, depth first."""
    if isinstance(space, spaces.Dict):
        return [leaf for sub in space.spaces.values() for leaf in _leaves(sub)]
    return [space]


@dataclass
class ManiSkillConfig:
    task: str = "PickCube-v1"  # a ManiSkill env id: PickCube-v1, PushCube-v1, StackCube-v1, ...
    obs_mode: str = "state"  # state: the privileged flat state | rgb: a camera image and proprioception
    control_mode: str = "pd_ee_delta_pos"  # ManiSkill controller; the default (xyz deltas, gripper) is the experts'
    reward_mode: str = "normalized_dense"  # normalized_dense (shaped, in [0, 1]) | dense | sparse (success)
    max_episode_steps: int | None = None  # step limit (truncation); None = the task's own (50 for the cube tasks)
    image_size: int | list[int] | None = None  # rgb: camera side or [height, width]; None = the task's (128 px)
    camera: str | None = None  # rgb: which sensor camera; None = the task's first (base_camera)
    instruction: str | None = None  # the language instruction; None = the task's sentence in INSTRUCTIONS
    render_mode: str | None = None  # rgb_array: render() returns the task's human-view camera | null
    sim_backend: str = "physx_cpu"  # physx_cpu | physx_cuda (GPU-parallel, with num_envs > 1)
    render_backend: str = "sapien_cpu"  # sapien_cpu (Mesa lavapipe) | gpu
    num_envs: int = 1  # > 1 only with the GPU backend: the env then stays batched (module doc)


class ManiSkillEnv(gym.Env):
    """One ManiSkill task behind Gymnasium's API, numpy out; configured by :class:`ManiSkillConfig` (or its fields as
    keyword arguments). ``self.sim`` is ManiSkill's own env, whose privileged state the scripted experts read."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, config: ManiSkillConfig | None = None, **kwargs: Any) -> None:
        if config is not None and kwargs:
            raise ConfigError("pass either a ManiSkillConfig or keyword arguments, not both")
        cfg = self.config = config if config is not None else from_dict(ManiSkillConfig, kwargs)
        if cfg.obs_mode not in OBS_MODES:
            raise ConfigError(f"obs_mode: unknown observation mode '{cfg.obs_mode}' (use {' or '.join(OBS_MODES)})")
        if cfg.render_mode not in (None, "rgb_array"):
            raise ConfigError(f"render_mode: only rgb_array (or null) is supported, got {cfg.render_mode!r}")
        if cfg.num_envs < 1:
            raise ConfigError(f"num_envs: must be >= 1, got {cfg.num_envs}")
        _refuse_forked_child()
        _require_mani_skill()
        from mani_skill.utils.registration import REGISTERED_ENVS

        if cfg.task not in REGISTERED_ENVS:
            raise ConfigError(f"task: '{cfg.task}' is not a ManiSkill env id (e.g. PickCube-v1, PushCube-v1)")
        extra: dict[str, Any] = {}
        if cfg.image_size is not None:
            h, w = image_hw(cfg.image_size)
            extra["sensor_configs"] = {"width": w, "height": h}
        self.task, self.obs_mode, self.num_envs = cfg.task, cfg.obs_mode, cfg.num_envs
        self.render_mode = cfg.render_mode
        self.instruction = cfg.instruction or INSTRUCTIONS.get(cfg.task, f"Solve the {cfg.task} task.")
        self._env = gym.make(cfg.task, obs_mode=cfg.obs_mode, control_mode=cfg.control_mode,
                             reward_mode=cfg.reward_mode, render_mode=cfg.render_mode, sim_backend=cfg.sim_backend,
                             render_backend=cfg.render_backend, num_envs=cfg.num_envs,
                             max_episode_steps=cfg.max_episode_steps, **extra)  # fmt: skip
        self.sim = self._env.unwrapped  # ManiSkill's BaseEnv
        self.camera = cfg.camera
        if cfg.obs_mode == "rgb":
            cameras = list(self.sim.single_observation_space["sensor_data"].spaces)
            if cfg.camera is None:
                self.camera = cameras[0]
            elif cfg.camera not in cameras:
                raise ConfigError(f"camera: '{cfg.camera}' is not a camera of {cfg.task} ({', '.join(cameras)})")
        self.action_space = self.sim.single_action_space if cfg.num_envs == 1 else self.sim.action_space
        self.observation_space = self._observation_space()
        self.max_episode_steps: int = self._env.get_wrapper_attr("_max_episode_steps")
        self.metadata = {**self.metadata, "render_fps": self.sim.control_freq}  # one frame per control step

    def _observation_space(self) -> spaces.Dict:
        """The observation ``Dict``; float vectors unbounded, as ManiSkill's own spaces."""
        single = self.sim.single_observation_space
        batch = () if self.num_envs == 1 else (self.num_envs,)
        obs: dict[str, spaces.Space] = {}
        if self.obs_mode == "state":
            obs["state"] = spaces.Box(-np.inf, np.inf, (*batch, *single.shape), np.float32)
        else:
            image = single["sensor_data"][self.camera]["rgb"]
            obs["rgb"] = spaces.Box(0, 255, (*batch, *image.shape), np.uint8)
            leaves = [s for k, group in single.spaces.items() if k not in SENSOR_KEYS for s in _leaves(group)]
            proprio_dim = sum(int(np.prod(s.shape)) for s in leaves)
            obs["proprio"] = spaces.Box(-np.inf, np.inf, (*batch, proprio_dim), np.float32)
        obs["instruction"] = text_space([self.instruction])
        return spaces.Dict(obs)

    # --------------------------------------------------------------------------------------------- conversion
    def _squeeze(self, x: Any) -> Any:
        """Numpy, with the batch dim dropped for a single env (a size-1 result becomes a Python scalar)."""
        x = _to_numpy(x)
        if self.num_envs > 1 or not isinstance(x, np.ndarray) or x.ndim == 0 or x.shape[0] != 1:
            return x
        x = x[0]  # [1, ...] -> [...]
        return x.item() if x.ndim == 0 else x

    def _proprio(self, raw: dict[str, Any]) -> Any:
        """Robot state and task extras (ManiSkill's ``agent`` and ``extra`` groups) flattened: ``[N, P]`` float32."""
        from mani_skill.utils.common import flatten_state_dict

        state = {k: v for k, v in raw.items() if k not in SENSOR_KEYS}
        return _to_numpy(flatten_state_dict(state, use_torch=True)).astype(np.float32)  # [N, P]

    def _obs(self, raw: Any) -> dict[str, Any]:
        if self.obs_mode == "state":
            state = _to_numpy(raw).astype(np.float32)  # [N, D]
            obs = {"state": state[0] if self.num_envs == 1 else state}
        else:
            rgb = _to_numpy(raw["sensor_data"][self.camera]["rgb"]).astype(np.uint8)  # [N, H, W, 3]
            proprio = self._proprio(raw)  # [N, P]
            obs = {"rgb": rgb[0], "proprio": proprio[0]} if self.num_envs == 1 else {"rgb": rgb, "proprio": proprio}
        obs["instruction"] = self.instruction
        return obs

    def _info(self, raw: dict[str, Any]) -> dict[str, Any]:
        info = {k: self._info(v) if isinstance(v, dict) else self._squeeze(v) for k, v in raw.items()}
        if "success" in info:
            info["success"] = bool(info["success"]) if self.num_envs == 1 else np.asarray(info["success"], bool)
        return info

    # ----------------------------------------------------------------------------------------------- Gymnasium
    def reset(self, *, seed: int | list[int] | None = None,
              options: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict]:  # fmt: skip
        """``seed``: an int, or (batched) one per env; ``options`` go to ManiSkill (``env_idx``, ``reconfigure``)."""
        super().reset(seed=seed if not isinstance(seed, (list, tuple)) else None)
        raw, info = self._env.reset(seed=seed, options=options)
        return self._obs(raw), self._info(info)

    def step(self, action: Any) -> tuple[dict[str, Any], Any, Any, Any, dict[str, Any]]:
        raw, reward, terminated, truncated, info = self._env.step(np.asarray(action, np.float32))
        if self.num_envs == 1:
            reward, terminated, truncated = float(self._squeeze(reward)), bool(terminated), bool(truncated)
        else:
            reward, terminated, truncated = (np.asarray(_to_numpy(x)) for x in (reward, terminated, truncated))
        return self._obs(raw), reward, terminated, truncated, self._info(info)

    def render(self) -> np.ndarray | None:
        """The task's human-view camera ``[H, W, 3]`` uint8 (``[N, H, W, 3]`` when batched) in ``rgb_array`` mode."""
        if self.render_mode is None:
            return None
        frame = _to_numpy(self._env.render()).astype(np.uint8)  # [N, H, W, 3]
        return frame[0] if self.num_envs == 1 else frame

    def close(self) -> None:
        """Release the simulator scene and renderer; safe to call twice."""
        env, self._env = getattr(self, "_env", None), None
        if env is not None:
            env.close()
