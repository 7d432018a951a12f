"""Dynamic sampling, overlong shaping and selective sample replay."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from mmrl.algos import filters


def test_dynamic_sampling_mask():
    # groups: 0 -> [1, 1] (all equal, drop), 1 -> [0, 1] (keep), 5 -> [0.5] singleton (drop), 3 -> [2, 2, 3] (keep)
    r = torch.tensor([1.0, 0.0, 2.0, 1.0, 0.5, 2.0, 1.0, 3.0])
    g = torch.tensor([0, 1, 3, 1, 5, 3, 0, 3])
    keep = filters.dynamic_sampling_mask(r, g)
    assert keep.tolist() == [False, True, True, True, False, True, False, True]
    assert filters.dynamic_sampling_mask(r, g, tol=1.5).tolist() == [False] * 8


def _batches(specs):
    """A sample function over fixed batches; each payload carries (batch index, sample index)."""
    it = iter(specs)

    def sample_fn():
        k, (rewards, gids) = next(it)
        n = len(rewards)
        payload = {"ids": torch.arange(n) + 100 * k, "names": [f"b{k}s{i}" for i in range(n)]}
        return torch.tensor(rewards), torch.tensor(gids), payload

    return sample_fn, it


def test_dynamic_sampler_accumulates_trims_and_remaps():
    specs = enumerate([
        ([1.0, 1.0, 0.0, 1.0], [0, 0, 1, 1]),  # keeps group 1 (samples 2, 3)
        ([0.0, 0.0, 0.0, 0.0], [0, 0, 1, 1]),  # nothing
        ([1.0, 0.0, 0.0, 1.0, 1.0, 0.0], [4, 4, 2, 2, 9, 9]),  # three kept groups, only two needed: 4 then 2
        ([1.0, 0.0], [0, 0]),  # never drawn
    ])  # fmt: skip
    fn, _ = _batches(specs)
    out = filters.DynamicSampler(fn, target_groups=3, max_batches=10)()
    assert out.full and out.num_batches == 3 and out.groups_kept == 3 and out.groups_seen == 2 + 2 + 3
    assert out.rewards.tolist() == [0.0, 1.0, 1.0, 0.0, 0.0, 1.0]
    assert out.group_ids.tolist() == [0, 0, 1, 1, 2, 2]
    assert [p["names"] for p in out.payloads] == [["b0s2", "b0s3"], ["b2s0", "b2s1", "b2s2", "b2s3"]]
    assert out.payloads[1]["ids"].tolist() == [200, 201, 202, 203]
    assert [i.tolist() for i in out.indices] == [[2, 3], [0, 1, 2, 3]]
    assert out.keep_rate == pytest.approx(3 / 7)


def test_dynamic_sampler_bounded_retries(caplog):
    fn, _ = _batches(enumerate([([1.0, 1.0], [0, 0])] * 5))
    with caplog.at_level(logging.WARNING):
        out = filters.DynamicSampler(fn, target_groups=2, max_batches=3)()
    assert not out.full and out.num_batches == 3 and out.groups_kept == 0 and out.rewards.numel() == 0
    assert "dynamic sampling" in caplog.text


def test_overlong_penalty():
    # max 20, cache 4 -> expected 16: len 16 -> 0; 18 -> (16 - 18) / 4 = -0.5; 20 -> -1; 25 -> -1 (x penalty 0.5)
    lengths = torch.tensor([3, 16, 18, 20, 25])
    torch.testing.assert_close(filters.overlong_penalty(lengths, 20, 4), torch.tensor([0.0, 0.0, -0.5, -1.0, -1.0]))
    torch.testing.assert_close(
        filters.overlong_penalty(lengths, 20, 4, 0.5), torch.tensor([0.0, 0.0, -0.25, -0.5, -0.5])
    )
    torch.testing.assert_close(filters.overlong_penalty(lengths, 20, 0), torch.tensor([0.0, 0.0, 0.0, 0.0, -1.0]))


def test_selective_replay_buffer():
    buf = filters.SelectiveReplayBuffer(capacity=3, threshold=0.1, max_zero_frac=0.5, seed=0)
    # batch 1: group 0 informative, group 1 zero: zero_frac 0.5 is not > 0.5 -> no replay; stores |adv| > 0.1 only
    items, adv, stats = buf.process(
        ["a", "b", "c", "d"], torch.tensor([1.0, -0.05, 0.0, 0.0]), torch.tensor([0, 0, 1, 1])
    )
    assert items == ["a", "b", "c", "d"] and stats["ssr/replayed"] == 0.0 and len(buf) == 1
    assert stats["ssr/zero_group_frac"] == 0.5
    # batch 2: groups 7 and 8 zero, group 9 informative -> replace the 4 zero-group samples by replayed ones ("a")
    items, adv, stats = buf.process(
        ["e", "f", "g", "h", "i", "j"], torch.tensor([0.0, 0.0, 0.0, 0.0, 2.0, -2.0]), torch.tensor([7, 7, 8, 8, 9, 9])
    )
    assert items == ["i", "j", "a", "a", "a", "a"]  # only one stored sample: drawn with replacement
    assert adv.tolist() == [2.0, -2.0, 1.0, 1.0, 1.0, 1.0]
    assert stats["ssr/replayed"] == 4.0 and stats["ssr/zero_group_frac"] == pytest.approx(2 / 3)
    assert list(buf.items) == ["a", "i", "j"]  # FIFO capacity 3


def test_selective_replay_sampling_is_seeded_and_prioritised():
    def draws(seed):
        buf = filters.SelectiveReplayBuffer(capacity=10, seed=seed)
        buf.add(["lo", "hi"], torch.tensor([0.5, 4.5]))
        return [buf.sample(1)[0][0] for _ in range(2000)]

    a, b = draws(1), draws(1)
    assert a == b  # deterministic with a seed
    frac_hi = np.mean([x == "hi" for x in a])
    assert abs(frac_hi - 0.9) < 0.03  # P(hi) = 4.5 / (0.5 + 4.5) with alpha = 1
