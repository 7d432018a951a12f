"""Runs that never save garbage and checkpoints that cannot run code: the failures measured in the reliability issue,
each re-run as a test."""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
from pathlib import Path

import pytest
import torch

from mmrl.config import ConfigError, load_config
from mmrl.trainer import TrainingError
from mmrl.trainer import checkpoint as ckpt
from mmrl.trainer.logging import read_metrics
from mmrl.trainer.loop import Trainer

ROOT = Path(__file__).resolve().parents[2]


def cartpole(tmp_path, *extra):
    return load_config(ROOT / "configs/cartpole_ppo.yaml", [
        f"train.output_dir={tmp_path}", "train.steps=3", "train.save_every=1", "train.eval_every=0",
        "train.eval_size=2", "train.keep_checkpoints=5", "rollout.horizon=16", *extra,
    ])  # fmt: skip


def all_finite(path: Path) -> bool:
    from safetensors.torch import load_file

    return all(bool(torch.isfinite(t).all()) for t in load_file(str(path / "model.safetensors")).values())


def test_a_diverging_run_stops_in_one_line_and_leaves_only_finite_checkpoints(tmp_path):
    cfg = cartpole(tmp_path, "algo.lr=1e30", "train.steps=8", "train.max_bad_steps=2")
    with pytest.raises(TrainingError, match=r"2 steps in a row had a non-finite loss or gradient") as err:
        Trainer(cfg, show_progress=False).fit()
    assert "\n" not in str(err.value)
    saved = ckpt.list_checkpoints(cfg.run_dir)
    assert saved and all(all_finite(p) for p in saved)
    rows = [r for r in read_metrics(cfg.run_dir / "metrics.jsonl") if "nonfinite_updates" in r]
    assert rows[-1]["nonfinite_updates"] > 0


def test_skipped_updates_leave_weights_and_optimizer_state_untouched(tmp_path):
    trainer = Trainer(cartpole(tmp_path), show_progress=False)
    trainer.train_step()  # a real step: the optimizer has state
    before = [p.detach().clone() for p in trainer.learner.params]
    state = {k: v.clone() for k, v in trainer.learner.optimizer.state[trainer.learner.params[0]].items()}
    trainer.rewards.nonfinite = "drop"
    real = trainer.policy.log_prob
    trainer.policy.log_prob = lambda batch, with_entropy=False: tuple(  # NaN log-probs: every minibatch is skipped
        None if x is None else x * math.nan if i == 0 else x for i, x in enumerate(real(batch, with_entropy)))
    stats = trainer.train_step()
    assert stats["nonfinite_updates"] > 0 and "grad_norm" not in stats
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.learner.params))
    after = trainer.learner.optimizer.state[trainer.learner.params[0]]
    assert all(torch.equal(state[k], after[k]) for k in state)
    trainer.close()


class _Exploit:
    """Unpickling this runs a shell command: what a crafted trainer_state.pt in a shared run directory would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_checkpoint_runs_nothing_and_the_previous_one_is_used(tmp_path, caplog):
    cfg = cartpole(tmp_path)
    Trainer(cfg, show_progress=False).fit()
    newest = ckpt.latest_checkpoint(cfg.run_dir)
    marker = tmp_path / "pwned"
    with (newest / ckpt.STATE_FILE).open("wb") as f:
        pickle.dump({"step": 3, "payload": _Exploit(marker)}, f)
    with caplog.at_level(logging.WARNING):
        trainer = Trainer(cartpole(tmp_path, "train.resume=true", "train.steps=4"), show_progress=False)
    assert not marker.exists()
    assert trainer.step == 2 and "step_000003 is unreadable" in caplog.text
    trainer.close()


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_a_truncated_or_missing_checkpoint_file_falls_back_to_the_previous_one(tmp_path, caplog, damage):
    cfg = cartpole(tmp_path)
    Trainer(cfg, show_progress=False).fit()
    weights = ckpt.latest_checkpoint(cfg.run_dir) / "model.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:100])
    else:
        weights.unlink()
    with caplog.at_level(logging.WARNING):
        trainer = Trainer(cartpole(tmp_path, "train.resume=true"), show_progress=False)
    assert trainer.step == 2 and "step_000003 is unreadable" in caplog.text
    summary = trainer.fit()
    assert summary["steps"] == 3
    steps = [r["step"] for r in read_metrics(cfg.run_dir / "metrics.jsonl") if "loss" in r]
    assert steps == [1, 2, 3]  # step 3 replayed once, not twice


def test_a_torn_metrics_line_does_not_stop_a_resume(tmp_path):
    cfg = cartpole(tmp_path, "train.steps=2")
    Trainer(cfg, show_progress=False).fit()
    with (cfg.run_dir / "metrics.jsonl").open("a") as f:
        f.write('{"step": 3, "loss": 0.1')  # killed mid-write
    summary = Trainer(cartpole(tmp_path, "train.resume=true"), show_progress=False).fit()
    assert summary["steps"] == 3
    assert [r["step"] for r in read_metrics(cfg.run_dir / "metrics.jsonl") if "loss" in r] == [1, 2, 3]


def test_a_kill_after_the_final_save_leaves_no_duplicate_rows(tmp_path):
    cfg = cartpole(tmp_path, "train.steps=2")
    Trainer(cfg, show_progress=False).fit()
    rows = read_metrics(cfg.run_dir / "metrics.jsonl")
    (cfg.run_dir / "summary.json").unlink()  # killed right after the final checkpoint
    summary = Trainer(cartpole(tmp_path, "train.steps=2", "train.resume=true"), show_progress=False).fit()
    assert read_metrics(cfg.run_dir / "metrics.jsonl") == rows
    assert summary["return_after_rl"] == json.loads((cfg.run_dir / "summary.json").read_text())["return_after_rl"]


def test_a_reused_name_is_refused_before_anything_is_touched(tmp_path):
    cfg = cartpole(tmp_path, "train.steps=1")
    Trainer(cfg, show_progress=False).fit()
    files = {p: p.read_bytes() for p in cfg.run_dir.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError, match="already holds a run; train.resume=true continues it"):
        Trainer(cartpole(tmp_path, "train.steps=1"), show_progress=False)
    with pytest.raises(ConfigError, match=r"seed: the run in .* was started with 0, this config has 1"):
        Trainer(cartpole(tmp_path, "train.steps=2", "train.resume=true", "seed=1"), show_progress=False)
    assert {p: p.read_bytes() for p in cfg.run_dir.rglob("*") if p.is_file()} == files
    fresh = Trainer(cartpole(tmp_path, "train.steps=1", "train.overwrite=true", "seed=1"), show_progress=False)
    assert not ckpt.list_checkpoints(cfg.run_dir) and not (cfg.run_dir / "metrics.jsonl").read_text()
    fresh.close()


def test_a_non_finite_reward_names_its_function_or_is_dropped_and_counted(tiny_model_path, tmp_path, monkeypatch):
    from rewards import registry

    monkeypatch.setitem(registry._REGISTRY, "nan_on_odd", lambda completions, **columns: [
        math.nan if i % 2 else 1.0 for i in range(len(completions))])  # fmt: skip

    def vlm(*extra):
        return load_config(ROOT / "configs/quickstart.yaml", [
            f"model.path={tiny_model_path}", "model.build_tiny=false", f"train.output_dir={tmp_path}", "warmup.steps=0",
            "algo.prompts_per_step=2", "algo.group_size=2", "rollout.max_new_tokens=4", "rewards.nan_on_odd=1.0",
            *extra])  # fmt: skip

    with pytest.raises(TrainingError, match="reward 'nan_on_odd' returned a non-finite value") as err:
        Trainer(vlm("name=error"), show_progress=False).train_step()
    assert "\n" not in str(err.value)
    stats = Trainer(vlm("name=drop", "train.nonfinite_rewards=drop"), show_progress=False).train_step()
    assert stats["reward/nonfinite_dropped"] == 2.0 and math.isfinite(stats["loss"])


def test_a_run_over_corrupt_rows_completes_with_the_rows_counted(tiny_model_path, tmp_path):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = []
    for i in range(8):
        path = tmp_path / f"img{i}.png"
        if i in (2, 5):
            path.write_bytes(rng.bytes(300))  # not an image
        else:
            Image.fromarray(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)).save(path)
        rows.append({"prompt": "How many shapes?", "images": [path.name], "answer": str(i % 4 + 1)})
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def vlm(*extra):
        return load_config(ROOT / "configs/quickstart.yaml", [
            f"model.path={tiny_model_path}", "model.build_tiny=false", f"train.output_dir={tmp_path}", "warmup.steps=0",
            "env.id=dataset_vqa", f"env.kwargs={{path: {data}}}", "env.eval_kwargs={}", "algo.prompts_per_step=4",
            "algo.group_size=2", "rollout.batch_size=4", "rollout.max_new_tokens=4", "train.eval_size=8",
            "train.eval_every=0", *extra])  # fmt: skip

    summary = Trainer(vlm("name=counted", "train.steps=2"), show_progress=False).fit()
    assert summary["steps"] == 2
    rows_logged = [r for r in read_metrics(tmp_path / "counted" / "metrics.jsonl") if "loss" in r]
    assert rows_logged[-1]["data/bad_rows"] >= 1  # every env that met row 2 or 5 skipped it, and the run went on
    with pytest.raises(TrainingError, match=r"skipped \d+ data rows that do not decode \(train.max_bad_rows=0\)"):
        Trainer(vlm("name=strict", "train.steps=2", "train.max_bad_rows=0"), show_progress=False).fit()


def test_rewards_of_3e38_under_rloo_overflow_into_skipped_updates_not_nan_weights(tiny_model_path, tmp_path,
                                                                                  monkeypatch):  # fmt: skip
    """The issue's second diverging case: finite rewards whose advantages overflow float32."""
    from rewards import registry

    monkeypatch.setitem(registry._REGISTRY, "huge", lambda completions, **columns: [
        3e38 if i % 2 else -3e38 for i in range(len(completions))])  # fmt: skip
    cfg = load_config(ROOT / "configs/quickstart.yaml", [
        f"model.path={tiny_model_path}", "model.build_tiny=false", f"train.output_dir={tmp_path}", "warmup.steps=0",
        "algo.advantage=rloo", "rewards={huge: 1.0}", "algo.prompts_per_step=2", "algo.group_size=2",
        "rollout.max_new_tokens=4", "train.steps=5", "train.save_every=1", "train.eval_every=0", "train.eval_size=2",
        "train.max_bad_steps=2"])  # fmt: skip
    with pytest.raises(TrainingError, match="non-finite loss or gradient"):
        Trainer(cfg, show_progress=False).fit()
    saved = ckpt.list_checkpoints(cfg.run_dir)
    assert saved and all(all_finite(p) for p in saved)
