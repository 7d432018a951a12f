"""The pi0-style VLA (``policy.kind: pi0``) on the offline tiny Qwen2.5-VL: the prefix features against the backbone run
here on a prompt written out from Qwen's chat template (no padding, no mask), their independence from the padding and
from the rest of the batch, recompute against rollout-time log-probs over prompts of different lengths, behaviour
cloning, gradients and one PPO step reaching both the VLM and the action expert, the frozen and last-k options, BC +
PPO + GAE through the real Trainer on a toy image env, save / load, and one-line errors for bad options."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from mmrl.algos.learner import Learner
from mmrl.config import ConfigError, load_config
from mmrl.policies import base
from mmrl.policies.base import SamplingParams
from mmrl.policies.flow import behaviour_clone
from mmrl.trainer.loop import Trainer
from mmrl.types import Batch, Step, Trajectory

INSTRUCTIONS = ("Reach.", "Reach the target shown by the red square in the picture, then hold it there.")
SIDE = 32  # toy image side (the tiny image processor resizes every image to 56 x 56: 4 image tokens)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models on a busy 2-core machine: one torch thread is fastest


def _image(g: float) -> np.ndarray:
    """A grey image with a red square whose column encodes ``g`` in [-1, 1]."""
    img = np.full((SIDE, SIDE, 3), 90, np.uint8)
    x = int(round((g + 1) / 2 * (SIDE - 8)))
    img[12:20, x : x + 8] = (230, 30, 30)
    return img


class Pi0ReachEnv(gym.Env):
    """Observation ``{rgb, proprio [0.5 step], instruction}`` (the instruction's length differs between episodes), the
    target ``g ~ U(-1, 1)`` shown only in the image; an action chunk ``[2, 1]`` (bounds +-1.5), reward ``-mean_i (a_i -
    g)^2``, success when both actions are within 0.3 of ``g``. Two steps (time limit)."""

    observation_space = gym.spaces.Dict({
        "rgb": gym.spaces.Box(0, 255, (SIDE, SIDE, 3), np.uint8),
        "proprio": gym.spaces.Box(-np.inf, np.inf, (1,), np.float32),
        "instruction": gym.spaces.Text(max_length=100, charset=frozenset(" ".join(INSTRUCTIONS))),
    })  # fmt: skip
    action_space = gym.spaces.Box(-1.5, 1.5, (2, 1), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.g, self.t = float(self.np_random.uniform(-1, 1)), 0
        self.text = INSTRUCTIONS[int(self.np_random.integers(2))]
        return self._obs(), {}

    def _obs(self):
        return {"rgb": _image(self.g), "proprio": np.array([0.5 * self.t], np.float32), "instruction": self.text}

    def step(self, action):
        err = np.asarray(action, np.float32).reshape(2) - self.g
        self.t += 1
        return self._obs(), -float(np.mean(err**2)), False, False, {"success": bool(np.abs(err).max() < 0.3)}


gym.register("MMRLPi0Reach-v0", entry_point=Pi0ReachEnv, max_episode_steps=2)


def _observations(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"rgb": _image(float(g)), "proprio": np.array([rng.normal()], np.float32), "instruction": INSTRUCTIONS[i % 2]}
            for i, g in enumerate(rng.uniform(-1, 1, n))]  # fmt: skip


def _cfg(model_path, *extra: str):
    return load_config(None, [
        "policy.kind=pi0", f"model.path={model_path}", "model.device=cpu", "policy.kwargs.chunk=2",
        "policy.kwargs.steps=3", "policy.kwargs.hidden=[32, 32]", "policy.kwargs.feature_dim=16",
        "policy.kwargs.encoder_hidden=[16]", "policy.kwargs.critic_hidden=[16]", "policy.kwargs.max_prompt_tokens=80",
        *extra,
    ])  # fmt: skip


def _policy(model_path, *extra: str):
    torch.manual_seed(0)
    cfg = _cfg(model_path, *extra)
    return base.build(cfg, Pi0ReachEnv.observation_space, Pi0ReachEnv.action_space), cfg


def _trajectories(policy, observations, steps: int = 2) -> list[Trajectory]:
    """One trajectory per observation, acted on in one batch per step (the env's next observation: the same one);
    the last trajectory one step shorter (collate pads it)."""
    trajs = [Trajectory([], group_id=i, final_observation=o) for i, o in enumerate(observations)]
    for t in range(steps):
        live = [i for i in range(len(observations)) if t < steps - (i == len(observations) - 1)]
        actions = policy.act([observations[i] for i in live], SamplingParams())
        for i, a in zip(live, actions):
            trajs[i].steps.append(Step(observations[i], a.env_action, a.logp, a.record, reward=0.1 * t))
    for traj in trajs:
        traj.steps[-1].truncated = True
    return trajs


# ------------------------------------------------------------------------------------------------------ the prefix
def test_prefix_features_are_the_backbone_on_the_template_prompt_alone(tiny_model_path):
    """The reference: Qwen's chat template written out here, one image's pads expanded by its grid (h w / 4), the
    backbone run on that prompt with no padding and no mask; its last token's state, projected and fused."""
    policy, _ = _policy(tiny_model_path)
    enc = policy.model.encoder
    observations = _observations(4)
    with torch.no_grad():
        feats = enc(enc.inputs(observations))  # [4, F], prompts of two lengths left-padded to 80
        for obs, got in zip(observations, feats):
            vision = enc.vlm.encoder.process_image(obs["rgb"])
            n_pads = int(vision.grid_thw.prod()) // 4
            text = ("<|im_start|>user\n<|vision_start|>" + "<|image_pad|>" * n_pads + "<|vision_end|>"
                    + obs["instruction"] + "<|im_end|>\n<|im_start|>assistant\n")  # fmt: skip
            ids = torch.tensor([enc.vlm.tokenizer(text, add_special_tokens=False)["input_ids"]])
            image_pad = enc.vlm.tokenizer.convert_tokens_to_ids("<|image_pad|>")
            out = enc.backbone(input_ids=ids, pixel_values=vision.pixel_values, image_grid_thw=vision.grid_thw[None],
                               mm_token_type_ids=(ids == image_pad).int())  # fmt: skip
            ref = enc.project(out.last_hidden_state[0, -1])
            ref = enc.fuse(torch.cat([ref, enc.proprio.state(torch.as_tensor(obs["proprio"]))]))
            torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("pooling", "proprio"), [("last", "mlp"), ("mean", "text"), ("mean", "none")])
def test_padding_and_the_batch_do_not_change_a_prompts_features(tiny_model_path, pooling, proprio):
    policy, _ = _policy(tiny_model_path, f"policy.kwargs.pooling={pooling}", f"policy.kwargs.proprio={proprio}",
                        "policy.kwargs.max_prompt_tokens=96")  # fmt: skip
    enc = policy.model.encoder
    observations = _observations(5)
    inputs = enc.inputs(observations)
    lengths = inputs["attention_mask"].sum(1)
    assert len(set(lengths.tolist())) > 1  # prompts of different lengths in one batch
    with torch.no_grad():
        together = enc(inputs)
        alone = torch.cat([enc(enc.inputs([o])) for o in observations])
        enc.max_prompt_tokens = 128  # 32 more padding columns on every row
        repadded = enc(enc.inputs(observations))
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(together, repadded, atol=1e-5, rtol=1e-5)
    if proprio == "text":  # the numbers are in the prompt
        assert "State: " in enc.prompt_text(observations[0])
        assert enc.prompt_text(observations[0]).endswith(f"{observations[0]['proprio'][0]:.2f}")


# ------------------------------------------------------------------------------------------- recompute and training
@pytest.mark.parametrize(("estimator", "granularity"), [("flow_noise", "action"), ("flow_sde", "chunk")])
def test_recompute_equals_the_rollout_logprobs(tiny_model_path, estimator, granularity):
    policy, _ = _policy(tiny_model_path, f"policy.kwargs.estimator={estimator}",
                        f"policy.kwargs.granularity={granularity}")  # fmt: skip
    trajs = _trajectories(policy, _observations(5))
    batch = policy.collate(trajs)
    with torch.no_grad():
        logp, mask, _ = policy.log_prob(batch)  # the collated layout: the short trajectory's padded step included
        view = policy.learner_view(batch)
        order = torch.randperm(view.mask.shape[0], generator=torch.Generator().manual_seed(0))
        shuffled = view.select(order)  # recomputed in another batch composition and order
        logp_view, _, _ = policy.log_prob(shuffled)
    torch.testing.assert_close(logp * mask, batch.old_logp * mask, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logp_view * shuffled.mask, shuffled.old_logp * shuffled.mask, atol=1e-5, rtol=1e-5)
    # and the step's behaviour log-prob is the one the action carried
    per_step = [s.logp for t in trajs for s in t.steps]
    assert sum(per_step) == pytest.approx(float((view.old_logp * view.mask).sum()), abs=1e-3)


def _ppo_batch(policy) -> Batch:
    view = policy.learner_view(policy.collate(_trajectories(policy, _observations(4))))
    view.advantages = torch.linspace(-1.0, 1.0, view.mask.shape[0])[:, None].expand_as(view.mask).contiguous()
    return view


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before: dict[str, torch.Tensor], module: torch.nn.Module, prefix: str = "") -> set[str]:
    return {k for k, v in module.state_dict().items() if k.startswith(prefix) and not torch.equal(v, before[k])}


def test_one_ppo_step_moves_the_vlm_prefix_and_the_expert(tiny_model_path):
    policy, cfg = _policy(tiny_model_path, "algo.lr=1e-3", "algo.epochs=1", "algo.minibatch_size=64")
    batch = _ppo_batch(policy)
    logp, _, _ = policy.log_prob(batch)
    logp.sum().backward()
    enc, expert = policy.model.encoder, policy.model.sampler.expert
    # gradients reach the vision tower, the first and last decoder layers, the projection and the expert
    text = enc.backbone.language_model
    reached = [enc.backbone.visual.patch_embed.proj.weight, text.layers[0].mlp.up_proj.weight,
               text.layers[-1].self_attn.q_proj.weight, enc.project.weight, expert.out.weight]  # fmt: skip
    for p in reached:
        assert p.grad is not None and p.grad.abs().sum() > 0
    policy.model.zero_grad(set_to_none=True)
    before = _snapshot(policy.model)
    stats = Learner(policy, cfg.algo).update(batch)
    assert stats["nonfinite_updates"] == 0
    moved = _changed(before, policy.model)
    assert any(k.startswith("encoder.backbone.visual.") for k in moved)
    assert any(k.startswith("encoder.backbone.language_model.layers.0.") for k in moved)
    assert any(k.startswith("sampler.expert.") for k in moved)


def test_behaviour_cloning_lowers_the_loss(tiny_model_path):
    """40 BC steps on 16 demonstrations lower the flow-matching loss, measured before and after with the same noise and
    times (a fixed generator, each demonstration 16 times). The prefix is frozen here to keep the steps cheap (measured:
    1.23 -> 0.71); BC through the whole VLM runs in the Trainer test below and reaches every weight (PPO test above)."""
    policy, _ = _policy(tiny_model_path, "policy.kwargs.vlm_train=none")
    observations = _observations(16, seed=1)
    targets = [float(np.argmax(o["rgb"][16, :, 1] < 60)) / (SIDE - 8) * 2 - 1 for o in observations]  # g off the image
    chunks = np.repeat(np.asarray(targets, np.float32)[:, None, None], 2, axis=1)  # [16, 2, 1]
    inputs = {k: v.repeat_interleave(16, 0) for k, v in policy.model.encoder.inputs(observations).items()}
    model_chunks = policy.model_chunks(chunks).repeat_interleave(16, 0)

    def held_loss() -> float:
        with torch.no_grad():
            return float(policy.bc_loss(inputs, model_chunks, torch.Generator().manual_seed(7)))

    before = held_loss()
    losses = behaviour_clone(policy, observations, chunks, steps=40, batch_size=16, lr=1e-2)
    assert all(np.isfinite(losses))
    assert held_loss() < 0.8 * before, (before, held_loss())


def test_frozen_prefix_keeps_the_vlm_and_last_k_trains_only_the_last_layers(tiny_model_path):
    policy, cfg = _policy(tiny_model_path, "policy.kwargs.vlm_train=none", "algo.lr=1e-3")
    enc = policy.model.encoder
    assert not any(p.requires_grad for p in enc.backbone.parameters())
    before = _snapshot(policy.model)
    observations = _observations(8)
    behaviour_clone(policy, observations, np.zeros((8, 2, 1), np.float32), steps=3, batch_size=8, lr=1e-2)
    Learner(policy, cfg.algo).update(_ppo_batch(policy))
    moved = _changed(before, policy.model)
    assert not any(k.startswith("encoder.backbone.") for k in moved)  # the VLM's weights are unchanged
    assert {"encoder.project.weight", "sampler.expert.out.weight"} <= moved

    policy, _ = _policy(tiny_model_path, "policy.kwargs.vlm_train=last", "policy.kwargs.vlm_last_k=2")
    text = policy.model.encoder.backbone.language_model
    trainable = {n for n, p in policy.model.encoder.backbone.named_parameters() if p.requires_grad}
    n_layers = len(text.layers)
    expected = {f"language_model.{n}" for n, _ in text.named_parameters()
                if n.startswith((f"layers.{n_layers - 2}.", f"layers.{n_layers - 1}.", "norm."))}  # fmt: skip
    assert trainable == expected and expected


def test_the_policy_and_its_critic_meet_the_contracts(tiny_model_path):
    policy, cfg = _policy(tiny_model_path)
    critic = base.get("pi0").critic(cfg, policy)
    assert isinstance(policy, base.Policy) and isinstance(critic, base.Critic)
    assert critic.encoder.backbone is not policy.model.encoder.backbone  # its own copy of the prefix
    assert critic.encoder.vlm.model is critic.encoder.backbone


# ----------------------------------------------------------------------------------------------- through the Trainer
def _demos(path, n: int = 24):
    """Demonstrations of the expert that answers ``g`` (read off the image here) with both actions."""
    obs = _observations(n, seed=2)
    g = np.array([float(np.argmax(o["rgb"][16, :, 1] < 60)) / (SIDE - 8) * 2 - 1 for o in obs], np.float32)
    np.savez(path, **{"obs.rgb": np.stack([o["rgb"] for o in obs]), "obs.proprio": np.stack([o["proprio"] for o in obs]),
                      "obs.instruction": np.array([o["instruction"] for o in obs])},
             actions=np.repeat(g[:, None, None], 2, axis=1))  # fmt: skip
    return path


def test_bc_then_ppo_gae_through_the_trainer_and_save_load(tmp_path, tiny_model_path):
    cfg = _cfg(tiny_model_path, "name=pi0_reach", f"policy.kwargs.demos={_demos(tmp_path / 'demos.npz')}",
               "env.id=MMRLPi0Reach-v0", "env.max_turns=null", "rewards={}", f"train.output_dir={tmp_path}",
               "train.steps=1", "train.eval_every=0", "train.save_every=0", "train.eval_size=2", "threads=1",
               "algo.advantage=gae", "rollout.horizon=2", "rollout.batch_size=2", "algo.minibatch_size=4",
               "algo.epochs=1", "algo.kl_coef=0.01", "warmup.steps=3", "warmup.batch_size=8")  # fmt: skip
    torch.manual_seed(0)
    summary = Trainer(cfg, show_progress=False).fit()
    assert summary["steps"] == 1 and np.isfinite(summary["return_after_rl"])
    rows = [json.loads(line) for line in (tmp_path / "pi0_reach" / "metrics.jsonl").read_text().splitlines()]
    assert np.isfinite(rows[0]["warmup/bc_loss"])
    [rl] = [r for r in rows if "approx_kl" in r]
    assert np.isfinite(rl["value_loss"]) and rl["nonfinite_updates"] == 0 and np.isfinite(rl["kl_ref"])
    # the checkpoint comes back through the family's build: same weights, same features
    saved = tmp_path / "pi0_reach" / "checkpoints" / "step_000001"
    policy = base.build(cfg, Pi0ReachEnv.observation_space, Pi0ReachEnv.action_space, saved)
    fresh = base.build(cfg, Pi0ReachEnv.observation_space, Pi0ReachEnv.action_space)
    inputs = policy.model.encoder.inputs(_observations(3))
    with torch.no_grad():
        assert not torch.allclose(policy.model.encoder(inputs), fresh.model.encoder(inputs))
    policy.save(tmp_path / "again")
    again = base.build(cfg, Pi0ReachEnv.observation_space, Pi0ReachEnv.action_space, tmp_path / "again")
    with torch.no_grad():
        torch.testing.assert_close(again.model.encoder(inputs), policy.model.encoder(inputs))


# ----------------------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(("override", "field"), [
    ("policy.kwargs.pooling=max", "policy.kwargs.pooling"),
    ("policy.kwargs.proprio=image", "policy.kwargs.proprio"),
    ("policy.kwargs.vlm_train=first", "policy.kwargs.vlm_train"),
    ("policy.kwargs.vlm_last_k=0", "policy.kwargs.vlm_last_k"),
    ("policy.kwargs.max_prompt_tokens=0", "policy.kwargs.max_prompt_tokens"),
    ("policy.kwargs.proprio_decimals=12", "policy.kwargs.proprio_decimals"),
    ("policy.kwargs.estimator=ode", "policy.kwargs.estimator"),
    ("policy.kwargs.polling=last", "policy.kwargs.polling"),
    ("policy.kwargs.text_key=task", "policy.kwargs.text_key"),
    ("policy.kwargs={vlm_train: last, vlm_last_k: 9}", "policy.kwargs.vlm_last_k"),
])  # fmt: skip
def test_a_bad_option_is_a_one_line_config_error_naming_it(tiny_model_path, override, field):
    with pytest.raises(ConfigError) as err:
        _policy(tiny_model_path, override)
    assert field in str(err.value) and "\n" not in str(err.value)


def test_bad_spaces_and_prompts_are_one_line_errors(tiny_model_path, tmp_path):
    cfg = _cfg(tiny_model_path)
    with pytest.raises(ConfigError, match="exactly one RGB"):
        base.build(cfg, gym.spaces.Dict({"state": gym.spaces.Box(-1, 1, (3,))}), Pi0ReachEnv.action_space)
    with pytest.raises(ConfigError, match="model.path"):
        base.build(_cfg(tmp_path / "none"), Pi0ReachEnv.observation_space, Pi0ReachEnv.action_space)
    policy, _ = _policy(tiny_model_path, "policy.kwargs.max_prompt_tokens=20")
    with pytest.raises(ConfigError, match=r"policy.kwargs.max_prompt_tokens: a prompt of \d+ tokens"):
        policy.act(_observations(2), SamplingParams())
