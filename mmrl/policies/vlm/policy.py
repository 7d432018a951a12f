"""A Hugging Face vision-language model as an RL policy: batched sampling with behaviour log-probs, and recomputation of
per-token log-probs with grad for the learner.

Log-probs are those of the temperature-scaled distribution ``log_softmax(logits / T)`` at both generation and recompute
time (top-p/top-k truncation is a sampling device and is not part of the ratio, as in verl and TRL). Vision special tokens
are suppressed during sampling, so the model never emits an image pad that would desynchronise images and tokens, and
they are removed from the policy's distribution everywhere (generation log-probs, learner log-probs, entropy): the policy
trained is the one sampled. Were they only suppressed at sampling, RL could move probability onto tokens that are never
drawn: a trained tiny model put 87% of its mass there, its ratios and in-reward KL described another distribution
than the one sampled, and its samples turned to noise.

The family's contract (:mod:`mmrl.policies.base`): :meth:`VLMPolicy.act` takes the pool's observation dicts (``text``,
``images``, optional ``videos`` with ``video_fps``: :mod:`mmrl.policies.vlm.video`) and returns the model's text as the
env action, with a :class:`TurnRecord` of the turn's tokens as the record and the
:class:`~mmrl.policies.vlm.chat.Conversation` so far as the state; :meth:`VLMPolicy.collate` concatenates the turns of
each trajectory into one token sequence, trained on the generated tokens only.

Example:
    >>> policy = load_policy("runs/tiny-qwen2_5_vl")
    >>> [action] = policy.act([{"text": "How many shapes are there?", "images": (image,)}], SamplingParams())
    >>> action.env_action, len(action.record.response_ids)
    ('<answer>3</answer>', 6)
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mmrl.policies.base import Action, SamplingParams
from mmrl.policies.vlm.chat import VISION_SPECIAL_TOKENS, Conversation, PromptEncoder, VisionInput
from mmrl.policies.vlm.video import VideoInput
from mmrl.types import Batch, Trajectory

logger = logging.getLogger(__name__)


SUPPRESSED_LOGIT = -1e9  # the logit of a token outside the policy's support: finite, so that p * logit stays 0 (not NaN)


@dataclass
class Generation:
    """One sampled response: ids (EOS included when emitted), their behaviour log-probs and the decoded text."""

    ids: list[int]
    logprobs: list[float]
    text: str


@dataclass
class TurnRecord:
    """The VLM's record of one turn: the tokens the env added, what the policy generated, and the turn's images."""

    prompt_ids: list[int]  # tokens appended before generation this turn (chat template + observation), [P]
    images: list[Any]  # images introduced this turn, aligned with the image-pad runs in prompt_ids
    vision: list[VisionInput | VideoInput]  # those images and the turn's videos processed, in pad order (learner reuses)
    response_ids: list[int]  # generated tokens, [R]
    response_logprobs: list[float]  # behaviour log-probs of response_ids, [R]
    full_context: bool = False  # prompt_ids/vision are the whole (windowed) context the turn was sampled on, not only what it added


def turns(trajectory: Trajectory) -> list[TurnRecord]:
    """The turn records of a VLM trajectory, in order."""
    return [step.record for step in trajectory.steps]


def token_ids(trajectory: Trajectory) -> tuple[list[int], list[int], list[float]]:
    """The turns concatenated: ``(ids [T], loss_mask [T], behaviour_logprobs [T])``; the mask is 1 on model tokens.
    (Turns sampled on a history window are rows of their own: see :meth:`VLMPolicy.collate`.)"""
    ids: list[int] = []
    mask: list[int] = []
    logps: list[float] = []
    for t in turns(trajectory):
        ids += t.prompt_ids + t.response_ids
        mask += [0] * len(t.prompt_ids) + [1] * len(t.response_ids)
        logps += [0.0] * len(t.prompt_ids) + list(t.response_logprobs)
    return ids, mask, logps


def response_length(trajectory: Trajectory) -> int:
    """Generated tokens over all turns."""
    return sum(len(t.response_ids) for t in turns(trajectory))


def observation_key(obs: dict[str, Any]) -> bytes:
    """A digest of an observation's text, every image's pixels and every video's frames and rate: equal keys, equal
    prompts."""
    h = hashlib.sha1(str(obs.get("text", "")).encode())
    for image in obs.get("images") or ():
        array = np.ascontiguousarray(np.asarray(image))
        h.update(repr(array.shape).encode())
        h.update(array.tobytes())
    if obs.get("videos"):  # (an image-only observation keeps its old key)
        h.update(repr([float(f) for f in obs.get("video_fps") or ()]).encode())
        for frames in obs["videos"]:
            array = np.ascontiguousarray(np.asarray(frames))
            h.update(b"video" + repr(array.shape).encode())
            h.update(array.tobytes())
    return h.digest()


class VLMPolicy:
    """The VLM family's policy: ``act`` / ``generate`` for rollouts, ``collate`` and ``log_prob(batch)`` with grad for the
    learner (:class:`mmrl.policies.base.Policy`)."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, image_processor: Any, temperature: float = 1.0) -> None:
        self.model = model
        if getattr(model, "generation_config", None) is not None:  # a checkpoint's sampling defaults (Qwen's: top_k 1,
            # top_p 0.001, repetition penalty 1.05) would fill every field generate() is not given and make the sampled
            # distribution differ from the one whose log-probs are trained: sampling is set by SamplingParams alone
            from transformers import GenerationConfig

            g = model.generation_config
            model.generation_config = GenerationConfig(bos_token_id=g.bos_token_id, eos_token_id=g.eos_token_id,
                                                       pad_token_id=g.pad_token_id)  # fmt: skip
        self.encoder = PromptEncoder(tokenizer, image_processor)
        self.tokenizer = tokenizer
        self.temperature = temperature  # the distribution whose log-probs are trained (set from the rollout config)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        vocab = tokenizer.get_vocab()
        self.suppress_ids = [vocab[t] for t in VISION_SPECIAL_TOKENS if t in vocab]
        self.eos_ids = sorted(i for i in self.encoder.eos_ids if i is not None)
        self.version = 0  # optimizer steps taken (the trainer advances it)
        self.history_images: int | None = None  # keep the last k images of an episode in context (model.history_images)
        self.max_context_tokens: int | None = None  # a turn that would overflow this ends the episode (model.max_context_tokens)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def parameters(self) -> list[torch.nn.Parameter]:
        """The model's parameters (the learner trains those that require grad)."""
        return list(self.model.parameters())

    def train(self, mode: bool = True) -> VLMPolicy:
        self.model.train(mode)
        return self

    def save(self, path: Path) -> None:
        """The policy as a normal Hugging Face checkpoint directory (model, tokenizer, image processor)."""
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        self.encoder.image_processor.save_pretrained(path)

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
    def _vision_kwargs(
        self, vision: list[list[VisionInput | VideoInput]], ids: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The images and the videos of a batch, each concatenated in pad order (the model consumes them row by row),
        and the token types.

        ``mm_token_type_ids`` (1 on image pads, 2 on video pads, 0 on text) is what Qwen's processor returns and what
        the model needs to give vision tokens their multimodal RoPE positions; without it every token gets a 1-D text
        position. ``second_per_grid_ts`` (one per video) spaces a video's temporal patches in time.
        """
        flat = [v for row in vision for v in row]
        if not flat:
            return {}
        dtype = next(self.model.parameters()).dtype
        images = [v for v in flat if not isinstance(v, VideoInput)]
        videos = [v for v in flat if isinstance(v, VideoInput)]
        out: dict[str, torch.Tensor] = {}
        if images:
            out["pixel_values"] = torch.cat([v.pixel_values for v in images]).to(self.device, dtype)  # [sum patches, D]
            out["image_grid_thw"] = torch.stack([v.grid_thw for v in images]).to(self.device)  # [n_images, 3]
        if videos:
            out["pixel_values_videos"] = torch.cat([v.pixel_values for v in videos]).to(self.device, dtype)  # [sum, D]
            out["video_grid_thw"] = torch.stack([v.grid_thw for v in videos]).to(self.device)  # [n_videos, 3]
            out["second_per_grid_ts"] = torch.tensor([v.second_per_grid_t for v in videos], device=self.device)  # [n]
        token_types = (ids == self.encoder.image_pad_id).int()  # [B, T]
        if videos:
            token_types = token_types + 2 * (ids == self.encoder.video_pad_id).int()  # [B, T]
        out["mm_token_type_ids"] = token_types
        return out

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
    def act(self, observations: Sequence[dict[str, Any]], params: SamplingParams,
            states: Sequence[Conversation | None] | None = None) -> list[Action]:  # fmt: skip
        """Answer each observation (``{"text", "images"}``, optionally ``videos`` and ``video_fps``) in one ``generate``
        call; ``states[i]`` is episode i's conversation so far (None at its first turn).

        Each turn's new text and images are encoded once (:class:`~mmrl.policies.vlm.chat.Conversation`); first turns
        with identical observations in one call (a GRPO group: same seed) are encoded once, then forked. With
        ``history_images`` the prompt is the windowed context and the record keeps all of it (``full_context``), so the
        learner scores each turn on exactly what was sampled from. A turn whose prompt plus ``max_new_tokens`` exceeds
        ``max_context_tokens`` is not sampled: its action has ``stop`` set and the collector ends the episode there.
        """
        states = list(states) if states is not None else [None] * len(observations)
        convs: list[Conversation] = []
        prompts: list[tuple[list[int], list[VisionInput]]] = []  # what each turn's record keeps
        first: dict[bytes, Conversation] = {}  # observation key -> its encoded first turn
        for obs, conv in zip(observations, states):
            images = list(obs.get("images") or ())
            key = observation_key(obs) if conv is None else None
            if key is not None and key in first:
                conv = first[key].fork()  # same observation: reuse the encoded prompt
                ids, vision = list(conv.ids), list(conv.vision)
            else:
                conv = self.conversation() if conv is None else conv
                videos, fps = list(obs.get("videos") or ()), list(obs.get("video_fps") or ())
                ids, vision = conv.add_user(str(obs.get("text", "")), images, videos, fps)
                if key is not None:
                    first[key] = conv.fork()
            if self.history_images is not None:
                ids, vision = conv.context(self.history_images)
            convs.append(conv)
            prompts.append((ids, vision))
        windowed = self.history_images is not None
        contexts = [p if windowed else (c.ids, c.vision) for p, c in zip(prompts, convs)]
        budget = self.max_context_tokens
        fits = [budget is None or len(ids) + params.max_new_tokens <= budget for ids, _ in contexts]
        live = [i for i, ok in enumerate(fits) if ok]
        gens = dict(zip(live, self.generate([contexts[i][0] for i in live], [contexts[i][1] for i in live], params)))
        actions = []
        for i, (obs, conv, (ids, vision)) in enumerate(zip(observations, convs, prompts)):
            if i not in gens:  # the context is full: no action on this observation
                actions.append(Action(None, 0.0, None, self.version, conv, stop=True))
                continue
            g = gens[i]
            conv.add_assistant(g.ids)
            record = TurnRecord(ids, list(obs.get("images") or ()), vision, g.ids, g.logprobs, windowed)
            actions.append(Action(g.text, float(sum(g.logprobs)), record, self.version, conv))
        return actions

    @torch.no_grad()
    def generate(
        self, prompts: list[list[int]], vision: list[list[VisionInput]], params: SamplingParams
    ) -> list[Generation]:
        """Sample one response per prompt. ``prompts[i]`` is the full context so far, ``vision[i]`` its images in order."""
        if not prompts:
            return []
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

    def vision_kwargs(self, model_inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``input_ids``, ``attention_mask`` and the vision inputs of ``model_inputs`` on the model's device (what the
        backbone takes; the critic runs its own copy of the backbone on them)."""
        ids = model_inputs["input_ids"].to(self.device)
        att = model_inputs["attention_mask"].to(self.device)
        return {"input_ids": ids, "attention_mask": att, **self._vision_kwargs(model_inputs["vision"], ids)}

    def log_prob(
        self, batch: Batch | dict[str, Any], with_entropy: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Per-token log-probs with grad: ``(logp [B, L], mask [B, L], entropy [B, L] or None)``; the entropy (a second
        pass over ``[B, L, V]``) only when asked.

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
            return logp, mask, None
        entropy = lse - (F.softmax(logits, dim=-1) * logits).sum(-1)
        return logp, mask, F.pad(entropy, (start, 0))  # [B, L]

    # ------------------------------------------------------------------------------------------------------- batching
    def collate(self, trajectories: Sequence[Trajectory]) -> Batch:
        """Trajectories as learner rows (``L = T - 1``), trained on the generated tokens only; each turn's reward sits on
        its last generated token, ``step_ids`` number the turns and ``anchor_keys`` digest the observations they
        answered (GiGPO's anchor states). ``advantages`` are left at 0.

        One row per trajectory, its turns' tokens concatenated (each turn appended to the one before), unless the turns
        were sampled on a history window: then each turn is a row of its own holding the exact context it was sampled on,
        and ``episode_ids`` tie the rows of one episode together (advantages are computed per episode).
        """
        windowed = any(t.full_context for traj in trajectories for t in turns(traj))
        rows: list[tuple[list[int], list[int], list[float], list[VisionInput], list[tuple[int, float, int]]]] = []
        episode, reward, group, anchors = [], [], [], []
        for e, traj in enumerate(trajectories):
            keys = [observation_key(s.observation) for s in traj.steps]
            parts = [(k, [t]) for k, t in enumerate(turns(traj))] if windowed else [(0, turns(traj))]
            for first_turn, part in parts:
                ids, mask, lp, vision, ends = [], [], [], [], []  # ends: (log-prob position, reward, turn) per turn
                for k, t in enumerate(part, start=first_turn):
                    ids += t.prompt_ids + t.response_ids
                    mask += [0] * len(t.prompt_ids) + [1] * len(t.response_ids)
                    lp += [0.0] * len(t.prompt_ids) + list(t.response_logprobs)
                    vision += t.vision
                    if t.response_ids:
                        ends.append((len(ids) - 2, traj.steps[k].reward, k))
                rows.append((ids, mask, lp, vision, ends))
                episode.append(e)
                reward.append(traj.reward)
                group.append(traj.group_id)
                anchors.append(keys[first_turn : first_turn + len(part)])
        inputs, mask = self.make_inputs([r[0] for r in rows], [r[1] for r in rows], [r[3] for r in rows])
        old = torch.zeros(mask.shape[0], mask.shape[1] + 1)
        step_rewards = torch.zeros_like(mask)  # [B, L]
        step_ids = torch.full(mask.shape, -1, dtype=torch.long)  # [B, L]
        for i, (_, _, lp, _, ends) in enumerate(rows):
            old[i, : len(lp)] = torch.tensor(lp)
            begin = 0
            for pos, r, k in ends:  # pos: log-prob position of a turn's last generated token
                step_rewards[i, pos] += r
                step_ids[i, begin : pos + 1] = k
                begin = pos + 1
        step_ids[mask == 0] = -1
        B = len(rows)
        return Batch(
            model_inputs=inputs,
            mask=mask,
            old_logp=old[:, 1:] * mask,  # log-prob of token t+1 sits at position t
            advantages=torch.zeros(B),
            rewards=torch.tensor(reward, dtype=torch.float32),
            group_ids=torch.tensor(group, dtype=torch.long),
            step_rewards=step_rewards,
            bootstrap_mask=torch.zeros(B),  # a VLM episode ends with its last turn (max_turns ends it too)
            episode_ids=torch.tensor(episode, dtype=torch.long) if windowed else None,
            step_ids=step_ids,
            anchor_keys=anchors,
        )

    def learner_view(self, batch: Batch) -> Batch:
        """Rows stay whole sequences: a token's log-prob depends on every token before it."""
        return batch
