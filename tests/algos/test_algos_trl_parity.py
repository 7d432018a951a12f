"""Parity with TRL's GRPOTrainer, driving TRL's own code on identical inputs (values and gradients to 1e-6).

What is exercised (trl 1.16, ``trl/trainer/grpo_trainer.py``):

- Loss: the real ``GRPOTrainer._compute_loss`` (lines ~3020-3292), called unbound on a minimal stand-in object that has
  exactly the attributes it reads. ``_get_per_token_logps_and_entropies`` is replaced by a function returning our
  ``logp`` tensor (so gradients flow back into it); ``get_high_entropy_mask`` (~1380) and ``get_off_policy_mask`` are
  TRL's own, bound to the stand-in; the accelerator is a single-process identity. Covered: ``loss_type`` grpo, bnpo,
  dapo, dr_grpo, cispo; ``importance_sampling_level="sequence"`` (GSPO); ``beta > 0`` (k3 KL in the loss);
  ``top_entropy_quantile < 1``; the vLLM importance-sampling ratio multiplied into the per-token loss.
- Advantages: the group-normalisation block of ``GRPOTrainer._generate_and_score_completions`` (from
  ``if self.multi_objective_aggregation == "sum_then_normalize":`` through
  ``advantages = torch.nan_to_num(advantages, nan=0.0)``, ~2758-2804), extracted with ``inspect`` and executed as-is
  with TRL's ``nanstd``; covered: ``scale_rewards`` group, batch, none. The test fails (never silently passes or skips) if
  that block cannot be located in another TRL version.

Mapping onto mmrl: grpo -> ppo_clip + seq-mean-token-mean; bnpo / dapo (one process, no accumulation) -> token-mean;
dr_grpo -> seq-mean-token-sum-norm with agg_constant = max_completion_length; cispo -> cispo + token-mean with
clip_high = epsilon_high - 1 and no lower bound; sequence-level IS + grpo -> gspo.
"""

from __future__ import annotations

import inspect
import re
import textwrap
import types
from collections import defaultdict

import pytest
import torch
import trl.trainer.grpo_trainer as trl_grpo  # the dev extra installs TRL: a missing peer is a failure, not a skip
from trl.trainer.utils import nanstd

from mmrl.algos import advantages, losses  # noqa: E402

GRPOTrainer = trl_grpo.GRPOTrainer
B, L = 6, 9


class _Accelerator:
    """Single-process stand-in for accelerate: every collective is the identity."""

    num_processes = 1

    def gather(self, x):
        return x

    gather_for_metrics = gather

    def reduce(self, x, reduction="sum"):
        return x

    def pad_across_processes(self, x, dim=0, pad_index=0):
        return x


def trl_loss(loss_type, logp, old, adv, mask, *, eps_low=0.2, eps_high=0.28, level="token", beta=0.0, ref=None,
             max_completion_length=16, top_entropy_quantile=1.0, entropies=None, is_ratio=None):  # fmt: skip
    """Run TRL's real ``_compute_loss`` on our tensors."""
    fake = types.SimpleNamespace(
        loss_type=loss_type, epsilon_low=eps_low, epsilon_high=eps_high, importance_sampling_level=level, beta=beta,
        top_entropy_quantile=top_entropy_quantile, off_policy_mask_threshold=None, max_completion_length=max_completion_length,
        use_vllm=is_ratio is not None, vllm_importance_sampling_correction=is_ratio is not None,
        args=types.SimpleNamespace(delta=None, use_bias_correction_kl=False, steps_per_generation=1),
        model=types.SimpleNamespace(training=True), current_gradient_accumulation_steps=1, accelerator=_Accelerator(),
        _entropy_bonus_enabled=False, aux_loss_enabled=False, _metrics={"train": defaultdict(list)},
    )  # fmt: skip
    ent = entropies if entropies is not None else torch.zeros_like(logp)
    fake._get_per_token_logps_and_entropies = lambda *a, **k: (logp, ent, None)
    fake.get_high_entropy_mask = types.MethodType(GRPOTrainer.get_high_entropy_mask, fake)
    fake.get_off_policy_mask = GRPOTrainer.get_off_policy_mask
    inputs = {
        "prompt_ids": torch.zeros(B, 2, dtype=torch.long), "prompt_mask": torch.ones(B, 2, dtype=torch.long),
        "completion_ids": torch.zeros(B, L, dtype=torch.long), "completion_mask": mask.long(),
        "advantages": adv, "old_per_token_logps": old, "num_items_in_batch": mask.sum().float(),
    }  # fmt: skip
    if ref is not None:
        inputs["ref_per_token_logps"] = ref
    if is_ratio is not None:
        inputs["importance_sampling_ratio"] = is_ratio
    return GRPOTrainer._compute_loss(fake, None, inputs)


def _inputs(seed, scale=0.3, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    old = -torch.rand(B, L, generator=gen, dtype=dtype) * 2 - 0.1
    logp = old + scale * torch.randn(B, L, generator=gen, dtype=dtype)
    lengths = torch.tensor([9, 3, 7, 1, 5, 8])
    mask = torch.arange(L).unsqueeze(0) < lengths.unsqueeze(1)  # right-padded completions, as TRL batches them
    adv = torch.randn(B, generator=gen, dtype=dtype)
    return logp, old, adv, mask


def _compare(trl_fn, ours_fn, logp):
    a = logp.clone().requires_grad_(True)
    b = logp.clone().requires_grad_(True)
    la, lb = trl_fn(a), ours_fn(b)
    la.backward()
    lb.backward()
    assert lb.item() == pytest.approx(la.item(), abs=1e-6, rel=1e-6)
    torch.testing.assert_close(b.grad, a.grad, atol=1e-6, rtol=1e-6)


# ---------------------------------------------------------------------------------------------------------- losses
AGG_FOR = {"grpo": ("seq-mean-token-mean", None), "bnpo": ("token-mean", None), "dapo": ("token-mean", None),
           "dr_grpo": ("seq-mean-token-sum-norm", 16)}  # fmt: skip


@pytest.mark.parametrize("loss_type", list(AGG_FOR))
@pytest.mark.parametrize("seed", [0, 1])
def test_clip_losses_match_trl(loss_type, seed):
    logp, old, adv, mask = _inputs(seed, scale=0.4)  # wide enough that both clip sides are hit
    mode, const = AGG_FOR[loss_type]
    _compare(
        lambda lp: trl_loss(loss_type, lp, old, adv, mask, max_completion_length=16),
        lambda lp: losses.ppo_clip(lp, old, adv, mask, 0.2, 0.28, agg=mode, agg_constant=const)[0],
        logp,
    )


def test_clip_loss_with_per_token_advantages_matches_trl():
    logp, old, _, mask = _inputs(2)
    adv_tok = torch.randn(B, L, generator=torch.Generator().manual_seed(3), dtype=logp.dtype)
    _compare(lambda lp: trl_loss("grpo", lp, old, adv_tok, mask),
             lambda lp: losses.ppo_clip(lp, old, adv_tok, mask, agg="seq-mean-token-mean")[0], logp)  # fmt: skip


def test_kl_in_loss_matches_trl_beta():
    logp, old, adv, mask = _inputs(4)
    ref = old + 0.2 * torch.randn(B, L, generator=torch.Generator().manual_seed(5), dtype=logp.dtype)
    beta = 0.04

    def ours(lp):  # the learner's composition: policy loss + beta * agg(k3 KL), same aggregation
        loss, _ = losses.ppo_clip(lp, old, adv, mask, agg="token-mean")
        return loss + beta * losses.agg(losses.kl(lp, ref, "k3"), mask, "token-mean")

    _compare(lambda lp: trl_loss("dapo", lp, old, adv, mask, beta=beta, ref=ref), ours, logp)


def test_cispo_matches_trl():
    logp, old, adv, mask = _inputs(6, scale=1.0)  # some ratios above the cap
    _compare(lambda lp: trl_loss("cispo", lp, old, adv, mask, eps_high=2.0),
             lambda lp: losses.cispo(lp, old, adv, mask, clip_low=None, clip_high=1.0, agg="token-mean")[0], logp)  # fmt: skip


@pytest.mark.parametrize("seed", [7, 8])
def test_gspo_matches_trl_sequence_level(seed):
    logp, old, adv, mask = _inputs(seed, scale=1e-3)  # sequence ratios straddle 1 +- 4e-4
    _compare(
        lambda lp: trl_loss("grpo", lp, old, adv, mask, eps_low=3e-4, eps_high=4e-4, level="sequence"),
        lambda lp: losses.gspo(lp, old, adv, mask, clip_low=3e-4, clip_high=4e-4)[0],
        logp,
    )


def test_top_entropy_mask_and_is_ratio_match_trl():
    logp, old, adv, mask = _inputs(9)
    gen = torch.Generator().manual_seed(10)
    entropies = torch.rand(B, L, generator=gen, dtype=torch.float32) * 3
    sampling = old + 0.3 * torch.randn(B, L, generator=gen, dtype=logp.dtype)
    is_ratio = losses.tis_weight(old, sampling, cap=2.0, mask=mask)
    # TRL's own high-entropy mask (quantile 1 - q) equals ours (top q)
    fake = types.SimpleNamespace(accelerator=_Accelerator())
    trl_mask = GRPOTrainer.get_high_entropy_mask(fake, entropies, mask.long(), 1 - 0.2)
    ours_mask = losses.top_entropy_mask(entropies, mask, top_q=0.2)
    assert torch.equal(trl_mask, ours_mask)
    _compare(
        lambda lp: trl_loss("bnpo", lp, old, adv, mask, top_entropy_quantile=0.2, entropies=entropies, is_ratio=is_ratio),
        lambda lp: losses.ppo_clip(lp, old, adv, mask, agg="token-mean", token_weights=ours_mask.to(lp.dtype),
                                   behaviour_weight=is_ratio)[0],
        logp,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------------------ advantages
def _trl_advantage_block() -> str:
    src = inspect.getsource(GRPOTrainer._generate_and_score_completions)
    start = re.search(r'^[ \t]*if self\.multi_objective_aggregation == "sum_then_normalize":', src, re.M)
    end_marker = "advantages = torch.nan_to_num(advantages, nan=0.0)"
    if start is None or end_marker not in src[start.start() :]:
        pytest.fail("TRL's advantage block was not found in this TRL version: update the extraction markers")
    end = src.index(end_marker, start.start()) + len(end_marker)
    return textwrap.dedent(src[start.start() : end])


def trl_advantages(rewards, num_generations, scale_rewards):
    """Execute TRL's own advantage code on ``rewards [B]`` (contiguous groups of ``num_generations``)."""
    rewards_per_func = rewards.unsqueeze(1)  # [B, 1]: one reward function
    fake = types.SimpleNamespace(multi_objective_aggregation="sum_then_normalize", scale_rewards=scale_rewards,
                                 reward_weights=torch.ones(1, dtype=rewards.dtype))  # fmt: skip
    scope = {"self": fake, "rewards_per_func": rewards_per_func, "device": "cpu", "num_generations": num_generations,
             "unscorable_mask": torch.isnan(rewards_per_func).all(dim=1)}  # fmt: skip
    exec(_trl_advantage_block(), {"torch": torch, "nanstd": nanstd}, scope)  # noqa: S102
    return scope["advantages"]


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_group_advantages_match_trl(scale):
    G = 4
    gen = torch.Generator().manual_seed(11)
    rewards = torch.randint(0, 3, (5 * G,), generator=gen).double() / 2
    rewards[:G] = 1.0  # one zero-std group
    gids = torch.arange(5 * G) // G
    want = trl_advantages(rewards, G, scale)
    name_kw = {"group": ("grpo", {}), "batch": ("grpo", {"scale": "batch"}), "none": ("dr_grpo", {})}[scale]
    got = advantages.get(name_kw[0])(rewards, gids, eps=1e-4, **name_kw[1])  # TRL adds 1e-4 to the std
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    perm = torch.randperm(rewards.numel(), generator=gen)  # our group ids may come in any order
    torch.testing.assert_close(advantages.get(name_kw[0])(rewards[perm], gids[perm], eps=1e-4, **name_kw[1]),
                               want[perm], atol=1e-6, rtol=1e-6)  # fmt: skip
