"""The VLM family's value model for PPO with a critic (``algo.advantage: gae``, as verl's critic path).

A copy of the policy's backbone plus a linear value head on the last hidden state: separate weights, so value-loss
gradients never move the policy. The head starts at zero, so the first advantages are the plain returns. It is handed
to the learner explicitly (:class:`mmrl.policies.base.Critic`), never attached to the policy.

Example:
    >>> critic = VLMCritic(policy)
    >>> critic.value(batch).shape == batch.mask.shape
    True
"""

from __future__ import annotations

import copy

import torch

from mmrl.policies.vlm.policy import VLMPolicy
from mmrl.types import Batch


class VLMCritic(torch.nn.Module):
    """``V`` at every log-prob position of a token batch: position ``t`` values the context token ``t+1`` is drawn from."""

    def __init__(self, policy: VLMPolicy) -> None:
        super().__init__()
        self.policy = [policy]  # inputs are laid out by the policy (a list: not a submodule, its weights are not ours)
        model = policy.model
        self.backbone = copy.deepcopy(model.base_model)  # the transformer without the LM head (Qwen2_5_VLModel)
        self.head = torch.nn.Linear(model.config.get_text_config().hidden_size, 1)
        torch.nn.init.zeros_(self.head.weight)
        torch.nn.init.zeros_(self.head.bias)
        self.to(policy.device)

    def sync_backbone(self) -> None:
        """Copy the policy's current backbone weights (after the warm-up, the critic starts where RL starts)."""
        self.backbone.load_state_dict(self.policy[0].model.base_model.state_dict())

    def value(self, batch: Batch) -> torch.Tensor:
        """Values ``[B, L]`` with grad (float32)."""
        inputs = self.policy[0].vision_kwargs(batch.model_inputs)
        hidden = self.backbone(**inputs, use_cache=False).last_hidden_state  # [B, T, H]
        return self.head(hidden.float()).squeeze(-1)[:, :-1]  # [B, T - 1]

    def final_value(self, batch: Batch) -> torch.Tensor:
        """``[B]`` zeros: a VLM episode ends with its last turn, nothing follows to value."""
        return torch.zeros(len(batch), device=self.head.weight.device)
