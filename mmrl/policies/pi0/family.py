"""The pi0-style VLA as the trainer sees it (``policy.kind: pi0``): a Qwen2.5-VL prefix (:mod:`mmrl.policies.pi0.prefix`)
conditioning the flow family's action expert, configured by ``policy.kwargs`` (:class:`Pi0Config`: the flow options
plus the prefix's). The action expert, the log-likelihood estimators (Flow-Noise / Flow-SDE), the chunk policy, the
critic and the behaviour-cloning warm-up are the flow family's (:mod:`mmrl.policies.flow`); only the encoder differs.

The VLM comes from ``model.path`` like the VLM family's (``model.build_tiny`` builds the offline tiny Qwen2.5-VL there
first; ``model.dtype``, ``model.device``, ``model.min_pixels`` / ``max_pixels`` apply), without its LM head: a real
checkpoint directory in ``model.path`` is the GPU path. The policy's heads (projection, proprio MLP, expert) follow the
VLM's device and stay float32. Demonstrations (``policy.kwargs.demos``) hold ``obs.<image key>``, ``obs.<text_key>``
(a string array) and the proprio keys (``scripts/make_demos.py --obs-mode rgb``).

Example:
    >>> cfg = load_config(None, ["policy.kind=pi0", "model.build_tiny=true", "policy.kwargs={chunk: 8, vlm_train: last}"])
    >>> policy = FAMILY.build(cfg, env.observation_space, env.action_space)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmrl.config import ConfigError, RunConfig
from mmrl.policies.base import Family
from mmrl.policies.flow.estimators import make_estimator
from mmrl.policies.flow.family import FlowConfig, build_chunk_policy, critic, warmup
from mmrl.policies.flow.family import config as flow_config
from mmrl.policies.flow.policy import ChunkPolicy
from mmrl.policies.pi0.prefix import POOLINGS, PROPRIO_MODES, VLM_TRAIN, prefix_for, set_trainable
from mmrl.policies.vlm.policy import VLMPolicy


@dataclass
class Pi0Config(FlowConfig):
    vlm_train: str = "all"  # VLM weights that train: all | none (a frozen prefix) | last (the last vlm_last_k decoder layers and the final norm)
    vlm_last_k: int = 1  # vlm_train last: how many of the last text decoder layers train
    pooling: str = "last"  # prefix feature: last (final hidden state of the prompt's last token) | mean (mean over the prompt positions)
    proprio: str = "mlp"  # proprioception: mlp (an encoder_hidden MLP fused with the VLM feature; pi0 feeds the state to the expert) | text (in the prompt) | none
    proprio_decimals: int = 2  # proprio text: decimals per number
    max_prompt_tokens: int = 64  # prompts are left-padded to this many tokens; a longer one is an error (the tiny model's PushCube prompt: 47)
    text_key: str = "instruction"  # observation key of the language instruction ("" = none)


def config(cfg: RunConfig) -> Pi0Config:
    """``policy.kwargs`` checked into :class:`Pi0Config` (one-line errors naming the key)."""
    pc = flow_config(cfg, Pi0Config)
    for name, allowed in (("vlm_train", VLM_TRAIN), ("pooling", POOLINGS), ("proprio", PROPRIO_MODES)):
        if getattr(pc, name) not in allowed:
            raise ConfigError(f"policy.kwargs.{name}: unknown '{getattr(pc, name)}' (use one of {', '.join(allowed)})")
    for name in ("vlm_last_k", "max_prompt_tokens"):
        if getattr(pc, name) < 1:
            raise ConfigError(f"policy.kwargs.{name}: expected an integer >= 1, got {getattr(pc, name)}")
    if not 0 <= pc.proprio_decimals <= 8:
        raise ConfigError(f"policy.kwargs.proprio_decimals: expected 0..8, got {pc.proprio_decimals}")
    return pc


def load_vlm(cfg: RunConfig) -> VLMPolicy:
    """``model.path``'s VLM (built first with ``model.build_tiny``) with the LM head dropped: its model is the backbone
    (``Qwen2_5_VLModel``), its prompt codec and vision inputs those of the VLM family."""
    from mmrl.models import load_policy

    m = cfg.model
    if m.build_tiny:
        from mmrl.models.tiny import build_tiny_qwen2_5_vl

        build_tiny_qwen2_5_vl(m.path, preset=m.tiny_preset, seed=cfg.seed)
    try:
        vlm = load_policy(m.path, m.dtype, m.device, m.min_pixels, m.max_pixels)
    except FileNotFoundError as e:
        raise ConfigError(str(e)) from None
    vlm.model = vlm.model.base_model  # features, not tokens: the LM head ([vocab, hidden]) is never used
    return vlm


def build(cfg: RunConfig, observation_space: Any, action_space: Any, path: Path | None = None) -> ChunkPolicy:
    """A pi0 policy for the env's spaces: the VLM prefix and a flow action expert (weights from ``path`` when given)."""
    pc = config(cfg)
    vlm = load_vlm(cfg)
    set_trainable(vlm.model, pc.vlm_train, pc.vlm_last_k)
    encoder = prefix_for(observation_space, vlm, pooling=pc.pooling, proprio=pc.proprio,
                         max_prompt_tokens=pc.max_prompt_tokens, proprio_decimals=pc.proprio_decimals,
                         text_key=pc.text_key, hidden=pc.encoder_hidden, feature_dim=pc.feature_dim)  # fmt: skip
    policy = build_chunk_policy(pc, observation_space, action_space, lambda e: make_estimator(pc.estimator, e, pc),
                                None, encoder=encoder)  # fmt: skip
    policy.model.to(vlm.device)  # the heads join the VLM (dtypes kept: a bfloat16 backbone, float32 heads)
    if path is not None:
        policy.load(path)
    return policy


FAMILY = Family(build=build, critic=critic, warmup=warmup)
