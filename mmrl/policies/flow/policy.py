"""Action-chunk policies (flow matching here, diffusion in :mod:`mmrl.policies.diffusion`) under mmrl's contracts.

A :class:`ChunkPolicy` is an observation encoder (:mod:`mmrl.policies.encoders`) plus a *sampler*: a module with
``sample(features, deterministic) -> (chunk [N, H, A], record, element log-probs [N, S, H, A])``,
``log_prob(features, record) -> (element log-probs, element entropies)`` (with grad) and ``bc_loss(features, chunks)``
(a flow estimator of :mod:`mmrl.policies.flow.estimators`, or a DDPM/DDIM sampler). The policy turns element log-probs
into log-prob *positions* and owns everything the trainer needs around them.

Positions (``granularity``), always over the executed part only: the first ``n_exec`` actions of the chunk and the
env's ``env_dim`` action dims (a model may predict padded dims the env never sees); when the episode ends inside a
chunk, a chunk-executing env reports how many actions ran (``info["executed"]``, :mod:`envs.sim.chunk`) and the
actions after them leave the log-prob too (their ``action`` / ``dim`` positions are masked out):

=============  =========================  ====================================================================
granularity    positions P per env step   one position's log-prob
=============  =========================  ====================================================================
``chunk``      1                          sum over the S terms, the executed actions and dims (one ratio/chunk)
``action``     ``n_exec``                 sum over the S terms and the dims of one executed action
``dim``        ``n_exec * env_dim``       sum over the S terms of one executed (action, dim) element
``step``       S                          sum over the executed elements of one chain term (DPPO: one ratio per
                                          denoising step)
=============  =========================  ====================================================================

Layout. ``collate`` makes one row per trajectory with ``L = T * P`` (position ``p`` of env step ``t`` at ``t * P + p``).
Its ``mask`` marks each env step's *last* position only, where the step's reward sits: the advantage estimators (GAE
over env steps with the critic, outcome estimators per row) then see one decision per env step, as for an MLP.
:meth:`ChunkPolicy.learner_view` makes every env step a row of its own with ``L = P`` positions, all trained, each
carrying its step's advantage (and critic return / old value); ``old_logp`` and ``ref_logp`` stay per position.
``model_inputs`` keys are flat (``obs.<key>`` ``[B, T, ...]``, ``rec.<key>`` ``[B, T, ...]``, ``ran`` ``[B, T]``
actions run per step, ``final.<key>`` ``[B, ...]``) so that ``Batch.select`` indexes them all.

Actions live in ``[-1, 1]`` inside the model: an env with finite bounds receives ``low + (x + 1) (high - low) / 2``
clipped to its bounds; log-probs are those of the unclipped chunk (as the MLP family's Gaussian). A ``Box`` ``[A]``
action space receives one action (``n_exec = 1``), a ``Box`` ``[n, A]`` one the executed chunk ``[n_exec, A]``.
``SamplingParams.temperature`` only switches between sampling (> 0) and the deterministic sampler (0, evaluation).

Example:
    >>> policy = FAMILY.build(load_config(None, ["policy.kind=flow", "env.id=Pendulum-v1"]), obs_space, act_space)
    >>> [action] = policy.act([obs], SamplingParams())
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from mmrl.policies.base import Action, SamplingParams
from mmrl.policies.encoders import ObsEncoder, mlp
from mmrl.types import Batch, Trajectory

GRANULARITIES = ("chunk", "action", "dim", "step")


def positions(elem: Tensor, granularity: str, n_exec: int, env_dim: int, ran: Tensor | None = None) -> Tensor:
    """Element terms ``[N, S, H, A]`` -> log-prob positions ``[N, P]`` over the executed ``[:n_exec, :env_dim]``;
    ``ran [N]`` (optional) counts the actions that actually ran, the others leave the sums."""
    x = elem[:, :, :n_exec, :env_dim]  # [N, S, E, D]
    if ran is not None:
        x = torch.where(_ran_mask(ran, x.shape[2]).view(x.shape[0], 1, -1, 1), x, torch.zeros((), dtype=x.dtype))
    if granularity == "chunk":
        return x.sum((1, 2, 3)).unsqueeze(-1)  # [N, 1]
    if granularity == "action":
        return x.sum((1, 3))  # [N, E]
    if granularity == "dim":
        return x.sum(1).flatten(1)  # [N, E, D] -> [N, E*D]
    if granularity == "step":
        return x.sum((2, 3))  # [N, S]
    raise ValueError(f"unknown granularity '{granularity}' (use one of {', '.join(GRANULARITIES)})")


def _ran_mask(ran: Tensor, n_exec: int) -> Tensor:
    """``[N, E]`` true for the actions of each chunk that ran (``ran [N]`` counts them)."""
    return torch.arange(n_exec, device=ran.device) < ran.view(-1, 1)


def position_mask(ran: Tensor, granularity: str, n_exec: int, env_dim: int, P: int) -> Tensor:
    """``[N, P]`` 1 on the positions that hold a log-prob: every position, except (``action``, ``dim``) those of actions
    that never ran because the episode ended inside the chunk."""
    if granularity == "action":
        return _ran_mask(ran, n_exec).float()  # [N, E]
    if granularity == "dim":
        return _ran_mask(ran, n_exec).float().repeat_interleave(env_dim, 1)  # [N, E] -> [N, E*D]
    return torch.ones(ran.shape[0], P)


def _prefixed(inputs: dict[str, Any], prefix: str) -> dict[str, Any]:
    """``{"obs.state": ...}`` -> ``{"state": ...}`` for one prefix."""
    return {k[len(prefix) + 1 :]: v for k, v in inputs.items() if k.startswith(prefix + ".")}


class ChunkPolicy:
    """Encoder + sampler (see the module docstring): acting, collate, the learner contract, BC, saving."""

    def __init__(self, encoder: ObsEncoder, sampler: nn.Module, granularity: str, n_exec: int, env_dim: int,
                 action_low: np.ndarray | None, action_high: np.ndarray | None, single_action: bool,
                 config: dict[str, Any]) -> None:  # fmt: skip
        expert = sampler.expert
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity: unknown '{granularity}' (use one of {', '.join(GRANULARITIES)})")
        if not 1 <= n_exec <= expert.chunk or not 1 <= env_dim <= expert.action_dim:
            raise ValueError(
                f"executed part [{n_exec}, {env_dim}] outside the chunk [{expert.chunk}, {expert.action_dim}]"
            )
        self.model = nn.Module()
        self.model.encoder, self.model.sampler = encoder, sampler
        self.granularity, self.n_exec, self.env_dim, self.single_action = granularity, n_exec, env_dim, single_action
        self.action_low, self.action_high = action_low, action_high  # [env_dim] finite bounds, or None
        self.config = config  # the family's options, saved beside the weights
        self.version = 0

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def parameters(self) -> list[nn.Parameter]:
        return list(self.model.parameters())

    def train(self, mode: bool = True) -> ChunkPolicy:
        self.model.train(mode)
        return self

    # ------------------------------------------------------------------------------------------------------- acting
    def env_action(self, chunk: Tensor) -> np.ndarray:
        """``chunk [H, A]`` -> what the env steps: the executed ``[n_exec, env_dim]`` (``[env_dim]`` for a one-action
        space), mapped from ``[-1, 1]`` to the env's bounds and clipped when the bounds are finite."""
        a = chunk[: self.n_exec, : self.env_dim].detach().cpu().numpy()  # [E, D]
        if self.action_low is not None:
            a = np.clip(self.action_low + (a + 1.0) * 0.5 * (self.action_high - self.action_low),
                        self.action_low, self.action_high)  # fmt: skip
        return a[0] if self.single_action else a

    def model_chunks(self, env_chunks: np.ndarray) -> Tensor:
        """Demonstrated env-unit chunks ``[N, H, env_dim]`` (or ``[N, env_dim]`` for ``H = 1``) -> model chunks
        ``[N, H, A]`` in ``[-1, 1]`` (the inverse of :meth:`env_action`; padded dims 0)."""
        expert = self.model.sampler.expert
        a = np.asarray(env_chunks, np.float32)
        a = a[:, None] if a.ndim == 2 else a  # [N, D] -> [N, 1, D]
        if a.shape[1] < expert.chunk or a.shape[2] != self.env_dim:
            raise ValueError(
                f"demonstrated chunks {a.shape[1:]} do not cover the policy's [{expert.chunk}, {self.env_dim}]"
            )
        if self.action_low is not None:
            a = 2.0 * (a - self.action_low) / (self.action_high - self.action_low) - 1.0
        out = torch.zeros(a.shape[0], expert.chunk, expert.action_dim)  # [N, H, A]
        out[:, :, : self.env_dim] = torch.as_tensor(a[:, : expert.chunk], dtype=torch.float32)
        return out

    @torch.no_grad()
    def act(
        self, observations: Sequence[Any], params: SamplingParams, states: Sequence[Any] | None = None
    ) -> list[Action]:
        """One chunk per observation; ``params.temperature = 0`` runs the deterministic sampler (evaluation).

        The record holds the encoder inputs (``obs``), the sampler's record (``rec``: the chain, or the stochastic
        step's index and endpoints) and the executed part's element log-probs (``elem [S, E, D]``, from which collate
        takes the behaviour log-prob of each position, of the actions that ran); ``Action.logp`` is the chunk's.
        """
        inputs = self.model.encoder.inputs(observations)  # {key: [N, ...]}
        feats = self.model.encoder(inputs)  # [N, F]
        chunks, record, elem = self.model.sampler.sample(feats, deterministic=params.temperature <= 0)
        elem = elem[:, :, : self.n_exec, : self.env_dim].cpu()  # [N, S, E, D]
        logp = elem.sum((1, 2, 3))  # [N]
        record = {k: v.cpu() for k, v in record.items()}
        return [Action(self.env_action(chunks[i]), float(logp[i]),
                       {"obs": {k: v[i] for k, v in inputs.items()}, "rec": {k: v[i] for k, v in record.items()},
                        "elem": elem[i]}, self.version)
                for i in range(len(observations))]  # fmt: skip

    # ------------------------------------------------------------------------------------------------------ learner
    def log_prob(self, batch: Batch, with_entropy: bool = False) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(logp [R, T*P], mask [R, T*P], entropy [R, T*P] | None)`` of the recorded chains, with grad (both the
        collated layout, ``T`` env steps per row, and the learner view, ``T = 1``)."""
        obs, rec = _prefixed(batch.model_inputs, "obs"), _prefixed(batch.model_inputs, "rec")
        R, T = next(iter(obs.values())).shape[:2]
        feats = self.model.encoder({k: v.flatten(0, 1) for k, v in obs.items()})  # [R*T, F]
        elem, elem_ent = self.model.sampler.log_prob(feats, {k: v.flatten(0, 1) for k, v in rec.items()})
        ran = batch.model_inputs["ran"].flatten().to(elem.device)  # [R*T]
        logp = positions(elem, self.granularity, self.n_exec, self.env_dim, ran).reshape(R, -1)  # [R*T, P] -> [R, T*P]
        entropy = None
        if with_entropy:
            entropy = positions(elem_ent, self.granularity, self.n_exec, self.env_dim, ran).reshape(R, -1)  # [R, T*P]
        return logp, batch.mask.to(logp.device), entropy

    def collate(self, trajectories: Sequence[Trajectory]) -> Batch:
        """One row per trajectory, ``L = T * P``; the mask on each step's last position (see the module docstring).
        A step's ``info["executed"]`` (actions that ran before the episode ended; all ``n_exec`` when absent) limits
        its log-prob to those actions."""
        B, T = len(trajectories), max(len(t) for t in trajectories)
        first = trajectories[0].steps[0].record
        P = positions(first["elem"][None], self.granularity, self.n_exec, self.env_dim).shape[1]
        inputs: dict[str, Tensor] = {"ran": torch.full((B, T), self.n_exec, dtype=torch.long)}  # [B, T]
        for part in ("obs", "rec"):
            for k, v in first[part].items():
                inputs[f"{part}.{k}"] = torch.zeros(B, T, *v.shape, dtype=v.dtype)  # [B, T, ...]
        mask, old, step_rewards = torch.zeros(B, T, P), torch.zeros(B, T, P), torch.zeros(B, T, P)
        for i, traj in enumerate(trajectories):
            n = len(traj)
            for part in ("obs", "rec"):
                for k in first[part]:
                    inputs[f"{part}.{k}"][i, :n] = torch.stack([s.record[part][k] for s in traj.steps])
            ran = torch.tensor([min(max(int(s.info.get("executed", self.n_exec)), 1), self.n_exec) for s in traj.steps])
            inputs["ran"][i, :n] = ran
            elem = torch.stack([s.record["elem"] for s in traj.steps])  # [n, S, E, D]
            old[i, :n] = positions(elem, self.granularity, self.n_exec, self.env_dim, ran)  # [n, P]
            mask[i, :n, -1] = 1.0
            step_rewards[i, :n, -1] = torch.tensor([s.reward for s in traj.steps])
        final = self.model.encoder.inputs([t.final_observation for t in trajectories])  # {key: [B, ...]}
        inputs.update({f"final.{k}": v for k, v in final.items()})
        return Batch(
            model_inputs=inputs,
            mask=mask.view(B, T * P),  # [B, T, P] -> [B, L]
            old_logp=old.view(B, T * P),
            advantages=torch.zeros(B),
            rewards=step_rewards.sum((1, 2)),
            group_ids=torch.tensor([t.group_id for t in trajectories], dtype=torch.long),
            step_rewards=step_rewards.view(B, T * P),
            bootstrap_mask=torch.tensor([0.0 if t.terminated else 1.0 for t in trajectories]),
        )

    def learner_view(self, batch: Batch) -> Batch:
        """Every env step a row of its ``P`` positions (a chunk's log-prob depends on its own step alone), all trained
        but those of actions that never ran."""
        obs_key = next(k for k in batch.model_inputs if k.startswith("obs."))
        B, T = batch.model_inputs[obs_key].shape[:2]
        P = batch.mask.shape[1] // T
        keep = batch.mask.view(B, T, P)[..., -1].bool()  # [B, T] real env steps
        rows = keep.nonzero(as_tuple=True)[0]  # [S] the trajectory row of each step

        def per_position(x: Tensor | None) -> Tensor | None:  # [B, T*P] -> [S, P]
            return None if x is None else x.view(B, T, P)[keep]

        def per_step(x: Tensor | None) -> Tensor | None:  # [B] -> [S]; [B, T*P] (on the last position) -> [S, P]
            if x is None:
                return None
            if x.dim() == 1:
                return x[rows]
            return x.view(B, T, P)[..., -1][keep].unsqueeze(-1).expand(-1, P).contiguous()

        inputs = {k: v[keep].unsqueeze(1) for k, v in batch.model_inputs.items() if not k.startswith("final.")}
        return Batch(
            model_inputs=inputs,  # [S, 1, ...]
            mask=position_mask(inputs["ran"].flatten(), self.granularity, self.n_exec, self.env_dim, P),  # [S, P]
            old_logp=per_position(batch.old_logp),
            advantages=per_step(batch.advantages),
            rewards=batch.rewards[rows],
            group_ids=batch.group_ids[rows],
            step_rewards=per_position(batch.step_rewards),
            bootstrap_mask=None if batch.bootstrap_mask is None else batch.bootstrap_mask[rows],
            ref_logp=per_position(batch.ref_logp),
            token_weights=per_position(batch.token_weights),
            returns=per_step(batch.returns),
            old_values=per_step(batch.old_values),
        )

    # ---------------------------------------------------------------------------------------------- BC and saving
    def bc_loss(self, inputs: dict[str, Tensor], chunks: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The sampler's behaviour-cloning loss on encoder ``inputs`` and model-space ``chunks [N, H, A]``."""
        return self.model.sampler.bc_loss(self.model.encoder(inputs), chunks.to(self.device), generator)

    def save(self, path: Path) -> None:
        """``model.safetensors`` (encoder and sampler weights) and ``chunk_policy.json`` (the family's options)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.model.state_dict().items()}, str(path / "model.safetensors"))
        (path / "chunk_policy.json").write_text(json.dumps(self.config, indent=2))

    def load(self, path: Path) -> None:
        """Weights from :meth:`save`'s directory (tensors only: nothing is unpickled)."""
        self.model.load_state_dict(load_file(str(Path(path) / "model.safetensors"), device=str(self.device)))


def behaviour_clone(policy: ChunkPolicy, observations: Sequence[Any], env_chunks: np.ndarray, steps: int,
                    batch_size: int = 64, lr: float = 1e-3, seed: int = 0, max_grad_norm: float = 1.0,
                    progress: Callable[[str], None] | None = None) -> list[float]:  # fmt: skip
    """``steps`` AdamW steps of the sampler's BC loss on demonstrations: ``observations`` (raw, as the env gives them)
    and the chunks taken there in env units (``[N, H, env_dim]``). Returns the loss of every step."""
    inputs = policy.model.encoder.inputs(observations)  # {key: [N, ...]}
    chunks = policy.model_chunks(env_chunks)  # [N, H, A]
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    policy.train(True)
    out = []
    for _ in range(steps):
        idx = torch.randint(0, chunks.shape[0], (min(batch_size, chunks.shape[0]),), generator=gen)
        loss = policy.bc_loss({k: v[idx] for k, v in inputs.items()}, chunks[idx], gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        opt.step()
        out.append(float(loss.detach()))
        if progress is not None:
            progress(f"bc loss {out[-1]:.4f}")
    return out


class ChunkCritic(nn.Module):
    """``V(s)``: its own observation encoder and a tanh MLP head, at every position of an env step."""

    def __init__(self, encoder: ObsEncoder, hidden: Sequence[int] = (64, 64)) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = mlp(encoder.feature_dim, hidden, 1)

    def _v(self, inputs: dict[str, Tensor]) -> Tensor:
        return self.head(self.encoder(inputs)).squeeze(-1)  # [N, 1] -> [N]

    def value(self, batch: Batch) -> Tensor:
        """``[R, T*P]``: ``V`` of each step's observation (``obs.* [R, T, ...]``) at its ``P`` positions, with grad."""
        obs = _prefixed(batch.model_inputs, "obs")
        R, T = next(iter(obs.values())).shape[:2]
        v = self._v({k: x.flatten(0, 1) for k, x in obs.items()}).view(R, T)  # [R*T] -> [R, T]
        return v.repeat_interleave(batch.mask.shape[1] // T, dim=1)  # [R, T*P]

    def final_value(self, batch: Batch) -> Tensor:
        """``[B]`` values of ``final.*``, the observation after each row's last step."""
        return self._v(_prefixed(batch.model_inputs, "final"))


def action_layout(action_space: gym.Space, n_exec: int) -> tuple[int, int, bool, np.ndarray | None, np.ndarray | None]:
    """``(n_exec, env_dim, single_action, low, high)`` for a ``Box`` action space ``[A]`` or ``[n, A]``; ``n_exec = 0``
    means what the space takes. A mismatch is a ``ValueError`` naming ``n_exec``."""
    if not isinstance(action_space, gym.spaces.Box) or len(action_space.shape) not in (1, 2):
        raise ValueError(f"no chunk policy for action space {action_space} (a Box [A] or [n, A] is needed)")
    single = len(action_space.shape) == 1
    takes = 1 if single else action_space.shape[0]
    if n_exec not in (0, takes):
        raise ValueError(f"n_exec: the env takes {takes} action(s) per step, got n_exec={n_exec}")
    low = np.asarray(action_space.low, np.float32).reshape(-1, action_space.shape[-1])[0]  # [A] (first row of [n, A])
    high = np.asarray(action_space.high, np.float32).reshape(-1, action_space.shape[-1])[0]
    finite = bool(np.isfinite(low).all() and np.isfinite(high).all())
    return takes, int(action_space.shape[-1]), single, low if finite else None, high if finite else None
