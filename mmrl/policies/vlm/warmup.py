"""The VLM family's supervised warm-up: a few steps of next-token loss on the env's reference completions before RL.

The env's reset info provides ``solution`` (a reference completion), ``answer`` and optionally ``answer_choices``. With
``warmup.targets = "format"`` every mention of the true answer in the solution is replaced by one drawn uniformly from
the answer choices (``"answer"``: the target is only ``<answer>{drawn}</answer>``): the policy learns the output format
but not the task, and any accuracy gained later comes from RL alone. ``"solution"`` trains on the reference itself;
``"truth"`` on ``<answer>{true answer}</answer>`` alone (a short supervised stage before RL: the policy starts with
some of the task, and RL's gain is measured over it).

Multi-turn envs (``warmup.turns > 1``): the env is stepped with each turn's target and the ``solution`` of the step's
info is the next turn's target, so the format of later turns (an answer after a zoom, the next GUI action) is taught
too. The episode is one training sequence, or with ``model.history_images`` a row per turn holding its windowed
context, as in RL.

Example:
    >>> stats = warmup(cfg, policy, critic=None, make_env=lambda: envs.make("synthetic_vqa"), progress=Progress())
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from mmrl.config import ConfigError, RunConfig
from mmrl.policies.vlm.critic import VLMCritic
from mmrl.policies.vlm.policy import VLMPolicy
from mmrl.types import Batch

TARGETS = ("format", "answer", "solution", "truth")
END_OF_TURN = "<|im_end|>"  # Qwen's chat template closes an assistant turn with it


def target_text(info: dict[str, Any], targets: str, rng: np.random.Generator) -> str:
    """The completion to imitate for one episode, from its reset ``info`` (see the module docstring)."""
    if targets == "truth":
        if "answer" not in info:
            raise ConfigError("warmup.targets: 'truth' needs the env's true answer (info['answer']); this env gives none")
        return f"<answer>{info['answer']}</answer>"
    if "solution" not in info:
        raise ConfigError("warmup.steps: the env gives no reference completion (info['solution']) to warm up on")
    target = str(info["solution"])
    if targets in ("format", "answer") and info.get("answer_choices"):
        fake = str(rng.choice(info["answer_choices"]))
        # format: every mention of the truth (in the reasoning too) becomes the drawn answer
        target = re.sub(rf"\b{re.escape(str(info['answer']))}\b", fake, target)
        if targets == "answer":  # the answer tags alone, no reasoning
            target = f"<answer>{fake}</answer>"
    return target


def episode_rows(env: gym.Env, policy: VLMPolicy, seed: int, targets: str, rng: np.random.Generator, turns: int,
                 eos: int) -> list[tuple[list[int], list[int], list[Any]]]:  # fmt: skip
    """``(ids, loss mask, vision)`` rows of one episode played on its targets for up to ``turns`` turns: one row, or a
    row per turn on its windowed context when the policy keeps a history window."""
    obs, info = env.reset(seed=seed)
    conv = policy.conversation()
    window = policy.history_images
    rows: list[tuple[list[int], list[int], list[Any]]] = []
    ids: list[int] = []
    mask: list[int] = []
    for turn in range(turns):
        new_ids, _ = conv.add_user(str(obs.get("text", "")), list(obs.get("images") or ()),
                                   list(obs.get("videos") or ()), list(obs.get("video_fps") or ()))  # fmt: skip
        target = target_text(info, targets, rng)
        tgt = policy.tokenizer(target, add_special_tokens=False)["input_ids"] + [eos]
        if window is not None:
            context, vision = conv.context(window)
            rows.append((context + tgt, [0] * len(context) + [1] * len(tgt), vision))
        ids += new_ids + tgt
        mask += [0] * len(new_ids) + [1] * len(tgt)
        conv.add_assistant(tgt)
        if turn + 1 == turns:
            break
        obs, _, terminated, truncated, info = env.step(target)
        if terminated or truncated or "solution" not in info:
            break
    return rows if window is not None else [(ids, mask, conv.vision)]


def nll_step(policy: VLMPolicy, rows: Sequence[tuple[list[int], list[int], list[Any]]], opt: torch.optim.Optimizer,
             max_grad_norm: float) -> float:  # fmt: skip
    """One supervised step on ``(ids, loss mask, vision)`` rows: the mean negative log-likelihood of the masked tokens
    under the policy's distribution, clipped gradient, ``opt.step()``. Returns the loss."""
    seqs, masks, vision = (list(x) for x in zip(*rows))
    inputs, mask = policy.make_inputs(seqs, masks, vision)  # mask [B, T-1]
    zeros = torch.zeros(len(seqs))
    # as a Batch, log_prob scores only from the first trained token on: a real vocabulary's logits over the whole
    # prompt would dominate memory
    logp = policy.log_prob(Batch(inputs, mask, torch.zeros_like(mask), zeros, zeros, zeros.long()))[0]
    mask = mask.to(logp.device)
    loss = -(logp * mask).sum() / mask.sum()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(policy.parameters(), max_grad_norm)
    opt.step()
    return float(loss.detach())


def warmup(cfg: RunConfig, policy: VLMPolicy, critic: VLMCritic | None, make_env: Callable[[], gym.Env],
           progress: Any) -> dict[str, float]:  # fmt: skip
    """``cfg.warmup.steps`` supervised steps (AdamW at ``warmup.lr``, the RL gradient clip); the critic's backbone then
    starts from the warmed-up weights. Returns ``{"warmup/nll": last loss}``."""
    wc = cfg.warmup
    if wc.targets not in TARGETS:
        raise ConfigError(f"warmup.targets: unknown '{wc.targets}' (use one of {', '.join(TARGETS)})")
    params = policy.parameters()
    opt = torch.optim.AdamW(params, lr=wc.lr)
    env = make_env()
    eos = policy.tokenizer.convert_tokens_to_ids(END_OF_TURN)
    loss_val = float("nan")
    with progress.task("warm-up", wc.steps) as advance:
        for k in range(wc.steps):
            rng = np.random.default_rng([cfg.seed, 1, k])
            rows = [row for _ in range(wc.batch_size)
                    for row in episode_rows(env, policy, int(rng.integers(0, 2**31 - 1)), wc.targets, rng, wc.turns, eos)]
            policy.train()
            loss_val = nll_step(policy, rows, opt, cfg.algo.max_grad_norm)
            advance(f"nll {loss_val:.3f}")
    env.close()
    if critic is not None:  # the critic starts from the weights RL starts from
        critic.sync_backbone()
    return {"warmup/nll": loss_val}
