"""A Hugging Face vision-language model as an RL policy: batched sampling with behaviour log-probs, and recomputation of
per-token log-probs with grad for the learner.

Log-probs are those of the temperature-scaled distribution ``log_softmax(logits / T)`` at both generation and recompute
time (top-p/top-k truncation is a sampling device and is not part of the ratio, as in verl and TRL). Vision special tokens
are suppressed during sampling, so the model never emits an image pad that would desynchronise images and tokens, and
they are removed from the policy's distribution everywhere (generation log-probs, learner log-probs, entropy): the policy
trained is the one sampled. Were they only suppressed at sampling, RL could move probability onto tokens that are never
drawn: a trained tiny model put 87% of its mass there, its ratios and in-reward KL described another distribution
than the one sampled, and its samples turned to noise.

Example:
    >>> policy = load_policy("runs/tiny-qwen2_5_vl")
    >>> conv = policy.conversation()
    >>> ids, vision = conv.add_user("How many shapes are there?", [image])
    >>> [gen] = policy.generate([conv.ids], [conv.vision], SamplingParams(max_new_tokens=16))
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from mmrl.policies.vlm.chat import VISION_SPECIAL_TOKENS, Conversation, PromptEncoder, VisionInput
from mmrl.types import Batch, Trajectory

logger = logging.getLogger(__name__)


SUPPRESSED_LOGIT = -1e9  # the logit of a token outside the policy's support: finite, so that p * logit stays 0 (not NaN)


@dataclass
class SamplingParams:
    """How to sample one turn."""

    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0  # nucleus threshold (1.0 = off)
    top_k: int = 0  # top-k (0 = off)
    max_new_tokens: int = 32  # generation budget


@dataclass
class Generation:
    """One sampled response: ids (EOS included when emitted), their behaviour log-probs and the decoded text."""

    ids: list[int]
    logprobs: list[float]
    text: str


class VLMCritic(torch.nn.Module):
    """A value model for PPO: its own copy of a VLM's backbone and a linear head on the last hidden state.

    Separate from the policy's weights (as verl's critic), so value-loss gradients never move the policy. The head starts
    at zero, so the first advantages are the plain returns.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.backbone = model.base_model  # the transformer without the LM head (Qwen2_5_VLModel for Qwen2.5-VL)
        hidden = model.config.get_text_config().hidden_size
        self.head = torch.nn.Linear(hidden, 1)
        torch.nn.init.zeros_(self.head.weight)
        torch.nn.init.zeros_(self.head.bias)

    def forward(self, **model_kwargs: Any) -> torch.Tensor:
        """Values ``[B, T]`` at every input position (float32)."""
        hidden = self.backbone(**model_kwargs, use_cache=False).last_hidden_state  # [B, T, H]
        return self.head(hidden.float()).squeeze(-1)


class VLMPolicy:
    """Policy contract for VLMs: ``generate`` for rollouts, ``log_prob(batch)`` with grad for the learner, and, with a
    :class:`VLMCritic` attached (``policy.critic``), ``value(batch)`` for PPO with a value model."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, image_processor: Any, temperature: float = 1.0) -> None:
        self.model = model
        self.encoder = PromptEncoder(tokenizer, image_processor)
        self.tokenizer = tokenizer
        self.temperature = temperature  # the distribution whose log-probs are trained (set from the rollout config)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        vocab = tokenizer.get_vocab()
        self.suppress_ids = [vocab[t] for t in VISION_SPECIAL_TOKENS if t in vocab]
        self.eos_ids = sorted(i for i in self.encoder.eos_ids if i is not None)
        self.critic: VLMCritic | None = None  # attached by trainers that run PPO with a value model

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def conversation(self, system: str | None = None) -> Conversation:
        """A fresh multi-turn prompt builder bound to this policy's tokenizer and image processor."""
        return Conversation(self.encoder, system=system)

    def restrict(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits [..., V]`` with the vision special tokens removed from the distribution (what the sampler's
        ``suppress_tokens`` does), out of place so gradients flow to the other entries."""
        if not self.suppress_ids:
            return logits
        index = torch.tensor(self.suppress_ids, device=logits.device)
        return logits.index_fill(-1, index, SUPPRESSED_LOGIT)

    # ---------------------------------------------------------------------------------------------------------- inputs
    def _vision_kwargs(self, vision: list[list[VisionInput]], ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """The images of a batch concatenated in pad order (the model consumes them row by row), and the token types.

        ``mm_token_type_ids`` (1 on image pads, 0 on text) is what Qwen's processor returns and what the model needs to
        give image tokens their 2-D multimodal RoPE positions; without it every token gets a 1-D text position.
        """
        flat = [v for row in vision for v in row]
        if not flat:
            return {}
        dtype = next(self.model.parameters()).dtype
        return {
            "pixel_values": torch.cat([v.pixel_values for v in flat]).to(self.device, dtype),  # [sum patches, D]
            "image_grid_thw": torch.stack([v.grid_thw for v in flat]).to(self.device),  # [n_images, 3]
            "mm_token_type_ids": (ids == self.encoder.image_pad_id).int(),  # [B, T]
        }

    def _pad(self, seqs: list[list[int]], left: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Pad id lists to ``[B, T]`` ids and attention mask, on the left (generation) or right (training)."""
        T = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), T), self.pad_id, dtype=torch.long)
        att = torch.zeros((len(seqs), T), dtype=torch.long)
        for i, s in enumerate(seqs):
            sl = slice(T - len(s), T) if left else slice(0, len(s))
            ids[i, sl] = torch.tensor(s, dtype=torch.long)
            att[i, sl] = 1
        return ids.to(self.device), att.to(self.device)

    # -------------------------------------------------------------------------------------------------------- sampling
    @torch.no_grad()
    def generate(
        self, prompts: list[list[int]], vision: list[list[VisionInput]], params: SamplingParams
    ) -> list[Generation]:
        """Sample one response per prompt. ``prompts[i]`` is the full context so far, ``vision[i]`` its images in order."""
        ids, att = self._pad(prompts, left=True)  # [B, P]
        greedy = params.temperature <= 0
        out = self.model.generate(
            input_ids=ids,
            attention_mask=att,
            **self._vision_kwargs(vision, ids),
            do_sample=not greedy,
            temperature=None if greedy else params.temperature,
            top_p=None if greedy else params.top_p,
            top_k=None if greedy else params.top_k,
            max_new_tokens=params.max_new_tokens,
            suppress_tokens=self.suppress_ids,
            eos_token_id=self.eos_ids,
            pad_token_id=self.pad_id,
            output_logits=True,
            return_dict_in_generate=True,
        )
        new = out.sequences[:, ids.shape[1] :]  # [B, N]
        logits = torch.stack(out.logits, dim=1).float()  # [B, N, V] raw (unprocessed) logits
        logp_all = F.log_softmax(self.restrict(logits / (self.temperature if greedy else params.temperature)), dim=-1)
        logp = logp_all.gather(-1, new.unsqueeze(-1)).squeeze(-1)  # [B, N]
        gens = []
        for i in range(new.shape[0]):
            row = new[i].tolist()
            n = len(row)
            for j, t in enumerate(row):  # keep through the first EOS; what follows is padding
                if t in self.eos_ids:
                    n = j + 1
                    break
            gens.append(Generation(row[:n], logp[i, :n].tolist(), self.encoder.decode(row[:n])))
        return gens

    # ------------------------------------------------------------------------------------------------------- recompute
    def make_inputs(
        self, sequences: list[list[int]], loss_masks: list[list[int]], vision: list[list[VisionInput]]
    ) -> tuple[dict[str, Any], torch.Tensor]:
        """Training inputs for whole trajectories: ``(model_inputs, mask [B, T-1])``.

        ``mask[b, t]`` is 1 where token ``t+1`` of sequence ``b`` was generated by the model (log-prob position ``t``).
        """
        ids, att = self._pad(sequences, left=False)  # [B, T]
        lm = torch.zeros_like(ids, dtype=torch.float32)
        for i, m in enumerate(loss_masks):
            lm[i, : len(m)] = torch.tensor(m, dtype=torch.float32)
        inputs = {"input_ids": ids.cpu(), "attention_mask": att.cpu(), "vision": list(vision)}
        return inputs, lm[:, 1:].cpu()  # [B, T-1]

    def forward_logits(self, model_inputs: dict[str, Any], start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``[B, T-1-start, V]`` of the policy's distribution (temperature applied, vision tokens removed)
        predicting tokens ``start+1..T-1``, and those target ids.

        ``start`` skips the LM head on the positions before it (``logits_to_keep``): with a real vocabulary (~150k) the
        logits of long image prompts would otherwise dominate memory.
        """
        ids = model_inputs["input_ids"].to(self.device)
        att = model_inputs["attention_mask"].to(self.device)
        vision = self._vision_kwargs(model_inputs["vision"], ids)
        out = self.model(input_ids=ids, attention_mask=att, **vision, use_cache=False, logits_to_keep=ids.shape[1] - start)
        logits = self.restrict(out.logits[:, :-1].float() / max(self.temperature, 1e-6))  # [B, T-1-start, V]
        return logits, ids[:, start + 1 :]

    def value(self, batch: Batch | dict[str, Any]) -> torch.Tensor:
        """Critic values ``[B, L]`` with grad, aligned with ``log_prob``: position ``t`` is ``V`` of the context that
        token ``t+1`` is drawn from (the tokens up to ``t``)."""
        if self.critic is None:
            raise ValueError("this policy has no critic: attach a VLMCritic (algo.advantage=gae does) to call value()")
        inputs = batch.model_inputs if isinstance(batch, Batch) else batch
        ids = inputs["input_ids"].to(self.device)
        att = inputs["attention_mask"].to(self.device)
        return self.critic(input_ids=ids, attention_mask=att, **self._vision_kwargs(inputs["vision"], ids))[:, :-1]

    def log_prob(self, batch: Batch | dict[str, Any], with_entropy: bool = False):
        """Per-token log-probs with grad: ``(logp [B, L], mask [B, L])`` (+ ``entropy [B, L]`` when asked).

        For a :class:`Batch`, logits are computed only from the first masked column on (the shared prompt is never
        scored); earlier positions read 0. For bare model inputs every position is scored.
        """
        inputs = batch.model_inputs if isinstance(batch, Batch) else batch
        mask = batch.mask if isinstance(batch, Batch) else inputs["attention_mask"][:, 1:].float()
        scored = mask.bool().any(0).nonzero()
        start = int(scored[0]) if isinstance(batch, Batch) and len(scored) else 0
        logits, targets = self.forward_logits(inputs, start)  # [B, L - start, V]
        # log p(target) = logit - logsumexp(logits): avoids materialising a second [B, L, V] tensor.
        lse = torch.logsumexp(logits, dim=-1)
        logp = F.pad(logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - lse, (start, 0))  # [B, L]
        mask = mask.to(logp.device)
        if not with_entropy:
            return logp, mask
        entropy = lse - (F.softmax(logits, dim=-1) * logits).sum(-1)
        return logp, mask, F.pad(entropy, (start, 0))  # [B, L]

    # ------------------------------------------------------------------------------------------------------- batching
    def collate(self, trajectories: list[Trajectory]) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor]:
        """Whole trajectories as training inputs: ``(model_inputs, mask [B, L], old_logp [B, L])`` with ``L = T - 1``."""
        seqs, masks, logps, vision = [], [], [], []
        for traj in trajectories:
            ids, mask, lp = traj.token_ids()
            seqs.append(ids)
            masks.append(mask)
            logps.append(lp)
            vision.append([v for turn in traj.turns for v in turn.extras.get("vision", [])])
        inputs, mask = self.make_inputs(seqs, masks, vision)
        old = torch.zeros(mask.shape[0], mask.shape[1] + 1)
        for i, lp in enumerate(logps):
            old[i, : len(lp)] = torch.tensor(lp)
        return inputs, mask, old[:, 1:] * mask  # log-prob of token t+1 sits at position t
