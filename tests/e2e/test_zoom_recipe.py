"""The zoom recipe (``configs/zoom.yaml``) and its no-tool baseline, run with the command its header gives, end to end
on tiny sizes: two warm-up steps and one GRPO step through the real Trainer. With the tool the question offers the zoom
and the warm-up's targets follow the oracle (the zoom on the named cell, then the true answer); without it every
episode is one turn and the zoom is not offered."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from envs.vqa.zoom import ZoomVQAEnv, oracle_action
from mmrl.config import load_config
from mmrl.trainer.loop import Trainer
from mmrl.viz.rollouts import SAMPLES_FILE, step_dir

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "configs/zoom.yaml"


def baseline_overrides() -> list[str]:
    """The overrides of the no-tool command written in the recipe's header (``name=...`` left out)."""
    line = next(x for x in RECIPE.read_text().splitlines() if x.startswith("#   mmrl train configs/zoom.yaml"))
    return [a for a in shlex.split(line[len("#   mmrl train configs/zoom.yaml"):]) if not a.startswith("name=")]


def small(tiny_model_path, tmp_path) -> list[str]:
    return [f"model.path={tiny_model_path}", "model.build_tiny=false", f"train.output_dir={tmp_path}", "train.steps=1",
            "warmup.steps=2", "warmup.batch_size=2", "algo.prompts_per_step=2", "algo.group_size=2",
            "algo.minibatch_size=4", "rollout.batch_size=4", "train.eval_size=2", "train.eval_every=0",
            "train.rollouts_every=1"]  # fmt: skip


def sampled_turns(run_dir: Path) -> list[list[dict]]:
    rows = [json.loads(x) for x in (step_dir(run_dir, 1) / SAMPLES_FILE).read_text().splitlines()]
    return [r["turns"] for r in rows]


@pytest.mark.parametrize("tool", [True, False], ids=["tool", "no_tool"])
def test_the_recipe_and_its_baseline_warm_up_and_step(tiny_model_path, tmp_path, tool):
    overrides = [] if tool else baseline_overrides()
    cfg = load_config(RECIPE, [*overrides, *small(tiny_model_path, tmp_path)])
    assert cfg.env.kwargs["tool"] is tool and cfg.env.kwargs["cue"] and (cfg.env.max_turns == 3) is tool
    trainer = Trainer(cfg, show_progress=False)
    summary = trainer.fit()
    trainer.close()
    assert summary["steps"] == 1
    turns = sampled_turns(cfg.run_dir)
    assert turns and all(re.search(r"in row \d, column \d of the 4 x 4 grid\?", t[0]["text"]) for t in turns)
    assert all(("zoom(x1, y1, x2, y2)" in t[0]["text"]) is tool for t in turns)
    if not tool:
        assert all(len(t) == 1 for t in turns)


def test_the_warm_up_targets_are_the_oracles_turns():
    """What the recipe's env gives the warm-up (info["solution"], turn by turn) is the oracle: the zoom on the cell the
    question names, then the true answer, and following it succeeds."""
    cfg = load_config(RECIPE, [])
    env = ZoomVQAEnv(**cfg.env.kwargs)
    for seed in range(10):
        obs, info = env.reset(seed=seed)
        row, col = map(int, re.search(r"row (\d), column (\d)", obs["text"]).groups())
        cell = f"zoom({14 * (col - 1)}, {14 * (row - 1)}, {14 * col}, {14 * row})"  # 14 px cells of the 56 px view
        assert info["solution"] == oracle_action(env) == cell
        obs, _, _, _, info = env.step(info["solution"])
        assert info["solution"] == f"<answer>{info['answer']}</answer>"
        assert env.step(info["solution"])[4]["success"]
