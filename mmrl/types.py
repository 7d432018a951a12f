"""Data types that flow between envs, the rollout collector, policies and the learner (the bottom layer: no torch import).

A :class:`Trajectory` is family-blind: steps of observation, action, reward, terminated / truncated, info and the
policy's private record. The policy family's ``collate`` turns trajectories into a :class:`Batch`, the only thing the
learner sees: log-prob tensors ``[B, L]`` with masks and advantages. What ``L`` means (tokens for a VLM, env steps for an
MLP, denoising steps x action dims for a flow policy) and what the model needs to recompute log-probs (``model_inputs``)
is the family's business.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

IMAGE_MARKER = "<image>"  # where an image stands in an observation's text (envs emit it, the VLM's prompt codec splits on it)
VIDEO_MARKER = "<video>"  # where a video stands in an observation's text, as IMAGE_MARKER for images


@dataclass
class Step:
    """One env step: what the policy saw, what it did and what came back."""

    observation: Any  # the observation the action was taken on (an env's obs dict, or a state array)
    action: Any  # what the env received (model text, an action array, a chunk [H, A])
    logp: float  # behaviour log-prob of the action under the policy that sampled it (summed over its parts)
    record: Any  # the policy family's private record of the step (for collate: token ids, normalised obs, ...)
    version: int = 0  # policy version (optimizer steps taken) that produced the action
    reward: float = 0.0  # reward of the step (the env's, or the trainer's scoring stage when the env defers it)
    terminated: bool = False  # the MDP ended with this step
    truncated: bool = False  # the env cut the episode with this step (time limit); the MDP goes on
    info: dict[str, Any] = field(default_factory=dict)  # the env's info of this step


@dataclass
class Trajectory:
    """An episode, or a fragment of one when a fixed-horizon rollout cut it (``ended`` False)."""

    steps: list[Step]
    group_id: int = 0  # trajectories with the same group id share a prompt/seed (GRPO groups)
    env_index: int = 0  # pool slot that played it
    info: dict[str, Any] = field(default_factory=dict)  # the env's reset info, updated with every step's info
    final_observation: Any = None  # the observation after the last step (bootstraps a cut or truncated fragment)

    @property
    def reward(self) -> float:
        """Return of the trajectory: the sum of its step rewards."""
        return float(sum(s.reward for s in self.steps))

    @property
    def success(self) -> bool:
        """The env's verdict (``info["success"]``) after the last step; False when the env reports none."""
        return bool(self.info.get("success", False))

    @property
    def terminated(self) -> bool:
        """The MDP ended with the last step (no value to bootstrap)."""
        return bool(self.steps) and self.steps[-1].terminated

    @property
    def ended(self) -> bool:
        """The episode is over: terminated, or truncated (by the env's time limit or the collector's ``max_steps``).
        A fixed-horizon rollout's fragment that goes on in the next rollout is neither."""
        return bool(self.steps) and (self.steps[-1].terminated or self.steps[-1].truncated)

    def __len__(self) -> int:
        return len(self.steps)


@dataclass
class Batch:
    """What the learner consumes. Every tensor is aligned on ``[B, L]``; ``model_inputs`` is opaque to the learner.

    ``L`` is the policy's log-prob axis: next-token positions for a VLM (``T - 1``), env steps for an MLP, denoising
    steps x action dims for a flow or diffusion policy.
    """

    model_inputs: dict[str, Any]  # whatever policy.log_prob needs (input ids, pixel values, observations, ...)
    mask: torch.Tensor  # [B, L] 1 where a log-prob is trained (model tokens, env steps), 0 elsewhere
    old_logp: torch.Tensor  # [B, L] behaviour log-probs recorded at rollout time
    advantages: torch.Tensor  # [B] per row or [B, L] per position
    rewards: torch.Tensor  # [B] row returns (for logging and group statistics)
    group_ids: torch.Tensor  # [B] long
    step_rewards: torch.Tensor | None = None  # [B, L] each step's reward on that step's last position, 0 elsewhere
    bootstrap_mask: torch.Tensor | None = None  # [B] 1 where the return goes on after the row (cut or time limit), 0 where it terminated
    ref_logp: torch.Tensor | None = None  # [B, L] reference-policy log-probs, only when a KL term is used
    token_weights: torch.Tensor | None = None  # [B, L] optional per-position weights (e.g. visual dependency)
    returns: torch.Tensor | None = None  # [B, L] (or [B]) critic targets (e.g. GAE returns); the learner adds a value loss when set
    old_values: torch.Tensor | None = None  # [B, L] (or [B]) critic values recorded at rollout time (value clipping, explained variance)
    episode_ids: torch.Tensor | None = None  # [B] long: rows that are turns of one episode share an id (advantages are computed per episode); None = one row per episode
    step_ids: torch.Tensor | None = None  # [B, L] long: the env step (turn) within its episode of each trained position, -1 elsewhere (step-level estimators)
    anchor_keys: list[list[Any]] | None = None  # per row: a key of the observation each of its steps acted on (GiGPO's anchor states)

    def __len__(self) -> int:
        return int(self.mask.shape[0])

    def select(self, idx: torch.Tensor | list[int]) -> Batch:
        """Rows ``idx`` of every tensor; ``model_inputs`` holds tensors indexed on dim 0 or per-sample lists."""
        import torch

        idx_t = torch.as_tensor(idx, dtype=torch.long)
        out = {f.name: _select_rows(getattr(self, f.name), idx_t) for f in fields(self) if f.name != "model_inputs"}
        return Batch(model_inputs={k: _select_rows(v, idx_t) for k, v in self.model_inputs.items()}, **out)

    def positions_as_rows(self, model_inputs: dict[str, Any]) -> Batch:
        """Every masked position as a row of its own (``L = 1``), in row-major order.

        For families whose log-prob at one position does not depend on the other positions of its row (an MLP's env
        steps): the advantages are computed along the rows, then minibatches shuffle single positions, as CleanRL's
        PPO does. ``model_inputs`` are the family's inputs laid out the same way (one row per masked position).
        """
        keep = self.mask.bool()  # [B, L]
        rows = keep.nonzero(as_tuple=True)[0]  # [S] the row of each kept position

        def per_position(x: Any) -> Any:
            if x is None or isinstance(x, list):  # per-row lists (anchor keys) serve the advantages, computed already
                return None
            return x[keep].unsqueeze(-1) if x.dim() == 2 else x[rows]  # [B, L] -> [S, 1]; [B] -> [S]

        out = {f.name: per_position(getattr(self, f.name)) for f in fields(self) if f.name != "model_inputs"}
        return replace(self, model_inputs=model_inputs, **out)


def _select_rows(value: Any, idx: torch.Tensor) -> Any:
    """Index dim 0 of a tensor or the elements of a per-sample list; anything else (a scalar setting) is shared."""
    if value is None:
        return None
    if isinstance(value, list):
        return [value[i] for i in idx.tolist()]
    if hasattr(value, "index_select"):  # a tensor
        return value[idx]
    return value
