"""A policy family defined only in this file (a tabular softmax policy and a tabular critic on a toy chain env) trains
through the one Trainer, from a YAML-style config, without a line of library code knowing it: the proof that a family
plugs in."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from mmrl.config import load_config
from mmrl.policies import base
from mmrl.policies.base import Action, Family, SamplingParams
from mmrl.trainer.loop import Trainer
from mmrl.types import Batch, Trajectory

N_STATES = 6


class ChainEnv(gym.Env):
    """States 0..5, start in 0; action 1 moves right, 0 moves left (floor 0). Reaching 5 pays 1 and terminates; the
    time limit (``max_episode_steps``) truncates. A random policy rarely gets there in 8 steps."""

    observation_space = gym.spaces.Discrete(N_STATES)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.s = 0
        return self.s, {}

    def step(self, action):
        self.s = min(self.s + 1, N_STATES - 1) if int(action) == 1 else max(self.s - 1, 0)
        done = self.s == N_STATES - 1
        return self.s, float(done), done, False, {"success": done}


gym.register("MMRLChainTest-v0", entry_point=ChainEnv, max_episode_steps=8)


class TabularPolicy:
    """``pi(a | s) = softmax(table[s])``; ``L`` = env steps, rows = trajectories."""

    def __init__(self, n_states: int, n_actions: int) -> None:
        self.table = torch.nn.Parameter(torch.zeros(n_states, n_actions))
        self.version = 0

    def parameters(self):
        return [self.table]

    def train(self, mode=True):
        return self

    def act(self, observations: Sequence[int], params: SamplingParams, states=None) -> list[Action]:
        with torch.no_grad():
            dist = torch.distributions.Categorical(logits=self.table[torch.as_tensor(list(observations))])
            actions = dist.probs.argmax(-1) if params.temperature <= 0 else dist.sample()
            logp = dist.log_prob(actions)
        return [Action(int(a), float(lp), (int(s), int(a)), self.version) for s, a, lp in zip(observations, actions, logp)]

    def collate(self, trajectories: Sequence[Trajectory]) -> Batch:
        B, L = len(trajectories), max(len(t) for t in trajectories)
        states, actions = torch.zeros(B, L, dtype=torch.long), torch.zeros(B, L, dtype=torch.long)
        mask, old, step_rewards = torch.zeros(B, L), torch.zeros(B, L), torch.zeros(B, L)
        for i, t in enumerate(trajectories):
            for k, step in enumerate(t.steps):
                states[i, k], actions[i, k] = step.record
                mask[i, k], old[i, k], step_rewards[i, k] = 1.0, step.logp, step.reward
        return Batch(model_inputs={"states": states, "actions": actions,
                                   "final": torch.tensor([int(t.final_observation) for t in trajectories])},
                     mask=mask, old_logp=old, advantages=torch.zeros(B), rewards=step_rewards.sum(1),
                     group_ids=torch.tensor([t.group_id for t in trajectories]), step_rewards=step_rewards,
                     bootstrap_mask=torch.tensor([0.0 if t.terminated else 1.0 for t in trajectories]))  # fmt: skip

    def learner_view(self, batch: Batch) -> Batch:
        return batch

    def log_prob(self, batch: Batch, with_entropy: bool = False):
        dist = torch.distributions.Categorical(logits=self.table[batch.model_inputs["states"]])
        logp = dist.log_prob(batch.model_inputs["actions"])
        return logp, batch.mask, dist.entropy() if with_entropy else None

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        (path / "table.json").write_text(json.dumps(self.table.detach().tolist()))


class TabularCritic(torch.nn.Module):
    def __init__(self, n_states: int) -> None:
        super().__init__()
        self.v = torch.nn.Parameter(torch.zeros(n_states))

    def value(self, batch: Batch) -> torch.Tensor:
        return self.v[batch.model_inputs["states"]]

    def final_value(self, batch: Batch) -> torch.Tensor:
        return self.v[batch.model_inputs["final"]]


def build(cfg, observation_space, action_space, path=None):
    policy = TabularPolicy(int(observation_space.n), int(action_space.n))
    if path is not None:
        policy.table.data = torch.tensor(json.loads((Path(path) / "table.json").read_text()))
    return policy


@pytest.fixture(autouse=True)
def tabular_family():
    base.register("tabular", Family(build=build, critic=lambda cfg, policy: TabularCritic(policy.table.shape[0])))
    yield
    base._FAMILIES.pop("tabular")


def chain_config(tmp_path, *extra):
    return load_config(None, [
        "name=chain", "policy.kind=tabular", "env.id=MMRLChainTest-v0", "env.max_turns=null", "rewards={}",
        f"train.output_dir={tmp_path}", "train.steps=25", "train.eval_every=0", "train.save_every=10",
        "train.eval_size=4", "threads=1", "algo.lr=0.1", "algo.epochs=2", *extra,
    ])  # fmt: skip


@pytest.mark.parametrize("extra", [
    # GRPO-family outcome advantages over whole episodes: 4 seeds x 8 samples per step, on a pool of 8 envs
    ["algo.advantage=rloo", "algo.prompts_per_step=4", "algo.group_size=8", "algo.minibatch_size=32",
     "rollout.batch_size=8", "algo.agg=seq-mean-token-sum"],
    # PPO with the family's own critic over fixed-horizon rollouts that cut episodes (bootstrapped)
    ["algo.advantage=gae", "algo.gamma=0.95", "algo.lam=0.9", "rollout.horizon=16", "rollout.batch_size=4",
     "algo.minibatch_size=16", "algo.norm_adv=true", "algo.critic_lr=0.5"],
])  # fmt: skip
def test_a_family_defined_in_a_test_file_learns_through_the_trainer(tmp_path, extra):
    torch.manual_seed(0)
    cfg = chain_config(tmp_path, *extra)
    summary = Trainer(cfg, show_progress=False).fit()
    assert summary["success_before_rl"] == 0.0  # the uniform greedy policy always goes left
    assert summary["success_after_rl"] == 1.0 and summary["return_after_rl"] == 1.0
    rows = [json.loads(line) for line in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    returns = [r["episode/return_recent"] for r in rows if "episode/return_recent" in r]
    assert returns[-1] > returns[0]
    # its checkpoint went through the family's save, and resumes through its build
    resumed = Trainer(chain_config(tmp_path, *extra, "train.resume=true", "train.steps=26"), show_progress=False)
    assert resumed.step == 25
    np.testing.assert_allclose(resumed.policy.table.detach().numpy(),
                               np.array(json.loads((cfg.run_dir / "checkpoints/step_000025/table.json").read_text())))
    resumed.close()
