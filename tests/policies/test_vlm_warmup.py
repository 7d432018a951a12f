"""The VLM warm-up's target modes (mmrl.policies.vlm.warmup.target_text), checked against the env that grades them."""

import numpy as np
import pytest

from envs.vqa.synthetic import SyntheticVQAEnv
from mmrl.config import ConfigError
from mmrl.policies.vlm.warmup import target_text


@pytest.fixture
def episodes():
    env = SyntheticVQAEnv(task="count", image_size=56, layout="grid", kinds=["square"], colors=["red"], seed=0)
    return env, [env.reset(seed=s)[1] for s in range(40)]


def graded(env, seed, completion):
    env.reset(seed=seed)
    return env.step(completion)[4]["success"]


def test_truth_targets_are_the_true_answer_alone_and_the_env_grades_them_correct(episodes):
    env, infos = episodes
    rng = np.random.default_rng(0)
    for seed, info in enumerate(infos):
        target = target_text(info, "truth", rng)
        assert target == f"<answer>{info['answer']}</answer>"
        assert graded(env, seed, target)


def test_answer_targets_draw_every_choice_and_are_no_better_than_chance(episodes):
    env, infos = episodes
    rng = np.random.default_rng(0)
    drawn, right = set(), 0
    for seed, info in enumerate(infos):
        target = target_text(info, "answer", rng)
        choice = target.removeprefix("<answer>").removesuffix("</answer>")
        assert choice in info["answer_choices"]
        drawn.add(choice)
        right += bool(graded(env, seed, target))
    assert drawn == set(infos[0]["answer_choices"])  # 4 choices, 40 draws: all four appear
    assert right < 0.6 * len(infos)  # chance is 1/4; a target leaking the truth would be right every time


def test_solution_targets_are_the_reference_and_format_targets_replace_its_answer(episodes):
    _, infos = episodes
    rng = np.random.default_rng(1)
    changed = 0
    for info in infos:
        assert target_text(info, "solution", rng) == info["solution"]
        fmt = target_text(info, "format", rng)
        fake = fmt.split("<answer>")[1].split("</answer>")[0]
        assert fmt == info["solution"].replace(str(info["answer"]), fake)
        changed += fake != info["answer"]
    assert changed > 0


def test_truth_targets_need_the_envs_answer():
    with pytest.raises(ConfigError, match="warmup.targets"):
        target_text({"solution": "<answer>x</answer>"}, "truth", np.random.default_rng(0))
