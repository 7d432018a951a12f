"""Video-R1's temporal contrast (T-GRPO): the bonus per episode against the paper's rule written out here, with the
accuracies counted by hand from scripted answers and the env's ground truth; the shuffled observations are seeded
permutations of the frames, never the identity; one trainer step on the tiny VLM trains only the ordered episodes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import envs
from mmrl.config import AlgoConfig, ConfigError, RolloutConfig, RunConfig, load_config
from mmrl.policies.base import Action, SamplingParams
from mmrl.trainer.loop import Trainer
from mmrl.trainer.scoring import RewardStage
from mmrl.trainer.temporal import apply, shuffle_frames
from mmrl.types import Step, Trajectory

ROOT = Path(__file__).resolve().parents[2]
BONUS, RATIO, G, N = 0.3, 0.8, 4, 5  # Video-R1's bonus and ratio; answers per group: ordered, shuffled
WEIGHTS = {"accuracy": 1.0, "format_answer": 0.1}


def frame_key(video: np.ndarray) -> frozenset[bytes]:
    """The set of a clip's frames: equal for a clip and any reordering of it."""
    return frozenset(f.tobytes() for f in video)


class ScriptedPolicy:
    """Answers a (shuffled) video with the texts scripted for the group whose frames it shows, in order."""

    def __init__(self, scripts: dict[frozenset[bytes], list[str | None]]) -> None:
        self.scripts = {k: list(v) for k, v in scripts.items()}
        self.calls: list[list[dict]] = []

    def act(self, observations, params, states=None):
        self.calls.append(list(observations))
        return [Action(self.scripts[frame_key(o["videos"][0])].pop(0), 0.0, None) for o in observations]


def episodes(env_id: str, seed: int, group: int, texts: list[str], **kwargs) -> list[Trajectory]:
    """One group: the env reset with ``seed`` and stepped with each text (rewards deferred, as in training)."""
    env = envs.make(env_id, rewards=WEIGHTS, defer_rewards=True, **kwargs)
    out = []
    for text in texts:
        obs, info = env.reset(seed=seed)
        _, reward, terminated, truncated, step_info = env.step(text)
        step = Step(obs, text, 0.0, None, reward=reward, terminated=terminated, truncated=truncated, info=step_info)
        out.append(Trajectory([step], group_id=group, info={**info, **step_info}))
    return out


def run_config(**algo) -> RunConfig:
    algo = {"group_size": G, "temporal_contrast_samples": N, "temporal_contrast": BONUS, **algo}
    algo.setdefault("temporal_contrast_ratio", RATIO)
    return RunConfig(seed=7, rewards=WEIGHTS, algo=AlgoConfig(**algo), rollout=RolloutConfig(batch_size=64))


# correct / wrong (the other direction) / malformed / no answer (a full context): per group, ordered then shuffled
PATTERNS = [
    ("CCCW", "CWWWW"),  # p = 0.75 >= 0.8 x 0.2: the bonus
    ("CWWW", "CCCWW"),  # p = 0.25 < 0.8 x 0.6: none
    ("WWMW", "WMWNW"),  # p = 0 >= 0.8 x 0: the rule holds, nobody is correct
    ("CCCC", "CCCCC"),  # p = 1 >= 0.8 x 1: all four
    ("CCWW", "CCCWW"),  # p = 0.5 >= 0.8 x 0.6 = 0.48 though p < p~: the bonus (the ratio matters)
    ("CCWW", "CCCCW"),  # p = 0.5 < 0.8 x 0.8 = 0.64: none
]


def scripted_batch(num_frames: int = 6):
    """Six video groups answered by ``PATTERNS`` and one image group; the expected per-episode bonus by the rule."""
    trajs, scripts, expected, counts = [], {}, [], {"ordered": [], "shuffled": []}
    for g, (ordered, shuffled) in enumerate(PATTERNS):
        env = envs.make("synthetic_video_vqa", task="direction", num_frames=num_frames)
        _, info = env.reset(seed=100 + g)
        answer = info["answer"]
        other = next(c for c in info["answer_choices"] if c != answer)
        text = {"C": f"<answer>{answer}</answer>", "W": f"<answer>{other}</answer>", "M": f"<answer>{answer}"}
        text["N"] = None  # a stopped action (full context)
        group = episodes("synthetic_video_vqa", 100 + g, g, [text[c] for c in ordered], task="direction",
                         num_frames=num_frames)  # fmt: skip
        video = group[0].steps[0].observation["videos"][0]
        assert len(frame_key(video)) == num_frames  # distinct frames: a reordering is recognisable
        scripts[frame_key(video)] = [text[c] for c in shuffled]
        p, ps = ordered.count("C") / G, shuffled.count("C") / N  # accuracies counted by hand
        expected += [BONUS if p >= RATIO * ps and c == "C" else 0.0 for c in ordered]
        counts["ordered"] += [c == "C" for c in ordered]
        counts["shuffled"] += [c == "C" for c in shuffled]
        trajs += group
    trajs += episodes("synthetic_vqa", 0, len(PATTERNS), ["<answer>1</answer>"] * G)  # images only: not re-asked
    expected += [0.0] * G
    RewardStage(WEIGHTS)(trajs)
    return trajs, ScriptedPolicy(scripts), expected, counts


def test_the_bonus_per_episode_is_video_r1s_rule_on_hand_counted_accuracies():
    trajs, policy, expected, counts = scripted_batch()
    before = [t.reward for t in trajs]
    stats = apply(trajs, policy, run_config(), SamplingParams(), step=3)
    assert [t.reward - b for t, b in zip(trajs, before)] == pytest.approx(expected)
    assert [t.steps[-1].info["reward_parts"]["temporal_contrast"] for t in trajs] == pytest.approx(expected)
    assert [t.info["reward_parts"]["temporal_contrast"] for t in trajs] == pytest.approx(expected)
    assert stats == pytest.approx({
        "temporal/acc_ordered": np.mean(counts["ordered"]),
        "temporal/acc_shuffled": np.mean(counts["shuffled"]),
        "temporal/bonus_groups": 3 / len(PATTERNS),  # groups 0, 3 and 4 were paid
    })  # fmt: skip
    parts = RewardStage.parts(trajs)
    assert parts["reward/temporal_contrast/mean"] == pytest.approx(np.mean(expected))
    assert [len(c) for c in policy.calls] == [len(PATTERNS) * N]  # one act call; the image group is not asked


def test_shuffled_observations_are_seeded_non_identity_permutations_of_the_frames():
    trajs, policy, _, _ = scripted_batch()
    apply(trajs, policy, run_config(), SamplingParams(), step=3)
    originals = {frame_key(t.steps[0].observation["videos"][0]): t.steps[0].observation for t in trajs[:-G:G]}
    seen = policy.calls[0]
    for obs in seen:
        orig = originals[frame_key(obs["videos"][0])]
        video, source = obs["videos"][0], orig["videos"][0]
        perm = [next(i for i, f in enumerate(source) if np.array_equal(f, frame)) for frame in video]
        assert sorted(perm) == list(range(len(source))) and perm != list(range(len(source)))
        assert obs["text"] == orig["text"] and obs["video_fps"] == orig["video_fps"]
    again, twin, _, _ = scripted_batch()
    apply(again, twin, run_config(), SamplingParams(), step=3)
    assert all(np.array_equal(a["videos"][0], b["videos"][0]) for a, b in zip(seen, twin.calls[0]))  # same seed, step
    later, other, _, _ = scripted_batch()
    apply(later, other, run_config(), SamplingParams(), step=4)
    assert any(not np.array_equal(a["videos"][0], b["videos"][0]) for a, b in zip(seen, other.calls[0]))


def test_shuffle_frames_never_returns_the_identity_and_keeps_a_single_frame():
    two = np.arange(2 * 2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 2, 3)
    for s in range(20):  # two frames: the only other order is the swap
        out = shuffle_frames({"videos": (two,), "video_fps": (np.float64(2.0),)}, np.random.default_rng(s))
        np.testing.assert_array_equal(out["videos"][0], two[::-1])
    one = two[:1]
    np.testing.assert_array_equal(shuffle_frames({"videos": (one,)}, np.random.default_rng(0))["videos"][0], one)


def test_the_shuffled_answers_are_sampled_in_chunks_of_the_rollout_batch_size():
    trajs, policy, expected, _ = scripted_batch()
    cfg = run_config()
    cfg.rollout.batch_size = 8
    apply(trajs, policy, cfg, SamplingParams(), step=3)
    assert [len(c) for c in policy.calls] == [8, 8, 8, 6]
    assert [t.steps[-1].info["reward_parts"]["temporal_contrast"] for t in trajs] == pytest.approx(expected)


# --------------------------------------------------------------------------------------------------- the trainer
def trainer_config(model_path, out_dir, base: str = "video_quickstart.yaml", *extra: str) -> RunConfig:
    return load_config(ROOT / "configs" / base, [
        f"model.path={model_path}", "model.build_tiny=false", f"train.output_dir={out_dir}", "train.steps=1",
        "warmup.steps=0", "algo.prompts_per_step=2", "algo.group_size=2", "algo.minibatch_size=4",
        "rollout.max_new_tokens=6", "rollout.batch_size=4", "train.rollouts_every=1", "algo.temporal_contrast=0.3",
        "algo.temporal_contrast_samples=3", *extra,
    ])  # fmt: skip


def test_one_trainer_step_adds_the_bonus_and_trains_only_the_ordered_episodes(tiny_model_path, tmp_path, monkeypatch):
    trainer = Trainer(trainer_config(tiny_model_path, tmp_path), show_progress=False)
    acted, trained, scored = [], [], []
    act, update, score = trainer.policy.act, trainer.update, trainer.score
    monkeypatch.setattr(trainer.policy, "act", lambda obs, *a, **k: (acted.append(len(obs)), act(obs, *a, **k))[1])
    monkeypatch.setattr(trainer, "update", lambda batch: (trained.append(len(batch)), update(batch))[1])
    monkeypatch.setattr(trainer, "score", lambda trajs: (scored.append(trajs), score(trajs))[1])
    stats = trainer.train_step()
    trainer.close()
    assert acted == [4, 4, 2]  # the rollout (2 x 2 episodes), then 2 groups x 3 shuffled answers in chunks of 4
    assert trained == [4]  # only the ordered episodes are rows of the batch
    for key in ("temporal/acc_ordered", "temporal/acc_shuffled", "temporal/bonus_groups"):
        assert 0.0 <= stats[key] <= 1.0, key
    assert 0.0 <= stats["reward/temporal_contrast/mean"] <= 0.3
    [trajs] = scored
    for t in trajs:  # the episode's reward is the weighted sum of its parts, the bonus included
        parts = t.steps[-1].info["reward_parts"]
        assert parts["temporal_contrast"] in (0.0, 0.3) and (parts["temporal_contrast"] == 0.0 or t.success)
        assert t.reward == pytest.approx(parts["accuracy"] + 0.1 * parts["format_answer"] + parts["temporal_contrast"])
    assert stats["reward/mean"] == pytest.approx(np.mean([t.reward for t in trajs]))
    samples = (tmp_path / "video_quickstart" / "rollouts" / "step_000001" / "samples.jsonl").read_text().splitlines()
    assert len(samples) == 4 and all("temporal_contrast" in json.loads(s)["turns"][0]["reward_parts"] for s in samples)


@pytest.mark.parametrize("base, override, message", [
    ("quickstart.yaml", "env.id=synthetic_vqa", "algo.temporal_contrast: the observations of env 'synthetic_vqa'"),
    ("video_quickstart.yaml", "algo.advantage=reinforce_pp", "algo.temporal_contrast: needs a group-relative outcome"),
])  # fmt: skip
def test_no_videos_or_no_grouped_advantage_is_a_one_line_error(tiny_model_path, tmp_path, base, override, message):
    with pytest.raises(ConfigError, match=message) as err:
        Trainer(trainer_config(tiny_model_path, tmp_path, base, override), show_progress=False)
    assert "\n" not in str(err.value)
