"""A VLM as a judge: the model side of :mod:`rewards.judges` (which holds no model code).

:class:`PolicyEngine` turns a :class:`~mmrl.policies.vlm.VLMPolicy` into the judge engine a
:class:`rewards.GenerativeJudge` calls (greedy decoding through the same policy code as rollouts);
:class:`VLMStepScorer` is a Math-Shepherd-style step scorer for a :class:`rewards.ProcessRewardJudge`.

Example:
    >>> from mmrl.models import load_policy
    >>> from rewards import GenerativeJudge, ProcessRewardJudge, register_judge
    >>> judge = GenerativeJudge(PolicyEngine(load_policy("/models/Qwen2.5-VL-7B-Instruct")), batch_size=8)
    >>> register_judge("vlm_judge", judge)
    >>> prm = ProcessRewardJudge(VLMStepScorer(load_policy("/models/prm")), aggregate="min")
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mmrl.policies.vlm import SamplingParams, VisionInput, VLMPolicy
from rewards import strip_vision_tokens

__all__ = ["PolicyEngine", "VLMStepScorer"]


class PolicyEngine:
    """A :class:`~mmrl.policies.vlm.VLMPolicy` as a judge engine: one greedy ``generate`` call per batch of prompts.

    Example:
        >>> engine = PolicyEngine(policy, max_new_tokens=64)
        >>> engine(["Is the sky blue? <score>N</score>"], [[image]])
        ['<score>9</score>']
    """

    def __init__(self, policy: VLMPolicy, max_new_tokens: int = 256, system: str | None = None) -> None:
        self.policy = policy
        self.max_new_tokens = max_new_tokens  # generation budget per judgement
        self.system = system  # optional system prompt of the judge conversation

    def __call__(self, prompts: list[str], images: list[list[Any]]) -> list[str]:
        """Greedy judge replies, one per prompt; ``images[i]`` precede ``prompts[i]`` in the user turn (Qwen order)."""
        convs = []
        for text, imgs in zip(prompts, images):
            conv = self.policy.conversation(self.system)
            conv.add_user(strip_vision_tokens(text), list(imgs))
            convs.append(conv)
        params = SamplingParams(temperature=0.0, max_new_tokens=self.max_new_tokens)
        return [g.text for g in self.policy.generate([c.ids for c in convs], [c.vision for c in convs], params)]


class VLMStepScorer:
    """Math-Shepherd step scores (https://arxiv.org/abs/2312.08935) from a VLM, in one forward pass per completion.

    The sequence is the chat prompt (question + images, generation prompt) then ``step_1 + step_tag + step_2 +
    step_tag + ...`` (each piece tokenized on its own). At the last token of every tag the next-token logits give
    ``p(good) / (p(good) + p(bad))``, i.e. the softmax over the two tokens. Logits come from ``policy.forward_logits``
    (the policy's temperature-scaled distribution; 1.0 for a judge loaded with ``load_policy``). Steps that do not fit
    in ``max_length`` tokens score 0.0.

    Example:
        >>> scorer = VLMStepScorer(load_policy("/models/prm"), step_tag="\\n", good="+", bad="-")
        >>> scorer("How many cats?", ["I see 2 cats on the left.", "And 1 on the right, so 3."], [image])
        [0.93, 0.71]
    """

    def __init__(
        self, policy: VLMPolicy, step_tag: str = "\n", good: str = "+", bad: str = "-", max_length: int = 4096
    ) -> None:
        self.policy = policy
        self.tag_ids = self._encode(step_tag)
        if not self.tag_ids:
            raise ValueError(f"step_tag {step_tag!r} encodes to no tokens")
        self.good_id, self.bad_id = self._single_id(good), self._single_id(bad)
        self.max_length = max_length  # tokens per scored sequence (prompt included)

    def _encode(self, text: str) -> list[int]:
        return self.policy.tokenizer(strip_vision_tokens(text), add_special_tokens=False)["input_ids"]

    def _single_id(self, token: str) -> int:
        ids = self._encode(token)
        if len(ids) != 1:
            raise ValueError(f"label token {token!r} must encode to exactly one token, got {ids}")
        return ids[0]

    def layout(
        self, question: str, steps: Sequence[str], images: Sequence[Any]
    ) -> tuple[list[int], list[int], list[VisionInput]]:
        """``(ids, tag_positions, vision)``: the scored sequence, the index of each fitting step's last tag token, and
        the prompt's processed images."""
        conv = self.policy.conversation()
        conv.add_user(strip_vision_tokens(question), list(images))
        ids, positions = list(conv.ids), []
        for step in steps:
            piece = self._encode(step) + self.tag_ids
            if len(ids) + len(piece) + 1 > self.max_length:  # +1: the trailing token added in __call__
                break
            ids += piece
            positions.append(len(ids) - 1)
        return ids, positions, conv.vision

    def __call__(self, question: str, steps: list[str], images: Sequence[Any] = ()) -> list[float]:
        """``p(good) / (p(good) + p(bad))`` after every step, in [0, 1]; 0.0 for steps beyond ``max_length``."""
        ids, positions, vision = self.layout(question, steps, images)
        scores = [0.0] * len(steps)
        if not positions:
            return scores
        # forward_logits drops the last position ([B, T-1]); a trailing token keeps the final tag's logits (causal
        # attention: it changes nothing before it).
        seq = torch.tensor([[*ids, self.good_id]])  # [1, T]
        inputs = {"input_ids": seq, "attention_mask": torch.ones_like(seq), "vision": [vision]}
        with torch.no_grad():
            logits, _ = self.policy.forward_logits(inputs)  # [1, T-1, V]; logits[:, t] predicts token t+1
        pair = logits[0, positions][:, [self.good_id, self.bad_id]].float()  # [K, 2]
        scores[: len(positions)] = torch.softmax(pair, dim=-1)[:, 0].tolist()
        return scores
