"""A VLM that acts in OpenVLA's action tokens: the observation becomes a user turn, the answer is exactly ``n * A``
bin tokens (:mod:`mmrl.policies.token_vla.bins`), read back as bin centres in env units.

The observation (any env's dict, or a bare state array) is rendered into a fresh single-turn prompt each step, as
OpenVLA does (no history): the images (``images``, ``rgb`` or ``image``), the instruction (``instruction`` or ``text``,
else ``policy.kwargs.instruction``), then one line per state vector present (``proprio``, ``state``) as numbers
rounded to ``state_decimals``. Numbers, not bin tokens: state vectors are unbounded (ManiSkill's proprio Box is
``(-inf, inf)``: joint velocities have no range to cut into bins without clipping), numbers keep any magnitude to the
stated precision, and the bin tokens keep one meaning, the action's. The cost is length: about four tokens per number
with the tiny tokenizer (25 proprio numbers ~ 110 tokens).

Sampling is the VLM's ``generate`` with the distribution limited to the bin tokens (:meth:`TokenVLAPolicy.restrict`,
also applied to every learner log-prob and entropy, so the distribution trained is the one sampled): exactly
``n * A`` tokens per step, no EOS, no text; greedy decoding (temperature 0) takes each dimension's most likely bin
given the dims before it. Top-p/top-k and the checkpoint's own generation defaults (a repetition penalty, say) are
not applied: they would make the sampled distribution differ from the one whose log-probs are trained.

Training is the VLM's: each step's record is a :class:`~mmrl.policies.vlm.policy.TurnRecord` holding its whole
context (``full_context``), so :meth:`VLMPolicy.collate` makes every env step a row of its own (prompt + action
tokens, trained on the action tokens: per-token PPO ratios, as OpenVLA-RL and RL4VLA train) tied to its episode by
``episode_ids``. On top, :meth:`TokenVLAPolicy.collate` marks the last row of every episode cut by a rollout horizon
or a time limit for bootstrapping, and keeps its ``final`` observation's prompt for :class:`TokenVLACritic`. The token
discount: GAE runs over the episode's action tokens, so ``algo.gamma`` discounts per token (``gamma ** (n * A)`` per
env step).

Example:
    >>> policy = FAMILY.build(cfg, env.observation_space, env.action_space)  # mmrl.policies.token_vla.family
    >>> [action] = policy.act([{"rgb": frame, "proprio": q, "instruction": "Push the cube."}], SamplingParams())
    >>> action.env_action.shape, len(action.record.response_ids)
    ((4,), 4)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from mmrl.policies.base import Action, SamplingParams
from mmrl.policies.token_vla.bins import ActionBins, bin_token_ids
from mmrl.policies.vlm.chat import VisionInput
from mmrl.policies.vlm.critic import VLMCritic
from mmrl.policies.vlm.policy import SUPPRESSED_LOGIT, Generation, VLMPolicy, observation_key
from mmrl.types import Batch, Trajectory

IMAGE_KEYS = ("rgb", "image")  # observation keys holding one image [H, W, 3] (besides an `images` sequence)
TEXT_KEYS = ("instruction", "text")  # observation keys holding the instruction, first found wins
STATE_KEYS = ("proprio", "state")  # observation keys holding a state vector, each written as a line of numbers


def observation_prompt(obs: Any, instruction: str = "", decimals: int = 2) -> dict[str, Any]:
    """An env observation as the VLM's ``{"text", "images"}`` user turn (see the module docstring); a non-dict
    observation is a state vector."""
    obs = obs if isinstance(obs, dict) else {"state": obs}
    images = list(obs.get("images") or ()) + [obs[k] for k in IMAGE_KEYS if obs.get(k) is not None]
    lines = [next((str(obs[k]) for k in TEXT_KEYS if obs.get(k)), instruction)]
    for key in STATE_KEYS:
        if obs.get(key) is not None:
            values = np.round(np.asarray(obs[key], np.float64).ravel(), decimals) + 0.0  # + 0.0: no "-0.00"
            lines.append(f"{key}: " + " ".join(f"{v:.{decimals}f}" for v in values))
    return {"text": "\n".join(line for line in lines if line), "images": tuple(images)}


class TokenVLAPolicy(VLMPolicy):
    """The VLM policy with actions as bin tokens (module docstring); ``n_actions`` actions of ``bins.low.size`` dims
    per step (``single_action``: the env takes one action ``[A]``, else a chunk ``[n, A]``)."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, image_processor: Any, bins: ActionBins, n_actions: int,
                 single_action: bool, temperature: float = 1.0, instruction: str = "",
                 state_decimals: int = 2) -> None:  # fmt: skip
        super().__init__(model, tokenizer, image_processor, temperature)
        self.bins, self.n_actions, self.single_action = bins, n_actions, single_action
        self.instruction, self.state_decimals = instruction, state_decimals
        self.n_tokens = n_actions * bins.low.size  # tokens generated per env step: n * A
        vocab = int(model.get_output_embeddings().out_features)  # V of the logits (may exceed len(tokenizer))
        self.bin_ids = torch.tensor(bin_token_ids(tokenizer, bins.n_bins, vocab))  # [n_bins] bin b -> token id
        self.outside = torch.ones(vocab, dtype=torch.bool)  # [V] True where a token is not a bin
        self.outside[self.bin_ids] = False
        self.token_bin = torch.full((vocab,), -1, dtype=torch.long)  # [V] token id -> bin (-1: not a bin)
        self.token_bin[self.bin_ids] = torch.arange(bins.n_bins)
        self.demo_keys: list[str] = [""]  # observation keys of the env's arrays, as a demo file holds them (family)

    @classmethod
    def from_vlm(cls, vlm: VLMPolicy, bins: ActionBins, n_actions: int, single_action: bool, instruction: str = "",
                 state_decimals: int = 2) -> TokenVLAPolicy:  # fmt: skip
        """The token policy on a loaded VLM's model, tokenizer and image processor (its context budget kept)."""
        policy = cls(vlm.model, vlm.tokenizer, vlm.encoder.image_processor, bins, n_actions, single_action,
                     vlm.temperature, instruction, state_decimals)  # fmt: skip
        policy.max_context_tokens = vlm.max_context_tokens
        return policy

    def restrict(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits [..., V]`` with every token but the bin tokens removed from the distribution (out of place, so
        gradients flow to the bin entries): the sampler's and every log-prob's support."""
        return logits.masked_fill(self.outside.to(logits.device), SUPPRESSED_LOGIT)

    # -------------------------------------------------------------------------------------------------- actions
    def prompt(self, obs: Any) -> dict[str, Any]:
        """The observation as this policy's user turn (:func:`observation_prompt`)."""
        return observation_prompt(obs, self.instruction, self.state_decimals)

    def action_tokens(self, actions: Any) -> torch.Tensor:
        """Env-unit actions ``[N, n, A]`` (or ``[N, A]`` when ``n = 1``) -> the bin token ids ``[N, n * A]``, action by
        action (the order they are generated in)."""
        a = np.asarray(actions, np.float64)
        a = a[:, None] if a.ndim == 2 else a  # [N, A] -> [N, 1, A]
        if a.ndim != 3 or a.shape[1] < self.n_actions or a.shape[2] != self.bins.low.size:
            raise ValueError(f"actions of shape {a.shape[1:]} do not cover the policy's [{self.n_actions}, "
                             f"{self.bins.low.size}]")  # fmt: skip
        bins = torch.from_numpy(self.bins.to_bins(a[:, : self.n_actions]))  # [N, n, A]
        return self.bin_ids[bins.flatten(1)]  # [N, n, A] -> [N, n*A]

    def env_action(self, token_ids: Sequence[int]) -> np.ndarray:
        """``n * A`` generated bin tokens -> the bin centres in env units: ``[A]`` (one action) or ``[n, A]``."""
        bins = self.token_bin[torch.as_tensor(list(token_ids), dtype=torch.long)].numpy()  # [n*A]
        if len(bins) != self.n_tokens or (bins < 0).any():
            raise ValueError(f"expected {self.n_tokens} bin tokens, got ids {list(token_ids)}")
        a = self.bins.centres(bins.reshape(self.n_actions, -1)).astype(np.float32)  # [n*A] -> [n, A]
        return a[0] if self.single_action else a

    def act(self, observations: Sequence[Any], params: SamplingParams,
            states: Sequence[Any] | None = None) -> list[Action]:  # fmt: skip
        """One action per observation, each sampled on a fresh prompt (no state carried between steps; identical
        observations in one call are encoded once). ``Action.logp`` is the sum of the ``n * A`` token log-probs."""
        prompts = [self.prompt(obs) for obs in observations]
        actions = super().act(prompts, replace(params, max_new_tokens=self.n_tokens), None)
        for a in actions:
            a.state = None
            if not a.stop:
                a.record.full_context = True  # the prompt is the step's whole context: a training row of its own
                a.env_action = self.env_action(a.record.response_ids)
        return actions

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], vision: list[list[VisionInput]],
                 params: SamplingParams) -> list[Generation]:  # fmt: skip
        """Exactly ``n * A`` bin tokens per prompt, sampled from :meth:`restrict`'s distribution at
        ``params.temperature`` (greedy at 0); log-probs of the policy's temperature-scaled restricted distribution."""
        from transformers import GenerationConfig, LogitsProcessorList

        if not prompts:
            return []
        ids, att = self._pad(prompts, left=True)  # [B, P]
        greedy = params.temperature <= 0
        temperature = self.temperature if greedy else params.temperature
        config = GenerationConfig(  # every sampling option stated: the checkpoint's defaults would bend the distribution
            max_new_tokens=self.n_tokens, do_sample=not greedy, temperature=None if greedy else temperature,
            top_k=None if greedy else 0, top_p=None if greedy else 1.0, repetition_penalty=1.0, num_beams=1,
            eos_token_id=self.eos_ids, pad_token_id=self.pad_id,
            output_logits=True, return_dict_in_generate=True,
        )  # fmt: skip
        out = self.model.generate(input_ids=ids, attention_mask=att, **self._vision_kwargs(vision, ids),
                                  generation_config=config, logits_processor=LogitsProcessorList([_Restrict(self)]))  # fmt: skip
        new = out.sequences[:, ids.shape[1] :]  # [B, N]
        if new.shape[1] != self.n_tokens:
            raise RuntimeError(f"generation stopped after {new.shape[1]} of {self.n_tokens} action tokens")
        logits = torch.stack(out.logits, dim=1).float()  # [B, N, V] raw logits
        logp_all = torch.log_softmax(self.restrict(logits / temperature), dim=-1)  # [B, N, V]
        logp = logp_all.gather(-1, new.unsqueeze(-1)).squeeze(-1)  # [B, N]
        return [Generation(row.tolist(), lp.tolist(), self.encoder.decode(row.tolist())) for row, lp in zip(new, logp)]

    # ---------------------------------------------------------------------------------------------------- learner
    def encode_prompt(self, obs: Any) -> tuple[list[int], list[VisionInput]]:
        """``(ids, vision)`` of the prompt this policy acts on for ``obs`` (ending with the generation prompt)."""
        p = self.prompt(obs)
        return self.conversation().add_user(p["text"], list(p["images"]))

    def collate(self, trajectories: Sequence[Trajectory]) -> Batch:
        """The VLM's rows, one per env step (module docstring), plus: ``bootstrap_mask`` 1 on the last row of each
        episode that did not terminate, whose prompt of the ``final_observation`` is kept in
        ``model_inputs["final"]`` (``None`` on the other rows); anchor keys of the prompts the steps acted on."""
        batch = super().collate(trajectories)
        finals: list[tuple[list[int], list[VisionInput]] | None] = [None] * len(batch)
        bootstrap = torch.zeros(len(batch))
        row = -1
        for traj in trajectories:
            row += len(traj.steps)  # rows run step by step, trajectory by trajectory
            if not traj.terminated and traj.final_observation is not None:
                bootstrap[row] = 1.0
                finals[row] = self.encode_prompt(traj.final_observation)
        batch.bootstrap_mask = bootstrap
        batch.model_inputs["final"] = finals
        batch.anchor_keys = [[observation_key(self.prompt(s.observation))] for t in trajectories for s in t.steps]
        return batch


class _Restrict:
    """A logits processor for ``generate``: the policy's :meth:`TokenVLAPolicy.restrict` on each step's scores."""

    def __init__(self, policy: TokenVLAPolicy) -> None:
        self.policy = policy

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return self.policy.restrict(scores)


class TokenVLACritic(VLMCritic):
    """The VLM critic (its own backbone copy, a zero value head) that also values the observation after a cut
    episode: ``V`` at the last token of its prompt, where the first action token would be drawn."""

    def final_value(self, batch: Batch) -> torch.Tensor:
        """``[B]``: the value of ``model_inputs["final"]``'s prompt on the rows that have one, 0 elsewhere."""
        finals = batch.model_inputs.get("final") or [None] * len(batch)
        out = torch.zeros(len(batch), device=self.head.weight.device)
        rows = [i for i, f in enumerate(finals) if f is not None]
        if not rows:
            return out
        policy = self.policy[0]
        seqs, vision = [finals[i][0] for i in rows], [finals[i][1] for i in rows]
        inputs, _ = policy.make_inputs(seqs, [[0] * len(s) for s in seqs], vision)
        hidden = self.backbone(**policy.vision_kwargs(inputs), use_cache=False).last_hidden_state  # [R, T, H]
        last = inputs["attention_mask"].sum(1).to(hidden.device) - 1  # [R] each prompt's last token (right-padded)
        values = self.head(hidden[torch.arange(len(rows), device=hidden.device), last].float()).squeeze(-1)  # [R]
        out[torch.tensor(rows, device=out.device)] = values
        return out
