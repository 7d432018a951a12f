"""Data types that flow between envs, the rollout collector, policies and the learner.

The learner only ever sees :class:`Batch`: log-prob tensors ``[B, L]`` with masks and advantages. What ``L`` means (tokens
for a VLM, denoising steps x action dims for a flow policy) and what the model needs to recompute log-probs
(``model_inputs``) is the policy's business.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass
class Observation:
    """One observation from an env, as the ``obs`` dict of the Gymnasium API carries it.

    Example:
        >>> obs = Observation.from_dict({"text": "How many circles?", "images": []})
    """

    text: str  # the new user-turn text
    images: list[Any] = field(default_factory=list)  # RGB uint8 arrays [H, W, 3] or PIL images
    video: list[Any] | None = None  # frames of one clip, each [H, W, 3]
    state: np.ndarray | None = None  # proprioceptive state, float [S]

    @classmethod
    def from_dict(cls, obs: dict[str, Any]) -> Observation:
        """Build from an env's observation dict; a missing ``text`` is an error naming the field."""
        if "text" not in obs:
            raise KeyError("observation is missing the field 'text'")
        return cls(
            text=str(obs["text"]),
            images=list(obs.get("images") or []),
            video=obs.get("video"),
            state=obs.get("state"),
        )


@dataclass
class Turn:
    """One agent turn: the tokens the env added, what the policy generated, and what it earned."""

    prompt_ids: list[int]  # tokens appended before generation this turn (chat template + observation), [P]
    images: list[Any]  # images introduced this turn, aligned with the image-pad runs in prompt_ids
    response_ids: list[int]  # generated tokens, [R]
    response_logprobs: list[float]  # behaviour log-probs of response_ids, [R]
    response_text: str  # decoded response (the env's action)
    reward: float = 0.0  # reward the env returned for this turn
    extras: dict[str, Any] = field(default_factory=dict)  # policy-side cache for recompute (e.g. processed images)


@dataclass
class Trajectory:
    """A multi-turn episode. Token ids of all turns concatenated form one sequence; only response tokens are trained."""

    turns: list[Turn]
    group_id: int  # trajectories with the same group id share a prompt/seed (GRPO groups)
    success: bool = False
    info: dict[str, Any] = field(default_factory=dict)  # the env's final info (ground truth, reward parts)

    @property
    def reward(self) -> float:
        """Episode return: the sum of turn rewards."""
        return float(sum(t.reward for t in self.turns))

    @property
    def images(self) -> list[Any]:
        """All images of the episode in the order their pad tokens appear."""
        return [img for t in self.turns for img in t.images]

    def token_ids(self) -> tuple[list[int], list[int], list[float]]:
        """Concatenate the turns: ``(ids [T], loss_mask [T], behaviour_logprobs [T])``; mask is 1 on model tokens."""
        ids: list[int] = []
        mask: list[int] = []
        logps: list[float] = []
        for t in self.turns:
            ids += t.prompt_ids + t.response_ids
            mask += [0] * len(t.prompt_ids) + [1] * len(t.response_ids)
            logps += [0.0] * len(t.prompt_ids) + list(t.response_logprobs)
        return ids, mask, logps

    @property
    def response_length(self) -> int:
        return sum(len(t.response_ids) for t in self.turns)


@dataclass
class Batch:
    """What the learner consumes. Every tensor is aligned on ``[B, L]``; ``model_inputs`` is opaque to the learner.

    ``L`` is the policy's log-prob axis: next-token positions for a VLM (``T - 1``), denoising steps x action dims for a
    flow or diffusion policy.
    """

    model_inputs: dict[str, Any]  # whatever policy.log_prob needs (input ids, pixel values, noise chains, ...)
    mask: torch.Tensor  # [B, L] 1 where a log-prob is trained (model tokens), 0 elsewhere
    old_logp: torch.Tensor  # [B, L] behaviour log-probs recorded at rollout time
    advantages: torch.Tensor  # [B] per sequence or [B, L] per token
    rewards: torch.Tensor  # [B] sequence rewards (for logging and group statistics)
    group_ids: torch.Tensor  # [B] long
    ref_logp: torch.Tensor | None = None  # [B, L] reference-policy log-probs, only when a KL term is used
    token_weights: torch.Tensor | None = None  # [B, L] optional per-token weights (e.g. visual dependency)
    returns: torch.Tensor | None = None  # [B, L] (or [B]) critic targets (e.g. GAE returns); the learner adds a value loss when set
    old_values: torch.Tensor | None = None  # [B, L] (or [B]) critic values recorded at rollout time (value clipping, explained variance)

    def __len__(self) -> int:
        return int(self.mask.shape[0])

    def select(self, idx: torch.Tensor | list[int]) -> Batch:
        """Rows ``idx`` of every tensor; ``model_inputs`` holds tensors indexed on dim 0 or per-sample lists."""
        idx_t = torch.as_tensor(idx, dtype=torch.long)

        def pick(x: Any) -> Any:
            return None if x is None else x[idx_t]

        model_inputs = {k: _select_rows(v, idx_t) for k, v in self.model_inputs.items()}
        return Batch(
            model_inputs=model_inputs,
            mask=self.mask[idx_t],
            old_logp=self.old_logp[idx_t],
            advantages=self.advantages[idx_t],
            rewards=self.rewards[idx_t],
            group_ids=self.group_ids[idx_t],
            ref_logp=pick(self.ref_logp),
            token_weights=pick(self.token_weights),
            returns=pick(self.returns),
            old_values=pick(self.old_values),
        )


def _select_rows(value: Any, idx: torch.Tensor) -> Any:
    """Index dim 0 of a tensor or the elements of a per-sample list; anything else (a scalar setting) is shared."""
    if isinstance(value, torch.Tensor):
        return value[idx]
    if isinstance(value, list):
        return [value[i] for i in idx.tolist()]
    return value
