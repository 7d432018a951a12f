"""Token VLAs (OpenVLA-style actions as VLM tokens): the bins against edges laid out here, the bin tokens against the
tiny tokenizer's own special tokens, sampled tokens and behaviour log-probs against a ``log_softmax`` over the bin
columns of the model's raw logits (and the sampler's draws against that distribution), the learner's recompute, the
critic's bootstrap value against its value at the same prompt inside a row, behaviour cloning against a cross-entropy
computed here, and GRPO / PPO + GAE steps through the real Trainer on a toy image + vector env."""

from __future__ import annotations

import json
import string

import gymnasium as gym
import numpy as np
import pytest
import torch

from mmrl.config import ConfigError, load_config
from mmrl.models.tiny import SPECIAL_TOKENS
from mmrl.policies import base
from mmrl.policies.base import SamplingParams
from mmrl.policies.token_vla import ActionBins, TokenVLAPolicy, observation_prompt
from mmrl.policies.vlm.chat import VISION_SPECIAL_TOKENS
from mmrl.trainer.progress import Progress
from mmrl.types import Step, Trajectory

FAMILY = base.get("token_vla")
TOY_ID = "MMRLTokenVLAToy-v0"


class ToyReach(gym.Env):
    """Reach a target ``t`` in ``[-1, 1]^2`` drawn from the seed: the image's red and green channels and the proprio
    vector show it; reward ``-|a - t|_1`` per step; success (terminated) within 0.25, else truncated after 3 steps."""

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Dict({
            "rgb": gym.spaces.Box(0, 255, (28, 28, 3), np.uint8),
            "proprio": gym.spaces.Box(-np.inf, np.inf, (2,), np.float32),
            "instruction": gym.spaces.Text(64, charset=string.printable),
        })  # fmt: skip
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.target, self.t = np.zeros(2, np.float32), 0

    def _obs(self) -> dict:
        rgb = np.zeros((28, 28, 3), np.uint8)
        rgb[..., :2] = np.round((self.target + 1) * 127).astype(np.uint8)
        return {"rgb": rgb, "proprio": self.target.copy(), "instruction": "Reach the target."}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.target, self.t = self.np_random.uniform(-1, 1, 2).astype(np.float32), 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        err = float(np.abs(np.asarray(action) - self.target).sum())
        success = err < 0.25
        return self._obs(), -err, success, self.t >= 3 and not success, {"success": success}


if TOY_ID not in gym.registry:
    gym.register(TOY_ID, entry_point=ToyReach)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models on a busy 2-core machine: one torch thread is fastest


def _cfg(model_path, *overrides: str):
    return load_config(None, ["policy.kind=token_vla", f"model.path={model_path}", "model.build_tiny=false",
                              "model.device=cpu", *overrides])  # fmt: skip


def _policy(model_path, action_space, n_bins: int = 256, **kwargs) -> TokenVLAPolicy:
    cfg = _cfg(model_path, f"policy.kwargs.n_bins={n_bins}", *(f"policy.kwargs.{k}={v}" for k, v in kwargs.items()))
    return FAMILY.build(cfg, ToyReach().observation_space, action_space)


def _obs(seed: int) -> dict:
    env = ToyReach()
    return env.reset(seed=seed)[0]


def _bin_logp(policy: TokenVLAPolicy, batch) -> torch.Tensor:
    """``[B, L]`` log-probs of each next token among the bin tokens alone, from the model's raw logits: the bin columns
    selected and normalised here (not the policy's masking), at the policy's temperature."""
    with torch.no_grad():
        logits = policy.model(**policy.vision_kwargs(batch.model_inputs), use_cache=False).logits[:, :-1].float()
    logp_bins = torch.log_softmax(logits[..., policy.bin_ids] / policy.temperature, dim=-1)  # [B, L, n_bins]
    targets = policy.token_bin[batch.model_inputs["input_ids"][:, 1:]]  # [B, L] bin of each next token, -1 if none
    out = logp_bins.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return torch.where(targets >= 0, out, torch.zeros(()))


# ---------------------------------------------------------------------------------------------------------- bins
def test_bins_round_trip_within_half_a_bin_and_clip_out_of_range_values():
    rng = np.random.default_rng(0)
    low, high, n = np.array([-1.0, 0.0, -0.05]), np.array([1.0, 10.0, 0.3]), 256
    bins = ActionBins(low, high, n)
    a = rng.uniform(low, high, size=(1000, 3))
    b = bins.to_bins(a)
    edges = [np.linspace(lo, hi, n + 1) for lo, hi in zip(low, high)]  # the bins' edges laid out independently
    expected = np.stack([np.clip(np.searchsorted(e, a[:, d], side="right") - 1, 0, n - 1)
                         for d, e in enumerate(edges)], 1)  # fmt: skip
    np.testing.assert_array_equal(b, expected)
    assert b.min() >= 0 and b.max() < n
    width = (high - low) / n
    assert (np.abs(bins.centres(b) - a) <= width / 2 + 1e-12).all()
    outside = np.array([low, high, low - 5, high + 5, [-np.inf, np.inf, 0.1]])
    np.testing.assert_array_equal(bins.to_bins(outside)[:4], [[0, 0, 0], [n - 1] * 3, [0, 0, 0], [n - 1] * 3])
    np.testing.assert_array_equal(bins.to_bins(outside)[4, :2], [0, n - 1])
    with pytest.raises(ValueError, match="finite"):
        ActionBins(np.array([0.0]), np.array([np.inf]), 4)


def test_bin_tokens_are_the_last_ordinary_tokens_one_to_one(tiny_model_path):
    policy = _policy(tiny_model_path, gym.spaces.Box(-1.0, 1.0, (2,)))
    tok = policy.tokenizer
    ids = policy.bin_ids.tolist()
    assert len(set(ids)) == 256 and ids == sorted(ids)
    names = set(tok.convert_ids_to_tokens(ids))
    assert not names & set(SPECIAL_TOKENS) and not names & set(VISION_SPECIAL_TOKENS)
    ordinary = [i for i, t in enumerate(tok.convert_ids_to_tokens(list(range(len(tok))))) if t not in SPECIAL_TOKENS]
    assert ids == ordinary[-256:]  # the vocabulary's last 256 ordinary tokens, as OpenVLA's
    # bin <-> token, and env action <-> tokens, one to one
    assert policy.token_bin[policy.bin_ids].tolist() == list(range(256))
    a = np.random.default_rng(1).uniform(-1, 1, (5, 2))
    tokens = policy.action_tokens(a)  # [5, 2]
    back = np.stack([policy.env_action(t) for t in tokens.tolist()])
    assert (np.abs(back - a) <= 1 / 256 + 1e-6).all()
    with pytest.raises(ConfigError, match="policy.kwargs.n_bins: 600 bins need 600 ordinary"):
        _policy(tiny_model_path, gym.spaces.Box(-1.0, 1.0, (2,)), n_bins=600)


@pytest.mark.parametrize(("space", "message"), [
    (gym.spaces.Box(-np.inf, np.inf, (2,)), "infinite"), (gym.spaces.Discrete(3), "Box"),
])  # fmt: skip
def test_unbinnable_action_spaces_and_bad_options_are_one_line_config_errors(tiny_model_path, space, message):
    with pytest.raises(ConfigError, match=f"policy.kind: token_vla .*{message}"):
        FAMILY.build(_cfg(tiny_model_path), ToyReach().observation_space, space)
    with pytest.raises(ConfigError, match="policy.kwargs.*n_bin"):
        FAMILY.build(_cfg(tiny_model_path, "policy.kwargs.n_bin=8"), ToyReach().observation_space, space)


def test_the_observation_prompt_holds_the_image_the_instruction_and_rounded_state():
    obs = {"rgb": np.zeros((4, 4, 3), np.uint8), "proprio": np.array([0.123, -0.001, 2.0]), "instruction": "Push."}
    p = observation_prompt(obs, instruction="unused", decimals=2)
    assert p["text"] == "Push.\nproprio: 0.12 0.00 2.00" and len(p["images"]) == 1
    assert observation_prompt(np.array([1.5]), "Balance.", 1) == {"text": "Balance.\nstate: 1.5", "images": ()}


# ---------------------------------------------------------------------------------------------------- generation
def test_sampled_tokens_are_bins_and_logps_are_the_restricted_softmax(tiny_model_path):
    """A chunk env ([2, 3] per step: 6 tokens): every token a bin, behaviour log-probs equal to the bin-column softmax
    of the raw logits, and the learner's recompute equal to both."""
    policy = _policy(tiny_model_path, gym.spaces.Box(-2.0, 2.0, (2, 3)))
    observations = [_obs(s) for s in (0, 1, 2, 0)]  # one repeated: encoded once, sampled twice
    actions = policy.act(observations, SamplingParams(temperature=1.0, top_k=5, max_new_tokens=1))
    bins = set(policy.bin_ids.tolist())
    for a in actions:
        assert len(a.record.response_ids) == 6 and set(a.record.response_ids) <= bins
        assert a.env_action.shape == (2, 3) and np.abs(a.env_action).max() <= 2.0
        np.testing.assert_allclose(a.env_action, policy.bins.centres(
            policy.token_bin[torch.tensor(a.record.response_ids)].numpy().reshape(2, 3)), rtol=1e-6)  # fmt: skip
        assert a.state is None  # no history: each step is a fresh prompt
    trajs = [Trajectory([Step(o, a.env_action, a.logp, a.record, terminated=True)], group_id=0)
             for o, a in zip(observations, actions)]  # fmt: skip
    batch = policy.collate(trajs)
    m = batch.mask.bool()
    assert m.sum(1).tolist() == [6] * 4
    expected = _bin_logp(policy, batch)[m].view(4, 6)
    behaviour = torch.tensor([a.record.response_logprobs for a in actions])
    torch.testing.assert_close(behaviour, expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.tensor([a.logp for a in actions]), expected.sum(1), atol=1e-4, rtol=0)
    with torch.no_grad():
        logp, mask, entropy = policy.log_prob(batch, with_entropy=True)
    torch.testing.assert_close(logp[m].view(4, 6), expected, atol=1e-4, rtol=0)
    assert bool((entropy[m] <= np.log(256) + 1e-4).all())  # the entropy of a 256-way distribution


def test_the_sampler_draws_from_the_restricted_distribution_and_greedy_takes_each_mode(tiny_model_path):
    """1000 one-token actions on one prompt at temperature 0.7, with top-k 2 and top-p 0.5 asked for (they must not
    apply): their histogram is the bin-column softmax at 0.7 within the noise of that many draws (total variation
    ~0.02; truncating to the top 2 bins or sampling at temperature 1 each gives ~0.15); greedy picks the argmax bin."""
    policy = _policy(tiny_model_path, gym.spaces.Box(-1.0, 1.0, (1,)), n_bins=16)
    with torch.no_grad():
        policy.model.get_output_embeddings().weight.mul_(5.0)  # a peaked distribution
    obs = _obs(3)
    actions = policy.act([obs] * 1000, SamplingParams(temperature=0.7, top_k=2, top_p=0.5))
    drawn = policy.token_bin[torch.tensor([a.record.response_ids[0] for a in actions])]
    batch = policy.collate([Trajectory([Step(obs, actions[0].env_action, 0.0, actions[0].record, terminated=True)])])
    with torch.no_grad():
        logits = policy.model(**policy.vision_kwargs(batch.model_inputs), use_cache=False).logits.float()
    pos = int(batch.mask[0].nonzero()[0])
    probs = torch.softmax(logits[0, pos, policy.bin_ids] / 0.7, -1)  # [16]
    assert 0.3 < float(probs.max()) < 0.95  # neither flat nor one-hot: truncation and temperature both show
    torch.testing.assert_close(torch.tensor([a.logp for a in actions[:50]]), probs.log()[drawn[:50]], atol=1e-4, rtol=0)
    freq = torch.bincount(drawn, minlength=16).float() / len(drawn)
    tv = 0.5 * float((freq - probs).abs().sum())
    assert tv < 0.08, tv
    [greedy] = policy.act([obs], SamplingParams(temperature=0.0))
    assert policy.token_bin[greedy.record.response_ids[0]] == int(probs.argmax())


# --------------------------------------------------------------------------------------------------- critic, BC
def test_collate_bootstraps_cut_episodes_with_the_value_of_their_final_prompt(tiny_model_path):
    """The final observation of a truncated episode is its first one: V(final) must equal the critic's value at the
    first row's last prompt token (where the first action token is drawn); terminated episodes are not bootstrapped."""
    policy = _policy(tiny_model_path, gym.spaces.Box(-1.0, 1.0, (2,)))
    critic = FAMILY.critic(_cfg(tiny_model_path), policy)
    torch.nn.init.normal_(critic.head.weight, std=0.5)  # a non-zero value head
    o0, o1 = _obs(0), _obs(1)
    a0, a1 = policy.act([o0, o1], SamplingParams())
    cut = Trajectory([Step(o0, a0.env_action, a0.logp, a0.record), Step(o1, a1.env_action, a1.logp, a1.record,
                                                                         truncated=True)], final_observation=o0)  # fmt: skip
    ended = Trajectory([Step(o1, a1.env_action, a1.logp, a1.record, terminated=True)], final_observation=o0)
    batch = policy.collate([cut, ended])
    assert batch.bootstrap_mask.tolist() == [0.0, 1.0, 0.0] and batch.episode_ids.tolist() == [0, 0, 1]
    with torch.no_grad():
        final = critic.final_value(batch)
        values = critic.value(batch)
    first_action = int(batch.mask[0].nonzero()[0])  # log-prob position of row 0's first action token
    assert final[0] == 0 and final[2] == 0
    torch.testing.assert_close(final[1], values[0, first_action], atol=1e-5, rtol=0)
    sub = batch.select([1])  # minibatches keep each row's final prompt
    with torch.no_grad():
        torch.testing.assert_close(critic.final_value(sub)[0], final[1], atol=1e-5, rtol=0)


def _write_demos(path, seeds) -> tuple[list[dict], np.ndarray]:
    observations = [_obs(s) for s in seeds]
    actions = np.stack([o["proprio"] for o in observations]).astype(np.float32)  # [N, 2] the expert reaches the target
    np.savez(path, **{"obs.rgb": np.stack([o["rgb"] for o in observations]),
                      "obs.proprio": np.stack([o["proprio"] for o in observations]), "actions": actions})  # fmt: skip
    return observations, actions


def test_behaviour_cloning_lowers_the_bin_cross_entropy_and_clones_the_demos(tiny_model_path, tmp_path):
    observations, actions = _write_demos(tmp_path / "demos.npz", range(4))
    cfg = _cfg(tiny_model_path, "policy.kwargs.n_bins=16", f"policy.kwargs.demos={tmp_path / 'demos.npz'}",
               "warmup.steps=60", "warmup.batch_size=4", "warmup.lr=3e-3", f"env.id={TOY_ID}")  # fmt: skip
    policy = FAMILY.build(cfg, ToyReach().observation_space, ToyReach().action_space)

    def cross_entropy() -> float:  # mean -log p(demo bin) over the action tokens, from the raw logits
        acts = policy.act(observations, SamplingParams(temperature=0.0))
        for a, target in zip(acts, policy.action_tokens(actions).tolist()):
            a.record.response_ids = target  # score the demonstrated tokens on the same prompts
        batch = policy.collate([Trajectory([Step(o, None, 0.0, a.record, terminated=True)])
                                for o, a in zip(observations, acts)])  # fmt: skip
        return float(-_bin_logp(policy, batch)[batch.mask.bool()].mean())

    before = cross_entropy()
    stats = FAMILY.warmup(cfg, policy, None, ToyReach, Progress(enabled=False))
    after = cross_entropy()
    assert after < before - 1.0, (before, after)  # from ~log(16) = 2.8
    assert abs(stats["warmup/bc_loss"] - after) < 0.5
    greedy = policy.act(observations, SamplingParams(temperature=0.0))
    expected = policy.bins.centres(policy.bins.to_bins(actions))
    np.testing.assert_allclose(np.stack([a.env_action for a in greedy]), expected, atol=1e-6)
    with pytest.raises(ConfigError, match="policy.kwargs.demos: no demonstration file"):
        FAMILY.warmup(_cfg(tiny_model_path, "policy.kwargs.demos=nowhere.npz"), policy, None, ToyReach,
                      Progress(enabled=False))  # fmt: skip


# ------------------------------------------------------------------------------------------------------- trainer
@pytest.mark.parametrize("algo", ["grpo", "gae"])
def test_one_trainer_step_with_bc_then_grpo_or_ppo_with_the_vlm_critic(tiny_model_path, tmp_path, algo):
    from mmrl.trainer.loop import Trainer

    _write_demos(tmp_path / "demos.npz", range(10, 14))
    rollout = ["algo.advantage=grpo", "rollout.horizon=0", "algo.prompts_per_step=1", "algo.group_size=2"]
    if algo == "gae":
        rollout = ["algo.advantage=gae", "rollout.horizon=2", "algo.gamma=0.99", "algo.lam=0.95"]
    cfg = _cfg(tiny_model_path, "policy.kwargs.n_bins=16", f"policy.kwargs.demos={tmp_path / 'demos.npz'}",
               f"env.id={TOY_ID}", "env.kwargs={}", "env.max_turns=null", "rewards={}", "warmup.steps=2",
               "warmup.batch_size=2", "rollout.batch_size=2", "algo.minibatch_size=4", "algo.epochs=1",
               "train.steps=1", "train.eval_size=2", "train.eval_every=0", "train.save_every=0",
               "train.rollouts_every=0", f"train.output_dir={tmp_path}", *rollout)  # fmt: skip
    trainer = Trainer(cfg, show_progress=False)
    summary = trainer.fit()
    assert summary["steps"] == 1
    rows = [json.loads(line) for line in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert np.isfinite(rows[0]["warmup/bc_loss"])
    [rl] = [r for r in rows if "approx_kl" in r]
    assert np.isfinite(rl["loss"]) and rl["nonfinite_updates"] == 0 and rl["env_steps"] >= 2
    if algo == "gae":
        assert np.isfinite(rl["value_loss"])
    # the final checkpoint loads back as the same token policy
    loaded = FAMILY.build(cfg, ToyReach().observation_space, ToyReach().action_space,
                          cfg.run_dir / "checkpoints" / "step_000001")  # fmt: skip
    assert isinstance(loaded, TokenVLAPolicy) and torch.equal(loaded.bin_ids, trainer.policy.bin_ids)
    for p, q in zip(loaded.parameters(), trainer.policy.parameters(), strict=True):
        assert torch.equal(p, q)
