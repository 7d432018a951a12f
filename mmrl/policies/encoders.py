"""Observation encoders for tiny action policies (flow, diffusion): state vectors, RGB images and observation dicts.

Every encoder reads a dict of batched tensors (``{"state": [N, D] float32}``, ``{"rgb": [N, H, W, 3] uint8}``, or both)
and returns features ``[N, F]``. :func:`encoder_for` builds the one that fits an env's observation space and
:meth:`ObsEncoder.inputs` turns a list of raw observations (arrays, or dicts of arrays) into that tensor dict, which a
policy stores in its action records so the learner re-encodes exactly what the actor saw.

- ``Box`` of floats: the flattened vector under ``"state"``, a tanh MLP.
- ``Box`` of uint8 ``[H, W, 3]``: the image under ``"rgb"``, a small CNN (three strided convs, global average pool).
- ``Dict``: every float ``Box`` key flattened and concatenated in sorted key order into ``"state"`` (``state``,
  ``proprio``, ...), every uint8 ``[H, W, 3]`` key into ``"rgb"`` (at most one image key); other keys (text, the
  language instruction) are ignored: language conditioning is not implemented.

Example:
    >>> import gymnasium as gym, numpy as np
    >>> enc = encoder_for(gym.spaces.Box(-1, 1, (3,)), hidden=[16], feature_dim=8)
    >>> enc(enc.inputs([np.zeros(3, np.float32), np.ones(3, np.float32)])).shape
    torch.Size([2, 8])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, act: type[nn.Module] = nn.Tanh) -> nn.Sequential:
    """``Linear -> act`` stack ending in a plain ``Linear`` (PyTorch's default init)."""
    dims = [in_dim, *hidden]
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), act()]
    layers.append(nn.Linear(dims[-1], out_dim))
    return nn.Sequential(*layers)


def _vec(x: Any) -> np.ndarray:
    return np.asarray(x, np.float32).reshape(-1)


def is_image_space(space: gym.Space) -> bool:
    return (
        isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3 and space.shape[-1] == 3
    )


def is_vector_space(space: gym.Space) -> bool:
    return isinstance(space, gym.spaces.Box) and np.issubdtype(space.dtype, np.floating)


class SmallCNN(nn.Module):
    """``rgb [N, H, W, 3]`` uint8 -> ``[N, F]``: pixels scaled to [0, 1], three 3x3 stride-2 convs (16, 32, 32
    channels, ReLU), global average pool, a linear layer."""

    def __init__(self, feature_dim: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.ReLU(),
        )  # fmt: skip
        self.out = nn.Linear(32, feature_dim)

    def forward(self, rgb: Tensor) -> Tensor:
        x = rgb.float().permute(0, 3, 1, 2) / 255.0  # [N, 3, H, W]
        x = self.convs(x).mean(dim=(2, 3))  # [N, 32] global average pool
        return self.out(x)


class ObsEncoder(nn.Module):
    """State MLP and/or RGB CNN, fused by a linear layer when both are present: ``inputs dict -> [N, F]``."""

    def __init__(self, state_keys: Sequence[str], state_dim: int, image_key: str | None, hidden: Sequence[int],
                 feature_dim: int) -> None:  # fmt: skip
        super().__init__()
        self.state_keys = list(
            state_keys
        )  # raw observation keys concatenated into "state" ("" = the observation itself)
        self.image_key = image_key  # raw observation key of the image ("" = the observation itself), or None
        self.feature_dim = feature_dim
        self.state = mlp(state_dim, hidden, feature_dim) if self.state_keys else None
        self.rgb = SmallCNN(feature_dim) if image_key is not None else None
        both = self.state is not None and self.rgb is not None
        self.fuse = nn.Sequential(nn.Tanh(), nn.Linear(2 * feature_dim, feature_dim)) if both else None

    def inputs(self, observations: Sequence[Any]) -> dict[str, Tensor]:
        """Raw observations (arrays, or dicts of arrays) as the tensor dict :meth:`forward` reads (on the CPU)."""
        out: dict[str, Tensor] = {}
        if self.state_keys:
            rows = [np.concatenate([_vec(o if k == "" else o[k]) for k in self.state_keys]) for o in observations]
            out["state"] = torch.as_tensor(np.stack(rows))  # [N, D]
        if self.image_key is not None:
            k = self.image_key
            out["rgb"] = torch.as_tensor(np.stack([np.asarray(o if k == "" else o[k], np.uint8) for o in observations]))
        return out

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        """``[N, F]`` features of ``inputs`` (``"state" [N, D]``, ``"rgb" [N, H, W, 3]``)."""
        device = next(self.parameters()).device
        feats = []
        if self.state is not None:
            feats.append(self.state(inputs["state"].to(device, torch.float32)))  # [N, F]
        if self.rgb is not None:
            feats.append(self.rgb(inputs["rgb"].to(device)))  # [N, F]
        return feats[0] if self.fuse is None else self.fuse(torch.cat(feats, -1))  # [N, 2F] -> [N, F]


def encoder_for(observation_space: gym.Space, hidden: Sequence[int] = (64, 64), feature_dim: int = 64) -> ObsEncoder:
    """The :class:`ObsEncoder` for an env's (single) observation space; an unsupported space is a ``TypeError``."""
    if is_image_space(observation_space):
        return ObsEncoder([], 0, "", hidden, feature_dim)
    if is_vector_space(observation_space):
        return ObsEncoder([""], int(np.prod(observation_space.shape)), None, hidden, feature_dim)
    if isinstance(observation_space, gym.spaces.Dict):
        spaces = dict(sorted(observation_space.spaces.items()))
        state_keys = [k for k, s in spaces.items() if is_vector_space(s)]
        images = [k for k, s in spaces.items() if is_image_space(s)]
        if len(images) > 1:
            raise TypeError(f"observation dict has {len(images)} images ({', '.join(images)}); one is supported")
        if state_keys or images:
            dim = sum(math.prod(spaces[k].shape) for k in state_keys)
            return ObsEncoder(state_keys, dim, images[0] if images else None, hidden, feature_dim)
    raise TypeError(f"no observation encoder for {observation_space} (a float Box, a uint8 [H, W, 3] Box, or a Dict "
                    "of those is needed)")  # fmt: skip
