"""The pi0-style vision-language prefix: each observation as one Qwen2.5-VL user turn, the VLM backbone's hidden states
pooled into the features ``[N, F]`` that condition the flow action expert (pi0, https://arxiv.org/abs/2410.24164).

An observation (a ``Dict``: one RGB camera image, the language instruction, float proprioception vectors) becomes the
user turn ``<image> instruction`` (plus ``State: 0.12 -0.50 ...`` with ``proprio: text``), rendered with the chat template
and the image processor of :mod:`mmrl.policies.vlm.chat` (no torchvision: image pads expanded by hand), followed by
the assistant generation prompt. The backbone (the VLM without its LM head) reads it; the prefix feature is the final
hidden state of the prompt's last token (``pooling: last``) or the mean over the prompt's positions (``mean``),
projected to ``feature_dim``. With ``proprio: mlp`` the proprioception goes through a small MLP (the flow family's
state encoder, :class:`~mmrl.policies.encoders.ObsEncoder`) and is fused with the VLM feature by a linear layer, as
pi0 feeds the robot state to the action expert rather than to the VLM; ``text`` writes it into the prompt instead.

Records and recompute. :meth:`PrefixEncoder.inputs` stores the prompt as ids left-padded to ``max_prompt_tokens`` with
their attention mask, the raw image and the proprio vector, so every observation's inputs have one shape and stack
(the flow family's records and collate need that); :meth:`PrefixEncoder.forward` processes the images again (the image
processor is deterministic) and runs the backbone. Left padding keeps every prompt's last token in the last column,
and the attention mask gives each prompt the positions (multimodal RoPE) it has alone: the padding does not change a
prompt's features (``tests/policies/test_pi0.py``). Rows with an empty mask (collate's padding of short trajectories)
skip the backbone and read a zero VLM feature.

Example:
    >>> vlm = load_policy("runs/tiny-qwen2_5_vl", device="cpu")
    >>> enc = prefix_for(env.observation_space, vlm, pooling="last", proprio="mlp", max_prompt_tokens=64,
    ...                  proprio_decimals=2, text_key="instruction", hidden=[64], feature_dim=32)
    >>> enc(enc.inputs([obs, obs])).shape
    torch.Size([2, 32])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

from mmrl.config import ConfigError
from mmrl.policies.encoders import ObsEncoder, is_image_space, is_vector_space
from mmrl.policies.vlm.chat import Conversation
from mmrl.policies.vlm.policy import VLMPolicy

POOLINGS = ("last", "mean")
PROPRIO_MODES = ("mlp", "text", "none")
VLM_TRAIN = ("all", "none", "last")


class PrefixEncoder(nn.Module):
    """Observation -> Qwen2.5-VL prompt -> backbone -> pooled, projected features ``[N, F]`` (see the module docstring)."""

    def __init__(self, vlm: VLMPolicy, image_key: str, text_key: str | None, proprio_keys: Sequence[str],
                 proprio_dim: int, proprio: str, pooling: str, max_prompt_tokens: int, proprio_decimals: int,
                 hidden: Sequence[int], feature_dim: int) -> None:  # fmt: skip
        super().__init__()
        self.vlm = vlm  # prompt codec and vision inputs (a plain attribute: its model is `backbone`, registered below)
        self.backbone = vlm.model  # the VLM without its LM head (Qwen2_5_VLModel)
        self.image_key, self.text_key = image_key, text_key  # raw observation keys of the image and the instruction
        self.proprio_keys = list(proprio_keys) if proprio != "none" else []  # float vectors, in sorted key order
        self.proprio_mode, self.pooling = proprio, pooling
        self.max_prompt_tokens, self.decimals = max_prompt_tokens, proprio_decimals
        self.feature_dim = feature_dim
        # the raw observation keys read (what a demonstration file must hold: mmrl.policies.flow.family.warmup)
        self.observation_keys = [image_key, *([text_key] if text_key else []), *self.proprio_keys]
        width = vlm.model.config.get_text_config().hidden_size
        self.project = nn.Linear(width, feature_dim)
        self.proprio = None  # the flow family's state MLP over the proprio vectors (proprio: mlp)
        self.fuse = None
        if proprio == "mlp":
            self.proprio = ObsEncoder(self.proprio_keys, proprio_dim, None, hidden, feature_dim)
            self.fuse = nn.Sequential(nn.Tanh(), nn.Linear(2 * feature_dim, feature_dim))

    # ---------------------------------------------------------------------------------------------------- prompts
    def prompt_text(self, obs: Any) -> str:
        """The user turn's text: the instruction, then the proprio numbers with ``proprio: text``."""
        text = str(obs[self.text_key]) if self.text_key else ""
        if self.proprio_mode == "text":
            state = np.concatenate([np.asarray(obs[k], np.float32).reshape(-1) for k in self.proprio_keys])
            text += "\nState: " + " ".join(f"{x:.{self.decimals}f}" for x in state)
        return text

    def prompt_ids(self, obs: Any) -> list[int]:
        """The observation's user turn and the assistant generation prompt as token ids (image pads expanded)."""
        ids, _ = Conversation(self.vlm.encoder).add_user(self.prompt_text(obs), [obs[self.image_key]])
        if len(ids) > self.max_prompt_tokens:
            raise ConfigError(f"policy.kwargs.max_prompt_tokens: a prompt of {len(ids)} tokens does not fit in "
                              f"{self.max_prompt_tokens}; raise it")  # fmt: skip
        return ids

    def inputs(self, observations: Sequence[Any]) -> dict[str, Tensor]:
        """``input_ids`` / ``attention_mask`` ``[N, max_prompt_tokens]`` (left-padded), ``rgb [N, H, W, 3]`` uint8 and,
        with ``proprio: mlp``, ``state [N, D]``: the tensors :meth:`forward` reads (on the CPU)."""
        N, L = len(observations), self.max_prompt_tokens
        ids = torch.full((N, L), self.vlm.pad_id, dtype=torch.long)
        att = torch.zeros((N, L), dtype=torch.long)
        for i, obs in enumerate(observations):
            row = self.prompt_ids(obs)
            ids[i, L - len(row) :] = torch.tensor(row, dtype=torch.long)
            att[i, L - len(row) :] = 1
        rgb = np.stack([np.asarray(o[self.image_key], np.uint8) for o in observations])  # [N, H, W, 3]
        out = {"input_ids": ids, "attention_mask": att, "rgb": torch.as_tensor(rgb)}
        if self.proprio is not None:
            out.update(self.proprio.inputs(observations))  # {"state": [N, D]}
        return out

    # ---------------------------------------------------------------------------------------------------- features
    def vlm_features(self, ids: Tensor, att: Tensor, rgb: Tensor) -> Tensor:
        """Pooled final hidden states ``[n, W]`` (float32) of ``n`` prompts with their images."""
        vision = [[self.vlm.encoder.process_image(image)] for image in rgb.cpu().numpy()]
        kwargs = self.vlm.vision_kwargs({"input_ids": ids, "attention_mask": att, "vision": vision})
        trains = any(p.requires_grad for p in self.backbone.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and trains):  # a frozen prefix keeps no activations
            h = self.backbone(**kwargs, use_cache=False).last_hidden_state.float()  # [n, L, W]
        if self.pooling == "last":
            return h[:, -1]  # left padding: every prompt ends in the last column
        m = kwargs["attention_mask"].unsqueeze(-1).bool()  # [n, L, 1]
        return torch.where(m, h, 0.0).sum(1) / m.sum(1)  # [n, W] mean over the prompt's own positions

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        """``[N, F]`` features of :meth:`inputs`' tensors (rows with an empty attention mask read a zero VLM feature)."""
        device = self.project.weight.device
        att = inputs["attention_mask"]
        live = att.bool().any(-1)  # [N] rows holding a prompt
        width = self.project.in_features
        pooled = torch.zeros(att.shape[0], width, device=device)  # [N, W]
        if bool(live.all()):
            pooled = self.vlm_features(inputs["input_ids"], att, inputs["rgb"]).to(device)
        elif bool(live.any()):
            rows = live.nonzero().squeeze(-1)  # [n]
            feats = self.vlm_features(inputs["input_ids"][rows], att[rows], inputs["rgb"][rows]).to(device)  # [n, W]
            pooled = pooled.index_copy(0, rows.to(device), feats)
        feats = self.project(pooled)  # [N, F]
        if self.proprio is None:
            return feats
        return self.fuse(torch.cat([feats, self.proprio({"state": inputs["state"]})], -1))  # [N, 2F] -> [N, F]


def set_trainable(backbone: nn.Module, mode: str, last_k: int) -> None:
    """Which backbone weights train: ``all``; ``none`` (a frozen prefix); ``last``: the last ``last_k`` text decoder
    layers and the final norm (vision tower, embeddings and earlier layers frozen)."""
    if mode == "all":
        return
    for p in backbone.parameters():
        p.requires_grad_(False)
    if mode == "last":
        text = getattr(backbone, "language_model", None)
        layers = getattr(text, "layers", None)
        if layers is None:
            raise ConfigError("policy.kwargs.vlm_train: 'last' needs a backbone with language_model.layers")
        if not 1 <= last_k <= len(layers):
            raise ConfigError(f"policy.kwargs.vlm_last_k: expected 1..{len(layers)} (the VLM's decoder layers), "
                              f"got {last_k}")  # fmt: skip
        for module in [*layers[len(layers) - last_k :], text.norm]:
            for p in module.parameters():
                p.requires_grad_(True)


def prefix_for(observation_space: gym.Space, vlm: VLMPolicy, *, pooling: str, proprio: str, max_prompt_tokens: int,
               proprio_decimals: int, text_key: str, hidden: Sequence[int], feature_dim: int) -> PrefixEncoder:  # fmt: skip
    """The :class:`PrefixEncoder` for an env's ``Dict`` observation: one uint8 ``[H, W, 3]`` image key, the
    instruction under ``text_key`` ("" = none), float ``Box`` keys as proprioception; a mismatch is a one-line
    :class:`ConfigError`."""
    if not isinstance(observation_space, gym.spaces.Dict):
        raise ConfigError(f"policy.kind: pi0 needs a Dict observation with an RGB image, got {observation_space}")
    spaces = dict(sorted(observation_space.spaces.items()))
    images = [k for k, s in spaces.items() if is_image_space(s)]
    if len(images) != 1:
        raise ConfigError(f"policy.kind: pi0 needs exactly one RGB uint8 [H, W, 3] observation (e.g. ManiSkill "
                          f"obs_mode: rgb), the observation has {len(images)} ({', '.join(images) or 'none'})")  # fmt: skip
    if text_key and text_key not in spaces:
        raise ConfigError(f"policy.kwargs.text_key: '{text_key}' is not an observation key ({', '.join(spaces)}); "
                          "'' = no instruction")  # fmt: skip
    proprio_keys = [k for k, s in spaces.items() if is_vector_space(s)]
    if proprio != "none" and not proprio_keys:
        raise ConfigError(f"policy.kwargs.proprio: '{proprio}' but the observation has no float vector; use none")
    dim = sum(math.prod(spaces[k].shape) for k in proprio_keys)
    return PrefixEncoder(vlm, images[0], text_key or None, proprio_keys, dim, proprio, pooling, max_prompt_tokens,
                         proprio_decimals, hidden, feature_dim)  # fmt: skip
