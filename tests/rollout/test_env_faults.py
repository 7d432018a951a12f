"""Env faults never end a run: an env that raises, hangs past the timeout or kills its worker process is restarted,
its episode is counted as an infrastructure failure and left out, and the run completes."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from mmrl.config import load_config
from mmrl.policies.base import Action, SamplingParams
from mmrl.rollout.collector import Collector
from mmrl.rollout.pool import INFRA, EnvPool
from mmrl.trainer.logging import read_metrics
from mmrl.trainer.loop import Trainer

ROOT = Path(__file__).resolve().parents[2]


class FlakyCartPole(gym.Wrapper):
    """CartPole whose every step faults with probability ``p`` (fresh randomness in every process, so a restarted
    worker does not replay its fault): a third of the faults raise, a third hang for a minute, a third kill the process
    (``kinds`` picks which may happen)."""

    def __init__(self, p: float = 0.05, kinds: str = "raise,hang,exit", forced: tuple[str, str] | None = None) -> None:
        super().__init__(gym.make("CartPole-v1"))
        self.p, self.kinds = p, kinds.split(",")
        self.rng = random.Random(int.from_bytes(os.urandom(8), "little"))
        self.forced = forced  # (a folder, "hang,exit"): fault k happens once, whatever the draws, in the first env
        self.steps = 0  # to step past 4 steps among those built after fault k - 1 (so each takes its own restart)
        self.generation = len(os.listdir(forced[0])) if forced else 0

    def step(self, action):
        draw = self.rng.random()
        self.steps += 1
        kind = self.kinds[int(draw / self.p * len(self.kinds))] if draw < self.p else None
        if self.forced and self.steps > 4:
            folder, kinds = self.forced
            if self.generation < len(kinds.split(",")):
                try:  # O_EXCL: of two workers stepping at once, exactly one claims the fault
                    os.close(os.open(os.path.join(folder, f"fault_{self.generation}"), os.O_CREAT | os.O_EXCL))
                    kind = kinds.split(",")[self.generation]
                except FileExistsError:
                    pass
        if kind == "raise":
            raise RuntimeError("simulator crashed")
        if kind == "hang":
            time.sleep(60)
        if kind == "exit":
            os._exit(1)
        return self.env.step(action)


gym.register("MMRLFlakyCartPole-v0", entry_point=FlakyCartPole)


class Zero:
    version = 0

    def train(self, mode=True):
        return self

    def act(self, observations, params, states=None):
        return [Action(0, 0.0, None) for _ in observations]


def test_an_env_that_raises_is_restarted_and_its_episode_left_out():
    pool = EnvPool(lambda: FlakyCartPole(p=0.2, kinds="raise"), num_envs=3, max_restarts=50)
    collector = Collector(Zero(), pool)
    trajs = collector.episodes(list(range(12)), 1, SamplingParams())
    assert collector.stats.infra_failures > 0 and len(trajs) == 12 - collector.stats.infra_failures
    assert not any(INFRA in s.info for t in trajs for s in t.steps)  # what is returned is the policy's own
    assert all(t.steps[-1].terminated for t in trajs)  # CartPole falls over: real terminations only
    pool.close()


def test_a_hung_or_dead_worker_restarts_the_pool_and_the_episodes_in_flight_are_counted(tmp_path, caplog):
    # one hang, then one dead worker, scripted (random faults left every episode of 40 steps lost now and then)
    pool = EnvPool(lambda: FlakyCartPole(p=0.0, forced=(str(tmp_path), "hang,exit")), num_envs=2, mode="async",
                   step_timeout=1.0)  # fmt: skip
    collector = Collector(Zero(), pool)
    start = time.time()
    trajs = collector.fragments(40, SamplingParams(), seed=0)
    assert time.time() - start < 30
    restarts = [r.getMessage() for r in caplog.records if "restarting the pool" in r.getMessage()]
    assert len(restarts) == 2 and "TimeoutError" in restarts[0] and "EOFError" in restarts[1]
    assert collector.stats.infra_failures == 4  # each restart loses both envs' running episodes
    assert trajs and not any(INFRA in s.info for t in trajs for s in t.steps)
    assert sum(len(t.steps) for t in trajs) + 2 * 2 <= 80  # the lost steps are not among those returned
    pool.close()


@pytest.mark.parametrize("steps", [pytest.param(4, id="fast"), pytest.param(25, marks=pytest.mark.slow, id="long")])
def test_a_run_on_an_env_faulting_at_5_percent_of_steps_completes(tmp_path, steps):
    """The issue's acceptance: 5% of steps raise, hang or kill the worker; the run completes, the losses counted."""
    cfg = load_config(ROOT / "configs/cartpole_ppo.yaml", [
        f"train.output_dir={tmp_path}", f"train.steps={steps}", "train.eval_every=0", "train.save_every=0",
        "train.eval_size=4", "env.id=MMRLFlakyCartPole-v0", "env.pool=async", "env.step_timeout=1.0",
        "env.max_restarts=5", "rollout.horizon=32",
    ])  # fmt: skip
    summary = Trainer(cfg, show_progress=False).fit()
    rows = [r for r in read_metrics(cfg.run_dir / "metrics.jsonl") if r["step"] > 0 and "eval/return" not in r]
    assert [r["step"] for r in rows] == list(range(1, steps + 1)) and summary["steps"] == steps
    assert sum(r.get("infra_failures", 0) for r in rows) > 0
    trained = [r for r in rows if "loss" in r]  # a step whose every fragment was lost trains on nothing ("skipped")
    assert all(r.get("skipped") == 1.0 and r["infra_failures"] > 0 for r in rows if "loss" not in r)
    assert len(trained) >= max(1, steps // 3)  # 4 of 25 steps were skipped in one run
    assert all(np.isfinite(r["loss"]) for r in trained)


def test_an_env_that_keeps_failing_stops_the_run_after_max_restarts():
    pool = EnvPool(lambda: FlakyCartPole(p=1.0, kinds="raise"), num_envs=1, max_restarts=2)
    with pytest.raises(RuntimeError, match="simulator crashed"):
        Collector(Zero(), pool).episodes(list(range(5)), 1, SamplingParams())
