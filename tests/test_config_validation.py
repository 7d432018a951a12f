"""Config validation: every field has a rule (range, set or shape), and every bad value is a one-line ConfigError that
names the dotted field and the values it allows, raised by load_config before anything is built or written."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest

from mmrl.config import (
    AGG_MODES,
    COORDINATE_CONVENTIONS,
    DTYPES,
    JUDGE_AGGREGATES,
    JUDGE_KINDS,
    JUDGE_MODES,
    KL_KINDS,
    NONFINITE_REWARDS,
    POOL_MODES,
    WARMUP_TARGETS,
    AlgoConfig,
    ConfigError,
    JudgeConfig,
    RunConfig,
    load_config,
    rule_of,
    validate,
)

ROOT = Path(__file__).resolve().parents[1]
Q = ROOT / "configs/quickstart.yaml"  # GRPO on a tiny VLM: max_new_tokens 16, group_size 8
G = ROOT / "configs/gui_grounding.yaml"  # an env that reads the model's click coordinates
C = ROOT / "configs/cartpole_ppo.yaml"  # PPO with a critic on an MLP policy: horizon 128, gamma 0.99
JUDGE = "judges.j={kind: generative, path: /models/judge}"  # a valid judge, then one bad field of it

# (config, overrides, the field the error must name, what it must say is allowed)
BAD = [
    # the 12 values that ended in a traceback (the 12th, a directory as config path, is test_a_directory_...)
    (Q, ["algo.lr=-1"], "algo.lr", "finite number > 0"),
    (Q, ["algo.lr=.nan"], "algo.lr", "finite number > 0"),
    (Q, ["rollout.top_k=-1"], "rollout.top_k", "integer >= 0"),
    (Q, ["rollout.max_new_tokens=0"], "rollout.max_new_tokens", "integer >= 1"),
    (Q, ["rollout.batch_size=0"], "rollout.batch_size", "integer >= 1"),
    (Q, ["algo.minibatch_size=0"], "algo.minibatch_size", "integer >= 1"),
    (Q, ["env.max_turns=0"], "env.max_turns", "integer >= 1 or null"),
    (Q, ["seed=-1"], "seed", "integer in [0, 2**64 - 1]"),
    (Q, ["threads=-1"], "threads", "integer >= 0"),
    (Q, ["model.dtype=float8"], "model.dtype", "one of float32 | bfloat16 | float16"),
    (Q, ["model.device=tpu"], "model.device", "one of auto | cpu | cuda | cuda:N | mps"),
    # the values that were accepted silently (train.steps=0 is valid: test_train_steps_0_evaluates_only)
    (Q, ["train.steps=-5"], "train.steps", "integer >= 0"),
    (Q, ["algo.group_size=1"], "algo.group_size", "integer >= 2"),
    (Q, ["algo.group_size=0"], "algo.group_size", "integer >= 2"),
    (Q, ["algo.prompts_per_step=0"], "algo.prompts_per_step", "integer >= 1"),
    (Q, ["algo.epochs=0"], "algo.epochs", "integer >= 1"),
    (Q, ["rollout.temperature=-1"], "rollout.temperature", "finite number > 0"),
    (Q, ["rollout.temperature=0"], "rollout.temperature", "finite number > 0"),
    (Q, ["rollout.top_p=2"], "rollout.top_p", "finite number in (0, 1]"),
    (Q, ["algo.clip_low=-1"], "algo.clip_low", "finite number in [0, 1] or null"),
    (Q, ["train.save_every=-1"], "train.save_every", "integer >= 0"),
    (Q, ["train.eval_size=0"], "train.eval_size", "integer >= 1"),
    (Q, ["warmup.targets=everything"], "warmup.targets", "one of format | answer | solution | truth"),
    (Q, ["warmup.targets=truth", "warmup.turns=2"], "warmup.turns", "1 with targets 'truth'"),
    # every other kind of rule: non-finite numbers, bounds, enumerations, names, paths, mappings, relations
    (Q, ["algo.lr=.inf"], "algo.lr", "finite number > 0"),
    (Q, ["algo.lr=-.inf"], "algo.lr", "finite number > 0"),
    (Q, ["algo.lr=inf"], "algo.lr", "finite number > 0"),
    (Q, ["algo.weight_decay=-0.1"], "algo.weight_decay", "finite number >= 0"),
    (Q, ["algo.max_grad_norm=0"], "algo.max_grad_norm", "finite number > 0"),
    (Q, ["algo.clip_low=1.5"], "algo.clip_low", "finite number in [0, 1] or null"),
    (Q, ["algo.clip_high=-0.2"], "algo.clip_high", "finite number >= 0 or null"),
    (Q, ["algo.clip_high=.nan"], "algo.clip_high", "finite number >= 0 or null"),
    (Q, ["algo.kl_coef=-0.01"], "algo.kl_coef", "finite number >= 0"),
    (Q, ["algo.kl_kind=k4"], "algo.kl_kind", "one of k1 | k2 | k3"),
    (Q, ["algo.agg=mean"], "algo.agg", "one of token-mean | seq-mean-token-mean"),
    (Q, ["algo.entropy_coef=-0.01"], "algo.entropy_coef", "finite number >= 0"),
    (Q, ["algo.critic_lr=0"], "algo.critic_lr", "finite number > 0 or null"),
    (Q, ["algo.adv_eps=-1e-6"], "algo.adv_eps", "finite number >= 0"),
    (Q, ["algo.dual_clip=0.5"], "algo.dual_clip", "finite number > 1 or null"),
    (Q, ["algo.agg_constant=0"], "algo.agg_constant", "finite number > 0 or null"),
    (Q, ["algo.step_adv_weight=-1"], "algo.step_adv_weight", "finite number >= 0"),
    (Q, ["algo.kl_target=0"], "algo.kl_target", "finite number > 0 or null"),
    (Q, ["algo.kl_horizon=0"], "algo.kl_horizon", "integer >= 1"),
    (Q, ["algo.tis_cap=0.5"], "algo.tis_cap", "finite number >= 1 or null"),
    (Q, ["algo.vppo_top_frac=1.5"], "algo.vppo_top_frac", "finite number in [0, 1]"),
    (Q, ["algo.vppo_mask_prob=-0.5"], "algo.vppo_mask_prob", "finite number in [0, 1]"),
    (Q, ["algo.top_entropy_q=0"], "algo.top_entropy_q", "finite number in (0, 1]"),
    (Q, ["algo.max_sampling_batches=0"], "algo.max_sampling_batches", "integer >= 1"),
    (Q, ["algo.overlong_cache=-1"], "algo.overlong_cache", "integer >= 0"),
    (Q, ["algo.overlong_cache=16"], "algo.overlong_cache", "integer < rollout.max_new_tokens"),
    (Q, ["algo.overlong_penalty=-1"], "algo.overlong_penalty", "finite number >= 0"),
    (Q, ["algo.replay_capacity=-1"], "algo.replay_capacity", "integer >= 0"),
    (Q, ["algo.replay_max_zero_frac=2"], "algo.replay_max_zero_frac", "finite number in [0, 1]"),
    (Q, ["algo.temporal_contrast=-0.3"], "algo.temporal_contrast", "finite number >= 0"),
    (Q, ["algo.temporal_contrast_ratio=0"], "algo.temporal_contrast_ratio", "finite number > 0"),
    (Q, ["algo.temporal_contrast_samples=0"], "algo.temporal_contrast_samples", "integer >= 1 or null"),
    (Q, ["algo.temporal_contrast=0.3", "env.max_turns=2"], "algo.temporal_contrast", "unless env.max_turns is 1"),
    (Q, ["algo.temporal_contrast=0.3", "rewards={}"], "algo.temporal_contrast", "0 (off) unless `rewards` is set"),
    (Q, ["algo.advantage=' '"], "algo.advantage", "non-empty name"),
    (Q, ["algo.loss=''"], "algo.loss", "non-empty name"),
    (Q, ["rollout.temperature=.inf"], "rollout.temperature", "finite number > 0"),
    (Q, ["rollout.top_p=0"], "rollout.top_p", "finite number in (0, 1]"),
    (Q, ["env.pool=threads"], "env.pool", "one of sync | async"),
    (Q, ["env.id=''"], "env.id", "non-empty name"),
    (Q, ["model.coordinate_convention=xyxy"], "model.coordinate_convention", "one of qwen2_5_vl | qwen2_vl"),
    (Q, ["model.min_pixels=0"], "model.min_pixels", "integer >= 1 or null"),
    (Q, ["model.min_pixels=200", "model.max_pixels=100"], "model.max_pixels", "integer >= model.min_pixels"),
    (Q, ["model.device=cuda:x"], "model.device", "one of auto | cpu | cuda | cuda:N | mps"),
    (Q, ["model.path=''"], "model.path", "non-empty path"),
    (Q, ["model.tiny_preset=''"], "model.tiny_preset", "non-empty name"),
    (Q, ["policy.kind=''"], "policy.kind", "non-empty name"),
    (Q, ["warmup.steps=-1"], "warmup.steps", "integer >= 0"),
    (Q, ["warmup.batch_size=0"], "warmup.batch_size", "integer >= 1"),
    (Q, ["warmup.lr=0"], "warmup.lr", "finite number > 0"),
    (Q, ["train.eval_every=-25"], "train.eval_every", "integer >= 0"),
    (Q, ["train.log_every=0"], "train.log_every", "integer >= 1"),
    (Q, ["train.keep_checkpoints=-1"], "train.keep_checkpoints", "integer >= 0"),
    (Q, ["train.output_dir=''"], "train.output_dir", "non-empty path"),
    (Q, ["train.max_bad_steps=0"], "train.max_bad_steps", "integer >= 1"),
    (Q, ["train.nonfinite_rewards=ignore"], "train.nonfinite_rewards", "one of error | drop"),
    (Q, ["name=../elsewhere"], "name", "non-empty directory name"),
    (Q, ["name=a/b"], "name", "non-empty directory name"),
    (Q, ["name='..'"], "name", "non-empty directory name"),
    (Q, ["seed=18446744073709551616"], "seed", "integer in [0, 2**64 - 1]"),
    (Q, ["rewards.accuracy=.nan"], "rewards.accuracy", "finite number"),
    (Q, ["rewards.format_answer=-.inf"], "rewards.format_answer", "finite number"),
    (Q, ["judges.j={kind: generative}"], "judges.j.path", "non-empty path"),
    (Q, [JUDGE, "judges.j.kind=reward"], "judges.j.kind", "one of generative | process"),
    (Q, [JUDGE, "judges.j.mode=grade"], "judges.j.mode", "one of score | compare"),
    (Q, [JUDGE, "judges.j.aggregate=max"], "judges.j.aggregate", "one of min | mean | last | product"),
    (Q, [JUDGE, "judges.j.max_new_tokens=0"], "judges.j.max_new_tokens", "integer >= 1"),
    (Q, [JUDGE, "judges.j.batch_size=-8"], "judges.j.batch_size", "integer >= 1"),
    (Q, [JUDGE, "judges.j.device=gpu"], "judges.j.device", "one of auto | cpu | cuda | cuda:N | mps"),
    (Q, [JUDGE, "judges.j.step_tag=''"], "judges.j.step_tag", "non-empty string"),
    (Q, [JUDGE, "judges.j.good=ok", "judges.j.bad=ok"], "judges.j.bad", "a token other than the judge's `good`"),
    (C, ["algo.lr=0"], "algo.lr", "finite number > 0"),
    (C, ["algo.gamma=1.5"], "algo.gamma", "finite number in [0, 1] or null"),
    (C, ["algo.lam=-0.1"], "algo.lam", "finite number in [0, 1]"),
    (C, ["algo.vf_coef=.nan"], "algo.vf_coef", "finite number >= 0"),
    (C, ["algo.vf_clip=0"], "algo.vf_clip", "finite number > 0 or null"),
    (C, ["algo.epochs=-4"], "algo.epochs", "integer >= 1"),
    (C, ["algo.minibatch_size=0"], "algo.minibatch_size", "integer >= 1"),
    (C, ["rollout.horizon=-128"], "rollout.horizon", "integer >= 0"),
    (C, ["rollout.batch_size=0"], "rollout.batch_size", "integer >= 1"),
    (C, ["env.max_turns=-1"], "env.max_turns", "integer >= 1 or null"),
    (C, ["train.steps=-1"], "train.steps", "integer >= 0"),
    (C, ["train.eval_size=0"], "train.eval_size", "integer >= 1"),
    (C, ["seed=-3"], "seed", "integer in [0, 2**64 - 1]"),
    (C, ["algo.temporal_contrast=0.3"], "algo.temporal_contrast", "0 (off) unless policy.kind is vlm"),
    # an env reading the model's coordinates in another frame than the model writes them in
    (G, ["model.coordinate_convention=qwen2_vl"], "model.coordinate_convention", "equal to env.kwargs.coordinate_convention"),
    (G, ["env.eval_kwargs.max_pixels=50176"], "model.max_pixels", "equal to env.kwargs.max_pixels"),
    (G, ["env.kwargs.min_pixels=3136"], "model.min_pixels", "equal to env.kwargs.min_pixels"),
]


@pytest.mark.parametrize("config, overrides, field, allowed", BAD, ids=[" ".join(b[1]) for b in BAD])
def test_a_bad_value_is_one_line_naming_the_field_and_what_it_allows(config, overrides, field, allowed):
    with pytest.raises(ConfigError) as err:
        load_config(config, overrides)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{field}: must be "), message
    assert allowed in message and ", got " in message, message


def test_the_table_covers_the_configs_and_many_fields():
    assert len(BAD) >= 40
    assert {b[0] for b in BAD} == {Q, C, G}
    assert len({b[2] for b in BAD}) >= 40


def test_train_steps_0_evaluates_only():
    """``fit`` with steps=0 runs the warm-up and the held-out evaluation and writes a summary whose "after RL" values
    are the first evaluation's: a meaningful run, so 0 is allowed; negative step counts are not (BAD)."""
    assert load_config(Q, ["train.steps=0"]).train.steps == 0


@pytest.mark.parametrize("overrides", [
    ["algo.clip_low=null", "algo.clip_high=4.0"], ["algo.gamma=0", "algo.lam=1"], ["model.device=cuda:1"],
    ["model.device=mps"], ["algo.kl_kind=low_var_kl"], ["model.min_pixels=3136", "model.max_pixels=3136"],
    ["algo.overlong_cache=15"], ["rewards.format=-0.5"], ["env.max_turns=null"], ["train.keep_checkpoints=0"],
    [JUDGE, "judges.j.kind=process", "judges.j.step_tag='\n\n'"],
    ["algo.temporal_contrast=0.3", "algo.temporal_contrast_samples=null"], ["seed=18446744073709551615"],
    ["algo.lr=1e-5"],
])  # fmt: skip
def test_edge_values_that_are_allowed(overrides):
    load_config(Q, overrides)


def test_every_shipped_config_validates():
    paths = sorted((ROOT / "configs").glob("*.yaml"))
    assert Q in paths and C in paths
    for path in paths:
        assert validate(load_config(path)) is not None, path
    validate(RunConfig())  # the defaults too


def _config_classes() -> list[type]:
    """RunConfig and every dataclass reachable from its fields (sections; JudgeConfig through ``judges``)."""
    out, todo = [], [RunConfig]
    while todo:
        cls = todo.pop()
        out.append(cls)
        for tp in typing.get_type_hints(cls).values():
            for t in (tp, *typing.get_args(tp)):
                if dataclasses.is_dataclass(t) and t not in out and t not in todo:
                    todo.append(t)
    return out


def test_every_field_of_every_config_class_has_a_rule():
    """A new field without a rule fails here: its annotation must read ``Annotated[type, RULE]``."""
    classes = _config_classes()
    assert JudgeConfig in classes and AlgoConfig in classes and len(classes) == 9
    for cls in classes:
        hints = typing.get_type_hints(cls, include_extras=True)
        for f in dataclasses.fields(cls):
            assert rule_of(hints[f.name]) is not None, f"{cls.__name__}.{f.name} has no validation rule"


def test_a_config_built_in_code_is_validated_the_same_way():
    with pytest.raises(ConfigError, match=r"^algo\.lr: must be a finite number > 0, got -1\.0$"):
        validate(RunConfig(algo=AlgoConfig(lr=-1.0)))
    with pytest.raises(ConfigError, match=r"^judges\.x\.path: must be a non-empty path, got ''$"):
        validate(RunConfig(judges={"x": JudgeConfig()}))
    with pytest.raises(ConfigError, match=r"^epochs: must be an integer >= 1, got 0$"):
        validate(AlgoConfig(epochs=0))


def test_the_enumerations_are_those_the_code_accepts():
    """Each set is spelled once more in mmrl.config (the bottom layer imports none of these modules): keep them equal."""
    import torch

    from mmrl.algos import kl, losses
    from mmrl.models.hf import resolve_device, resolve_dtype
    from mmrl.policies.vlm import warmup
    from mmrl.rollout import pool
    from mmrl.trainer import scoring
    from rewards import coords, judges

    assert AGG_MODES == losses.AGG_MODES
    assert set(KL_KINDS) == set(kl.KL_KINDS)
    assert WARMUP_TARGETS == warmup.TARGETS
    assert POOL_MODES == pool.POOL_MODES
    assert NONFINITE_REWARDS == scoring.NONFINITE
    assert set(COORDINATE_CONVENTIONS) == set(coords.CONVENTIONS)
    assert set(JUDGE_AGGREGATES) == set(judges.AGGREGATES)
    assert JUDGE_KINDS == ("generative", "process")  # mmrl.trainer.build.register_judges
    for dtype in DTYPES:
        assert isinstance(resolve_dtype(dtype), torch.dtype)
    for device in ("auto", "cpu", "cuda", "cuda:1", "mps"):  # every form the device rule allows is a torch device
        assert isinstance(resolve_device(device), torch.device)
    for mode in JUDGE_MODES:
        judges.GenerativeJudge(lambda prompts, images: [""] * len(prompts), mode=mode)
    with pytest.raises(ValueError):
        judges.GenerativeJudge(lambda prompts, images: [], mode="grade")


def test_a_directory_or_unreadable_config_path_is_one_line(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"^config file .*configs is a directory, not a YAML file$"):
        load_config(ROOT / "configs")
    (tmp_path / "child.yaml").write_text("base: .\n")  # a base that is a directory
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path / "child.yaml")
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00name")
    with pytest.raises(ConfigError, match=r"binary\.yaml: not UTF-8 text$"):
        load_config(tmp_path / "binary.yaml")
    locked = tmp_path / "locked.yaml"
    locked.write_text("name: x\n")

    def denied(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", denied)  # chmod 000 does not stop root
    with pytest.raises(ConfigError) as err:
        load_config(locked)
    assert str(err.value) == f"config file {locked}: cannot read it (Permission denied)"


def test_a_huge_integer_for_a_float_field_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^algo\.lr: expected a number, got an integer too large for a float$"):
        load_config(Q, ["algo.lr=1" + "0" * 400])


def test_the_cli_rejects_a_bad_value_before_any_file_is_written(tmp_path, capsys):
    from mmrl.cli import main

    code = main(["train", str(Q), f"train.output_dir={tmp_path}", "model.build_tiny=true", "algo.lr=-1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == "mmrl: error: algo.lr: must be a finite number > 0, got -1.0"
    assert not any(tmp_path.iterdir())
