"""The flow-matching family as the trainer sees it (``policy.kind: flow``), configured by ``policy.kwargs``
(:class:`FlowConfig`); the pieces shared with the diffusion family (policy assembly, critic, BC warm-up on a local
demonstration file) live here too.

Demonstrations (``policy.kwargs.demos``, read by the warm-up, ``warmup.steps > 0``): a ``.npz`` file (loaded with
``allow_pickle=False``: arrays only) holding ``actions`` ``[N, H', A]`` (or ``[N, A]`` when ``chunk = 1``) in the env's
units, ``H' >= chunk``, and the observations they were taken on: ``obs`` ``[N, ...]`` for an array observation, or one
``obs.<key>`` array per key of a dict observation.

Example:
    >>> cfg = load_config(None, ["policy.kind=flow", "policy.kwargs={estimator: flow_sde, steps: 8}", ...])
    >>> policy = FAMILY.build(cfg, env.observation_space, env.action_space)
"""

from __future__ import annotations

import copy
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmrl.config import ConfigError, RunConfig, from_dict, to_dict
from mmrl.policies.base import Family
from mmrl.policies.encoders import encoder_for
from mmrl.policies.flow.estimators import ESTIMATORS, make_estimator
from mmrl.policies.flow.expert import ActionExpert
from mmrl.policies.flow.policy import GRANULARITIES, ChunkCritic, ChunkPolicy, action_layout, behaviour_clone


@dataclass
class FlowConfig:
    chunk: int = 1  # H: actions per chunk the expert predicts
    n_exec: int = 0  # executed actions per chunk, the only ones in the log-prob (0 = the env's: Box [A] 1, [n, A] n)
    action_dim: int = 0  # A: the expert's action dims (0 = the env's); dims past the env's are padding it never sees
    steps: int = 4  # K: denoising steps per chunk, from t = 1 (noise) to t = 0 (action)
    estimator: str = "flow_noise"  # log-likelihood estimator: flow_noise | flow_sde (https://arxiv.org/abs/2510.25889)
    noise_level: float = 0.5  # flow_sde: a in sigma_t = a sqrt(t / (1 - t)) (pi_RL uses 0.5)
    sigma_min: float = 0.05  # flow_noise: lower bound of the learned per-step std (keeps every step's log-prob finite)
    sigma_max: float = 0.5  # flow_noise: upper bound of the learned per-step std
    granularity: str = "chunk"  # one log-prob position is: chunk | action | dim | step (mmrl.policies.flow.policy)
    hidden: list[int] = field(default_factory=lambda: [128, 128])  # hidden sizes of the action expert (SiLU MLP)
    encoder_hidden: list[int] = field(default_factory=lambda: [64, 64])  # hidden sizes of the state-vector encoder
    feature_dim: int = 64  # observation feature width (encoder output, the expert's conditioning)
    critic_hidden: list[int] = field(default_factory=lambda: [64, 64])  # critic's value head (on its own encoder)
    demos: str = ""  # warm-up demonstrations: a local .npz (see the module docstring); "" = none


def check_common(c: Any) -> None:
    """One-line :class:`ConfigError` for the options the flow and diffusion configs share."""
    for name in ("chunk", "steps", "feature_dim"):
        if getattr(c, name) < 1:
            raise ConfigError(f"policy.kwargs.{name}: expected an integer >= 1, got {getattr(c, name)}")
    for name in ("n_exec", "action_dim"):
        if getattr(c, name) < 0:
            raise ConfigError(
                f"policy.kwargs.{name}: expected an integer >= 0 (0 = from the env), got {getattr(c, name)}"
            )
    if c.n_exec > c.chunk:
        raise ConfigError(f"policy.kwargs.n_exec: {c.n_exec} executed actions exceed the chunk of {c.chunk}")
    if c.granularity not in GRANULARITIES:
        raise ConfigError(
            f"policy.kwargs.granularity: unknown '{c.granularity}' (use one of {', '.join(GRANULARITIES)})"
        )
    for name in ("hidden", "encoder_hidden", "critic_hidden"):
        if not getattr(c, name) or min(getattr(c, name)) < 1:
            raise ConfigError(f"policy.kwargs.{name}: expected positive layer sizes, got {getattr(c, name)}")


def config(cfg: RunConfig, cls: type[FlowConfig] = FlowConfig) -> FlowConfig:
    """``policy.kwargs`` checked into :class:`FlowConfig` (or ``cls``, a subclass with more options: the pi0 family's)
    with one-line errors naming the key."""
    fc = from_dict(cls, dict(cfg.policy.kwargs), prefix="policy.kwargs")
    check_common(fc)
    if fc.estimator not in ESTIMATORS:
        raise ConfigError(
            f"policy.kwargs.estimator: unknown '{fc.estimator}' (use one of {', '.join(sorted(ESTIMATORS))})"
        )
    if not fc.noise_level > 0:
        raise ConfigError(f"policy.kwargs.noise_level: expected a number > 0, got {fc.noise_level}")
    if not 0 < fc.sigma_min < fc.sigma_max:
        raise ConfigError(
            f"policy.kwargs.sigma_max: expected 0 < sigma_min < sigma_max, got {fc.sigma_min}, {fc.sigma_max}"
        )
    return fc


def build_chunk_policy(c: Any, observation_space: Any, action_space: Any, make_sampler: Callable[[ActionExpert], Any],
                       path: Path | None, encoder: Any = None) -> ChunkPolicy:  # fmt: skip
    """Encoder + expert + sampler for the env's spaces from a checked config ``c`` (weights from ``path`` if given);
    ``encoder``: the observation encoder to use (``inputs()`` and ``forward()`` as :class:`~mmrl.policies.encoders.
    ObsEncoder`'s, a ``feature_dim`` attribute), else :func:`~mmrl.policies.encoders.encoder_for`'s."""
    try:
        n_exec, env_dim, single, low, high = action_layout(action_space, c.n_exec)
        encoder = encoder if encoder is not None else encoder_for(observation_space, c.encoder_hidden, c.feature_dim)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"policy.kwargs: {e}") from None
    if c.n_exec == 0 and n_exec > c.chunk:
        raise ConfigError(
            f"policy.kwargs.chunk: the env takes {n_exec} actions per step, more than the chunk of {c.chunk}"
        )
    if c.action_dim and c.action_dim < env_dim:
        raise ConfigError(f"policy.kwargs.action_dim: {c.action_dim} is fewer than the env's {env_dim} action dims")
    expert = ActionExpert(c.chunk, c.action_dim or env_dim, c.feature_dim, c.hidden)
    policy = ChunkPolicy(encoder, make_sampler(expert), c.granularity, n_exec, env_dim, low, high, single, to_dict(c))
    if path is not None:
        policy.load(path)
    return policy


def build(cfg: RunConfig, observation_space: Any, action_space: Any, path: Path | None = None) -> ChunkPolicy:
    """A flow policy for the env's spaces (weights from ``path`` when given)."""
    fc = config(cfg)
    return build_chunk_policy(fc, observation_space, action_space, lambda e: make_estimator(fc.estimator, e, fc), path)


def critic(cfg: RunConfig, policy: ChunkPolicy) -> ChunkCritic:
    """A value head on its own copy of the policy's observation encoder (separate weights from then on)."""
    return ChunkCritic(copy.deepcopy(policy.model.encoder), policy.config["critic_hidden"]).to(policy.device)


def load_demos(path: str, keys: list[str]) -> tuple[list[Any], np.ndarray]:
    """``(observations, env-unit action chunks)`` from a demonstration ``.npz`` (see the module docstring)."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"policy.kwargs.demos: no demonstration file at '{path}'")
    try:
        with np.load(file, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ConfigError(f"policy.kwargs.demos: '{path}' is not a readable .npz of arrays ({e})") from None
    need = ["actions"] + (["obs"] if keys == [""] else [f"obs.{k}" for k in keys])
    missing = [k for k in need if k not in arrays]
    if missing:
        raise ConfigError(f"policy.kwargs.demos: '{path}' lacks {', '.join(missing)}")
    if keys == [""]:
        observations = list(arrays["obs"])
    else:
        observations = [{k: arrays[f"obs.{k}"][i] for k in keys} for i in range(len(arrays["actions"]))]
    return observations, arrays["actions"]


def warmup(cfg: RunConfig, policy: ChunkPolicy, critic: ChunkCritic | None, make_env: Callable[[], Any],
           progress: Any) -> dict[str, float]:  # fmt: skip
    """Behaviour cloning on ``policy.kwargs.demos`` for ``warmup.steps`` steps (``warmup.batch_size``, ``warmup.lr``);
    the critic's encoder then starts from the cloned encoder. Returns ``{"warmup/bc_loss": last loss}``."""
    path = cfg.policy.kwargs.get("demos", "")
    if not path:
        raise ConfigError("policy.kwargs.demos: warmup.steps > 0 needs a demonstration file to clone")
    enc = policy.model.encoder  # an encoder that lists the raw keys it reads (observation_keys) or an ObsEncoder
    keys = getattr(enc, "observation_keys", None) or [k for k in [*enc.state_keys, enc.image_key] if k is not None]
    observations, chunks = load_demos(path, keys)
    wc = cfg.warmup
    with progress.task("warm-up (BC)", wc.steps) as advance:
        try:
            losses = behaviour_clone(policy, observations, chunks, wc.steps, wc.batch_size, wc.lr, cfg.seed,
                                     cfg.algo.max_grad_norm, advance)  # fmt: skip
        except (ValueError, KeyError) as e:
            raise ConfigError(f"policy.kwargs.demos: {e}") from None
    if critic is not None:  # the critic's features start from the cloned encoder
        critic.encoder.load_state_dict(policy.model.encoder.state_dict())
    return {"warmup/bc_loss": losses[-1] if losses else float("nan")}


FAMILY = Family(build=build, critic=critic, warmup=warmup)
