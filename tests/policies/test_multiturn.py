"""Multi-turn visual episodes through the tiny VLM: every turn's images stay aligned with their pad tokens, only model
tokens are trained, recompute equals sampling, each image is processed once per episode, history windows give each
turn a row holding exactly the context it was sampled on, and a full context ends the episode as truncated.

References are independent of the code under test: the windowed prompt is compared with the chat template rendered
from scratch (as text), the trained tokens with the generated ones, advantages with the formulas applied by hand."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from mmrl.algos import advantages, estimate
from mmrl.config import load_config
from mmrl.policies.base import SamplingParams
from mmrl.policies.vlm.chat import HISTORY_PLACEHOLDER, IMAGE_PAD
from mmrl.rollout.collector import Collector
from mmrl.rollout.pool import EnvPool

PARAMS = SamplingParams(temperature=1.0, max_new_tokens=5)


class TwoImageTurns(gym.Env):
    """``turns`` turns; each observation is a short text and two new 56x56 images whose colours name the seed and the
    turn; the reward of turn k is k + 1 when the action is non-empty (so per-turn rewards differ)."""

    observation_space = gym.spaces.Dict({"text": gym.spaces.Text(64), "images": gym.spaces.Sequence(
        gym.spaces.Box(0, 255, (56, 56, 3), np.uint8), stack=False)})  # fmt: skip
    action_space = gym.spaces.Text(64)

    def __init__(self, turns: int = 3) -> None:
        self.turns = turns

    def _obs(self):
        images = tuple(np.full((56, 56, 3), (40 * self.t + 17 * j + self.seed_) % 256, np.uint8) for j in range(2))
        return {"text": f"Turn {self.t}: which image is brighter?", "images": images}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.seed_, self.t = int(seed or 0), 0
        return self._obs(), {}

    def step(self, action):
        reward = float(self.t + 1) if action else 0.0
        self.t += 1
        done = self.t >= self.turns
        return (self._obs() if not done else {"text": "", "images": ()}), reward, done, False, {"success": done}


@pytest.fixture
def policy(tiny_policy):
    """The session's tiny policy with the multi-turn options reset after each test."""
    yield tiny_policy
    tiny_policy.history_images = tiny_policy.max_context_tokens = None


@pytest.fixture
def counted(policy, monkeypatch):
    """Number of image-processor calls."""
    calls = []
    real = policy.encoder.process_image
    monkeypatch.setattr(policy.encoder, "process_image", lambda image: calls.append(1) or real(image))
    return calls


def play(policy, seeds, group_size=1, turns=3, max_steps=None):
    collector = Collector(policy, EnvPool(lambda: TwoImageTurns(turns), num_envs=2), max_steps)
    trajs = collector.episodes(seeds, group_size, PARAMS)
    collector.close()
    return trajs, collector.stats


def check_recompute_and_mask(policy, trajs):
    """Recomputed log-probs equal the behaviour ones on the trained positions, and the trained positions hold exactly
    the generated tokens of every turn, in order (no env token is trained)."""
    batch = policy.collate(trajs)
    with torch.no_grad():
        logp, mask, _ = policy.log_prob(batch)
    m = batch.mask.bool()
    assert torch.allclose(logp[m], batch.old_logp[m], atol=1e-4), (logp[m] - batch.old_logp[m]).abs().max()
    ids = batch.model_inputs["input_ids"][:, 1:]  # the token each log-prob position predicts
    rows = batch.episode_ids.tolist() if batch.episode_ids is not None else list(range(len(trajs)))
    trained: dict[int, list[int]] = {}
    for b, e in enumerate(rows):
        trained.setdefault(e, []).extend(ids[b][m[b]].tolist())
    for e, traj in enumerate(trajs):
        assert trained[e] == [t for s in traj.steps for t in s.record.response_ids]
    return batch


def test_three_turns_of_two_images_recompute_exactly_and_train_only_model_tokens(policy):
    trajs, stats = play(policy, [5, 9], group_size=2)
    assert len(trajs) == 4 and all(len(t) == 3 for t in trajs)
    batch = check_recompute_and_mask(policy, trajs)
    assert batch.episode_ids is None and len(batch) == 4  # one row per episode: turns appended
    for b in range(len(trajs)):  # every turn's images in the row, aligned with their pad runs
        vision = batch.model_inputs["vision"][b]
        assert len(vision) == 6
        pads = int((batch.model_inputs["input_ids"][b] == policy.encoder.image_pad_id).sum())
        assert pads == sum(policy.encoder.num_image_tokens(v) for v in vision)
        # each turn's reward on its last generated token, the turn numbered on its tokens
        ends = [int(p) for p in batch.step_rewards[b].nonzero().flatten()]
        assert batch.step_rewards[b][ends].tolist() == [1.0, 2.0, 3.0]
        assert [int(batch.step_ids[b][p]) for p in ends] == [0, 1, 2]


def test_each_image_is_processed_once_per_episode(policy, counted):
    trajs, _ = play(policy, [3], turns=5)
    assert len(trajs[0]) == 5 and len(counted) == 10  # 5 turns x 2 images, whatever the history length
    counted.clear()
    policy.history_images = 1
    trajs, _ = play(policy, [3], turns=5)
    assert len(counted) == 10  # windowing drops images from the context; it never processes one again


def windowed_text(policy, traj, k: int, window: int) -> str:
    """Turn ``k``'s prompt written from scratch: the chat template over the episode's messages so far, images outside
    the last ``window`` replaced by the placeholder, each image expanded to its pad run."""
    messages, n_images = [], 2 * (k + 1)
    for j, step in enumerate(traj.steps[: k + 1]):
        parts = []
        for i in range(2):
            index = 2 * j + i
            keep = index >= n_images - max(window, 2)  # the turn answered keeps its images
            parts.append({"type": "image"} if keep else {"type": "text", "text": HISTORY_PLACEHOLDER})
        messages.append({"role": "user", "content": parts + [{"type": "text", "text": step.observation["text"]}]})
        if j < k:
            body = step.record.response_ids
            closed = body and body[-1] in policy.eos_ids
            content = policy.tokenizer.decode(body[:-1] if closed else body, skip_special_tokens=False)
            messages.append({"role": "assistant", "content": content})
    text = policy.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    vision = traj.steps[k].record.vision
    parts = text.split(IMAGE_PAD)
    assert len(parts) - 1 == len(vision)
    return parts[0] + "".join(IMAGE_PAD * policy.encoder.num_image_tokens(v) + p for v, p in zip(vision, parts[1:]))


@pytest.mark.parametrize("window", [1, 3])
def test_a_history_window_gives_each_turn_the_context_it_was_sampled_on(policy, window):
    policy.history_images = window
    trajs, _ = play(policy, [7], group_size=2)
    batch = check_recompute_and_mask(policy, trajs)
    assert len(batch) == 6 and batch.episode_ids.tolist() == [0, 0, 0, 1, 1, 1]  # a row per turn
    for b, (e, k) in enumerate([(e, k) for e in range(2) for k in range(3)]):
        record = trajs[e].steps[k].record
        assert record.full_context and len(record.vision) == (2 if k == 0 else max(window, 2))
        row = batch.model_inputs["input_ids"][b][batch.model_inputs["attention_mask"][b].bool()].tolist()
        prompt = row[: len(record.prompt_ids)]
        assert prompt == record.prompt_ids and row[len(prompt) :] == record.response_ids
        decoded = policy.tokenizer.decode(prompt, skip_special_tokens=False)
        assert decoded == windowed_text(policy, trajs[e], k, window)
        assert decoded.count(HISTORY_PLACEHOLDER) == max(0, 2 * k - max(window - 2, 0))
        pads = prompt.count(policy.encoder.image_pad_id)
        assert pads == sum(policy.encoder.num_image_tokens(v) for v in record.vision)


def test_a_full_context_ends_the_episode_as_truncated(policy):
    trajs, _ = play(policy, [4])
    full = len(policy.collate(trajs).model_inputs["input_ids"][0])  # the whole 3-turn episode's tokens
    first_two = sum(len(s.record.prompt_ids) + len(s.record.response_ids) for s in trajs[0].steps[:2])
    policy.max_context_tokens = first_two + 40 + PARAMS.max_new_tokens  # turn 3's prompt cannot fit
    assert policy.max_context_tokens < full + PARAMS.max_new_tokens
    trajs, stats = play(policy, [4, 4])
    assert stats.context_truncations == 2 and stats.infra_failures == 0
    for t in trajs:
        assert len(t) == 2 and t.steps[-1].truncated and not t.steps[-1].terminated and t.ended
        assert t.final_observation["text"].startswith("Turn 2")
    check_recompute_and_mask(policy, trajs)
    policy.history_images = 1  # with a window, and a budget not even the first turn fits in
    policy.max_context_tokens = len(trajs[0].steps[0].record.prompt_ids) + PARAMS.max_new_tokens - 1
    trajs, stats = play(policy, [4])
    assert stats.context_truncations == 1 and len(trajs) == 0  # nothing to train on: counted, left out


def test_turn_rows_get_their_episodes_advantages(policy):
    """GRPO on turn rows = the group-normalised episode return on every turn of the episode (computed by hand), and
    token-level estimators see an episode's turns as one sequence."""
    policy.history_images = 1
    trajs, _ = play(policy, [1, 2], group_size=3)
    batch = policy.collate(trajs)
    returns = np.array([t.reward for t in trajs]).reshape(2, 3)
    returns[0, 0] -= 1.0  # make the groups unequal: rewrite one episode's last reward by hand
    trajs[0].steps[-1].reward -= 1.0
    batch = policy.collate(trajs)
    x = estimate.AdvantageInputs(batch.rewards, batch.step_rewards, batch.mask, batch.group_ids,
                                   steps=batch.step_ids, anchors=batch.anchor_keys)  # fmt: skip
    packed, unpack = estimate.pack_episodes(x, batch.episode_ids)
    adv = unpack(estimate.ESTIMATE["grpo"](packed)[0])  # [rows]
    expected = (returns - returns.mean(1, keepdims=True)) / (returns.std(1, ddof=1, keepdims=True) + 1e-6)
    assert torch.allclose(adv, torch.tensor(np.repeat(expected.reshape(-1), 3), dtype=adv.dtype), atol=1e-5)
    # reinforce_pp (gamma 1): each token's return-to-go is the rewards of its own and later turns of the episode
    adv_tok = unpack(estimate.ESTIMATE["reinforce_pp"](packed)[0])  # [rows, L]
    togo = [r for t in trajs for r in np.cumsum([s.reward for s in t.steps][::-1])[::-1]]
    raw = torch.cat([torch.full((len(s.record.response_ids),), float(g))
                     for g, s in zip(togo, [s for t in trajs for s in t.steps])])  # fmt: skip
    whitened = (raw - raw.mean()) / (raw.std() + 1e-8)
    assert torch.allclose(adv_tok[batch.mask.bool()], whitened, atol=1e-4)


def test_gigpo_on_turns_matches_the_estimator_called_on_flat_steps(policy):
    """The trainer's step path (turn ids and anchors from collate) equals ``advantages.gigpo`` called by hand on the
    flat step layout, each step's advantage on every token of that turn; with and without a history window."""
    for window in (None, 1):
        policy.history_images = window
        trajs, _ = play(policy, [6, 6], group_size=2)  # two groups of one seed: turn-0 anchors repeat
        batch = policy.collate(trajs)
        x = estimate.AdvantageInputs(batch.rewards, batch.step_rewards, batch.mask, batch.group_ids,
                                       steps=batch.step_ids, anchors=batch.anchor_keys)  # fmt: skip
        if batch.episode_ids is not None:
            x, unpack = estimate.pack_episodes(x, batch.episode_ids)
        adv = estimate.ESTIMATE["gigpo"](x)[0]
        if batch.episode_ids is not None:
            adv = unpack(adv)
        steps = [(e, k, s) for e, t in enumerate(trajs) for k, s in enumerate(t.steps)]
        keys = [(s.observation["text"], tuple(int(im[0, 0, 0]) for im in s.observation["images"])) for _, _, s in steps]
        flat = advantages.gigpo(torch.tensor([t.reward for t in trajs]), torch.tensor([t.group_id for t in trajs]),
                                torch.tensor([s.reward for _, _, s in steps]), keys,
                                torch.tensor([e for e, _, _ in steps]))  # fmt: skip
        expected = torch.cat([torch.full((len(s.record.response_ids),), float(a)) for (_, _, s), a in zip(steps, flat)])
        assert torch.allclose(adv[batch.mask.bool()], expected, atol=1e-5)


@pytest.mark.parametrize("estimator", ["gigpo", "step_episode", "grpo"])
def test_multi_turn_rl_steps_through_the_trainer(tiny_model_path, tmp_path, estimator):
    """A multi-turn visual env (a Gymnasium id) trained by the one Trainer with turn rows (history window 1) and a
    context budget: the step runs, its advantages are finite, the truncations are logged."""
    from mmrl.trainer.loop import Trainer

    if "MMRLTwoImageTurns-v0" not in gym.registry:
        gym.register("MMRLTwoImageTurns-v0", entry_point=TwoImageTurns)
    root = Path(__file__).resolve().parents[2]
    cfg = load_config(root / "configs/quickstart.yaml", [
        f"model.path={tiny_model_path}", "model.build_tiny=false", f"train.output_dir={tmp_path}", "train.steps=1",
        "warmup.steps=0", "env.id=MMRLTwoImageTurns-v0", "env.kwargs={}", "env.eval_kwargs={}", "rewards={}",
        "env.max_turns=null", f"algo.advantage={estimator}", "model.history_images=1", "model.max_context_tokens=400",
        "algo.prompts_per_step=1", "algo.group_size=2", "algo.minibatch_size=6", "rollout.batch_size=2",
        "rollout.max_new_tokens=4", "train.eval_size=2", "train.eval_every=0",
    ])  # fmt: skip
    trainer = Trainer(cfg, show_progress=False)
    stats = trainer.train_step()
    assert stats["context_truncations"] >= 0 and np.isfinite(stats["loss"])
    trainer.close()


class SolvedTurns(TwoImageTurns):
    """TwoImageTurns whose infos carry the next turn's reference completion (a multi-turn warm-up target)."""

    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed, options=options)
        return obs, {**info, "solution": "<answer>left 0</answer>"}

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return obs, reward, terminated, truncated, {**info, "solution": f"<answer>left {self.t}</answer>"}


@pytest.mark.parametrize("window", [None, 1])
def test_a_multi_turn_warm_up_trains_every_turns_target_and_nothing_else(policy, window):
    """warmup.turns: the episode is played on its targets; the trained tokens are exactly each turn's target + end of
    turn, in order (one row, or a row per turn on its windowed context)."""
    from mmrl.policies.vlm.warmup import END_OF_TURN, episode_rows

    policy.history_images = window
    eos = policy.tokenizer.convert_tokens_to_ids(END_OF_TURN)
    rows = episode_rows(SolvedTurns(3), policy, 5, "solution", np.random.default_rng(0), 3, eos)
    assert len(rows) == (1 if window is None else 3)
    trained = [t for ids, mask, _ in rows for t, m in zip(ids, mask) if m]
    expected = [t for k in range(3) for t in policy.tokenizer(f"<answer>left {k}</answer>", add_special_tokens=False)[
        "input_ids"] + [eos]]  # fmt: skip
    assert trained == expected
    for ids, _, vision in rows:  # every image pad run backed by its image
        assert ids.count(policy.encoder.image_pad_id) == sum(policy.encoder.num_image_tokens(v) for v in vision)
    assert len(episode_rows(SolvedTurns(3), policy, 5, "solution", np.random.default_rng(0), 1, eos)) == 1
