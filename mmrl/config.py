"""Typed run configuration: dataclasses loaded from YAML, with ``key=value`` overrides from the command line.

Every field is documented in one line, its rule (the values it allows) beside it. An unknown or mistyped key is a
one-line :class:`ConfigError` that names the key and suggests the closest valid one; a value out of its range or set is
one too, ``algo.lr: must be a finite number > 0, got -1.0``, raised by :func:`load_config` before any run starts.

Example:
    >>> cfg = load_config("configs/quickstart.yaml", ["algo.lr=1e-5", "train.steps=10"])
    >>> cfg.algo.lr
    1e-05
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import operator
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import yaml


class ConfigError(ValueError):
    """A bad configuration: the message is one line naming the offending key."""


# ------------------------------------------------------------------------------------------------------------- rules
# Every field carries its rule in its annotation, beside its doc comment: ``lr: Annotated[float, POSITIVE] = 1e-4``.
# :func:`validate` (run by :func:`load_config`) checks them all, then the few relations between fields (``RELATIONS``).
# Names resolved in registries (env ids, rewards, estimators, losses, policy families) are only checked to be non-empty
# here: the registries live in the layers above, and the trainer checks the names before anything is built.
@dataclass(frozen=True)
class Rule:
    """The values one field allows: ``ok(value)`` decides, ``text`` names them in the error. ``item``: the rule of each
    value of a mapping field. ``None`` passes wherever the field's type allows it (``X | None``)."""

    ok: Callable[[Any], bool]
    text: str
    item: Rule | None = None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _within(v: float, lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> bool:
    return (lo is None or (v > lo if lo_open else v >= lo)) and (hi is None or (v < hi if hi_open else v <= hi))


def _range_text(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f" in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f" {'>' if lo_open else '>='} {lo}"
    return "" if hi is None else f" {'<' if hi_open else '<='} {hi}"


def number(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False) -> Rule:
    """A finite number (NaN and inf are refused) within the bounds: ``number(0, lo_open=True)`` is ``> 0``."""

    def ok(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and _within(v, lo, hi, lo_open, hi_open)

    return Rule(ok, "a finite number" + _range_text(lo, hi, lo_open, hi_open))


def integer(lo: int, hi: int | None = None, note: str = "") -> Rule:
    """An integer in ``[lo, hi]`` (``hi`` None: no upper bound); ``note`` says why, in the error."""
    text = "an integer" + _range_text(lo, hi, False, False) + (f" ({note})" if note else "")
    return Rule(lambda v: _is_int(v) and _within(v, lo, hi, False, False), text)


def one_of(*choices: str) -> Rule:
    return Rule(lambda v: v in choices, "one of " + " | ".join(choices))


def each(rule: Rule) -> Rule:
    """A mapping ``name -> value`` whose every value follows ``rule`` (errors name ``<field>.<name>``)."""
    return Rule(lambda v: isinstance(v, dict), f"a mapping of names to {rule.text}", item=rule)


POSITIVE = number(0, lo_open=True)  # learning rates, coefficients that divide
NON_NEGATIVE = number(0)  # coefficients and weights (0 = off)
FRACTION = number(0, 1)  # probabilities, fractions, discounts, clip epsilons below 1
FINITE = number()  # reward weights (a negative weight is a penalty)
SIZE = integer(1)  # sizes, budgets and periods that must be positive
COUNT = integer(0)  # counts and periods where 0 means none / off / the default (said in the field's comment)
SEED = Rule(lambda v: _is_int(v) and 0 <= v < 2**64, "an integer in [0, 2**64 - 1] (torch.manual_seed's range)")
FLAG = Rule(lambda v: isinstance(v, bool), "true or false")
NAME = Rule(lambda v: isinstance(v, str) and v.strip() != "", "a non-empty name (the registry is checked when the run is built)")
TEXT = Rule(lambda v: isinstance(v, str) and v != "", "a non-empty string")
PATH = Rule(lambda v: isinstance(v, str) and v != "" and "\0" not in v, "a non-empty path")
RUN_NAME = Rule(lambda v: isinstance(v, str) and v not in ("", ".", "..") and not any(c in v for c in "/\\\0"),
                "a non-empty directory name (no '/' or '\\', not '.' or '..')")  # fmt: skip
OPTIONS = Rule(lambda v: isinstance(v, dict), "a mapping (checked by the env's or the family's own config class)")
SECTION = Rule(dataclasses.is_dataclass, "a section")  # validated field by field
DEVICE = Rule(lambda v: isinstance(v, str) and re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v) is not None,
              "one of auto | cpu | cuda | cuda:N | mps")  # fmt: skip
# the enumerations, each as the code that reads the field spells it (tests/test_config_validation.py checks they agree)
DTYPES = ("float32", "bfloat16", "float16")  # mmrl.models.hf.resolve_dtype
COORDINATE_CONVENTIONS = ("qwen2_5_vl", "qwen2_vl", "qwen3_vl", "pixel", "normalized")  # rewards.coords.CONVENTIONS
POOL_MODES = ("sync", "async")  # mmrl.rollout.pool.POOL_MODES
AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")  # losses.AGG_MODES
KL_KINDS = ("k1", "k2", "k3", "kl", "mse", "low_var_kl")  # mmrl.algos.kl.KL_KINDS (the last three are aliases)
WARMUP_TARGETS = ("format", "answer", "solution", "truth")  # mmrl.policies.vlm.warmup.TARGETS
NONFINITE_REWARDS = ("error", "drop")  # mmrl.trainer.scoring.NONFINITE
JUDGE_KINDS = ("generative", "process")  # mmrl.trainer.build.register_judges
JUDGE_MODES = ("score", "compare")  # rewards.judges.GenerativeJudge
JUDGE_AGGREGATES = ("min", "mean", "last", "product")  # rewards.judges.AGGREGATES


# ----------------------------------------------------------------------------------------------------------------- schema
@dataclass
class PolicyConfig:
    kind: Annotated[str, NAME] = "vlm"  # policy family in the mmrl.policies registry: vlm (a Hugging Face VLM, set up by `model`) | mlp (actor-critic MLPs) | flow | diffusion (action-chunk policies, set up by `policy.kwargs`) | pi0 (a Qwen2.5-VL prefix + the flow action expert: `model` and `policy.kwargs`) | token_vla (a VLM writing actions as bin tokens)
    kwargs: Annotated[dict[str, Any], OPTIONS] = field(default_factory=dict)  # the family's own options, checked by its config class (mlp: hidden, log_std_init, normalize_obs)


@dataclass
class ModelConfig:
    path: Annotated[str, PATH] = "runs/tiny-qwen2_5_vl"  # local Hugging Face checkpoint directory (never fetched from a hub)
    build_tiny: Annotated[bool, FLAG] = False  # build the offline tiny Qwen2.5-VL into `path` first if it does not exist
    tiny_preset: Annotated[str, NAME] = "default"  # size preset of the tiny builder (see mmrl.models.tiny.PRESETS)
    dtype: Annotated[str, one_of(*DTYPES)] = "float32"  # float32 | bfloat16 | float16; float32 on CPU keeps generation and recompute log-probs equal
    device: Annotated[str, DEVICE] = "auto"  # auto (cuda if available) | cpu | cuda | cuda:N | mps
    min_pixels: Annotated[int | None, SIZE] = None  # override the image processor's minimum pixels per image
    max_pixels: Annotated[int | None, SIZE] = None  # override the image processor's maximum pixels per image
    history_images: Annotated[int | None, SIZE] = None  # multi-turn: keep the last k images of an episode in the context, older ones replaced by a short placeholder; each turn is then a training row of its own (None = keep all)
    max_context_tokens: Annotated[int | None, SIZE] = None  # multi-turn: a turn whose prompt + rollout.max_new_tokens would exceed this ends the episode as truncated (counted); None = no limit
    coordinate_convention: Annotated[str, one_of(*COORDINATE_CONVENTIONS)] = "qwen2_5_vl"  # qwen2_5_vl (resized-image pixels) | qwen2_vl / qwen3_vl (0-1000) | pixel (original) | normalized (0-1)


@dataclass
class EnvConfig:
    id: Annotated[str, NAME] = "synthetic_vqa"  # env name in the envs registry (envs.make)
    kwargs: Annotated[dict[str, Any], OPTIONS] = field(default_factory=dict)  # constructor arguments, checked by the env's own config class
    eval_kwargs: Annotated[dict[str, Any], OPTIONS] = field(default_factory=dict)  # overrides for the held-out eval env (e.g. another split)
    max_turns: Annotated[int | None, SIZE] = 1  # steps (turns) per episode before the collector truncates it; None = the env decides
    pool: Annotated[str, one_of(*POOL_MODES)] = "sync"  # sync: envs in this process (Gymnasium SyncVectorEnv) | async: one worker process per env (AsyncVectorEnv)
    normalize_reward: Annotated[bool, FLAG] = False  # training envs: divide rewards by the running std of the discounted return (gamma = algo.gamma), clip to [-10, 10]
    start_method: Annotated[str, one_of("fork", "spawn", "forkserver")] = "fork"  # how async pool workers start: fork (fast) | spawn / forkserver (needed by simulators such as ManiSkill, whose scene building hangs in a forked child)
    step_timeout: Annotated[float | None, POSITIVE] = None  # async pools: seconds a step or reset may take before the workers count as hung and are restarted (None = wait)
    max_restarts: Annotated[int, COUNT] = 3  # failures in a row an env (or the worker pool) may have before the run stops; each failed episode is counted and left out


@dataclass
class RolloutConfig:
    temperature: Annotated[float, POSITIVE] = 1.0  # training sampling temperature, > 0 (evaluation is greedy); 1.0 keeps behaviour log-probs those of the policy itself
    top_p: Annotated[float, number(0, 1, lo_open=True)] = 1.0  # nucleus sampling threshold (1.0 = off)
    top_k: Annotated[int, COUNT] = 0  # top-k sampling (0 = off)
    max_new_tokens: Annotated[int, SIZE] = 32  # generation budget per turn
    batch_size: Annotated[int, SIZE] = 64  # envs in the pool, acted on together in one policy call (memory knob); the eval pool has as many
    horizon: Annotated[int, COUNT] = 0  # env steps per env per rollout, episodes continuing across rollouts (PPO on Gymnasium tasks); 0 = whole episodes, prompts_per_step x group_size of them


@dataclass
class AlgoConfig:
    advantage: Annotated[str, NAME] = "grpo"  # advantage estimator name in mmrl.algos.advantages
    loss: Annotated[str, NAME] = "ppo_clip"  # policy loss name in mmrl.algos.losses
    agg: Annotated[str, one_of(*AGG_MODES)] = "token-mean"  # loss aggregation: token-mean | seq-mean-token-mean | seq-mean-token-sum | seq-mean-token-sum-norm
    group_size: Annotated[int, integer(2, note="a group of one has no baseline")] = 8  # G samples per prompt (GRPO group), >= 2
    prompts_per_step: Annotated[int, SIZE] = 8  # prompts per rollout batch; batch = prompts_per_step x group_size
    epochs: Annotated[int, SIZE] = 2  # PPO epochs over each rollout batch
    minibatch_size: Annotated[int, SIZE] = 32  # sequences per optimizer step
    lr: Annotated[float, POSITIVE] = 1e-4  # AdamW learning rate
    weight_decay: Annotated[float, NON_NEGATIVE] = 0.0  # AdamW weight decay
    max_grad_norm: Annotated[float, POSITIVE] = 1.0  # gradient clipping norm
    lr_decay: Annotated[bool, FLAG] = False  # decay every learning rate linearly to 0 over train.steps (CleanRL's anneal_lr)
    clip_low: Annotated[float | None, FRACTION] = None  # lower clip epsilon; None = the loss's default (ppo_clip 0.2, gspo 3e-4, cispo no bound)
    clip_high: Annotated[float | None, NON_NEGATIVE] = None  # upper clip epsilon (clip-higher, DAPO https://arxiv.org/abs/2503.14476); None = the loss's default (0.28, 4e-4, 4.0)
    kl_coef: Annotated[float, NON_NEGATIVE] = 0.0  # coefficient of the KL-to-reference loss term; 0 loads no reference model
    kl_kind: Annotated[str, one_of(*KL_KINDS)] = "k3"  # KL estimator: k1 | k2 | k3 (low-variance, http://joschu.net/blog/kl-approx.html); aliases kl, mse, low_var_kl
    entropy_coef: Annotated[float, NON_NEGATIVE] = 0.0  # entropy bonus coefficient
    vf_coef: Annotated[float, NON_NEGATIVE] = 0.5  # coefficient of the critic's value loss; used only when the batch carries `returns` (PPO with a critic)
    critic_lr: Annotated[float | None, POSITIVE] = None  # learning rate of the VLM value model (algo.advantage=gae); None = algo.lr
    vf_clip: Annotated[float | None, POSITIVE] = None  # PPO value clipping: V_old + clip(V - V_old, -c, c) (CleanRL's clip_vloss uses c = 0.2, its policy clip); None = off
    norm_adv: Annotated[bool, FLAG] = False  # whiten advantages per minibatch (CleanRL's norm_adv, for GAE); off for group-normalised estimators
    adv_eps: Annotated[float, NON_NEGATIVE] = 1e-6  # epsilon in the std normalisation of group advantages
    dual_clip: Annotated[float | None, number(1, lo_open=True)] = None  # dual-clip constant c > 1 bounding the loss of A < 0 tokens (https://arxiv.org/abs/1912.09729); None = off
    agg_constant: Annotated[float | None, POSITIVE] = None  # normaliser override for algo.agg (seq-mean-token-sum-norm: None = mask width; Dr.GRPO max length, GUI-G1 64)
    gamma: Annotated[float | None, FRACTION] = None  # discount of token/step returns (reinforce_pp, gae, gigpo, step_episode); None = the estimator's default
    lam: Annotated[float, FRACTION] = 0.95  # GAE lambda (https://arxiv.org/abs/1506.02438)
    step_adv_weight: Annotated[float, NON_NEGATIVE] = 1.0  # weight of the step-level advantage in gigpo / step_episode (https://arxiv.org/abs/2505.10978)
    kl_in_reward: Annotated[bool, FLAG] = False  # put the KL penalty (kl_coef, kl_kind) in the token rewards (REINFORCE++ style) instead of the loss
    kl_target: Annotated[float | None, POSITIVE] = None  # target KL of the adaptive KL coefficient (https://arxiv.org/abs/1909.08593); None = fixed coefficient
    kl_horizon: Annotated[int, SIZE] = 10000  # horizon of the adaptive KL controller
    tis_cap: Annotated[float | None, number(1)] = None  # truncated IS cap C for rollout-engine/trainer mismatch (https://fengyao.notion.site/off-policy-rl); None = off
    vppo_top_frac: Annotated[float, FRACTION] = 0.0  # VPPO (https://arxiv.org/abs/2510.09285): train only this top fraction of each response's most image-dependent tokens, rows scaled by their dependency; 0 = off
    vppo_mask_prob: Annotated[float, FRACTION] = 0.5  # VPPO: probability that each patch of the perturbed image is blackened
    top_entropy_q: Annotated[float, number(0, 1, lo_open=True)] = 1.0  # only the top-q entropy tokens get gradient ("80/20", https://arxiv.org/abs/2506.01939); 1.0 = all tokens
    dynamic_sampling: Annotated[bool, FLAG] = False  # DAPO dynamic sampling: drop groups with all-equal rewards and resample (https://arxiv.org/abs/2503.14476)
    max_sampling_batches: Annotated[int, SIZE] = 10  # rollout batches dynamic sampling may draw per step before training on a short batch
    overlong_cache: Annotated[int, COUNT] = 0  # DAPO soft overlong punishment window in tokens before the generation budget (0 = off)
    overlong_penalty: Annotated[float, NON_NEGATIVE] = 1.0  # magnitude of the full overlong penalty
    replay_capacity: Annotated[int, COUNT] = 0  # selective sample replay buffer size (VL-Rethinker https://arxiv.org/abs/2504.08837); 0 = off
    replay_max_zero_frac: Annotated[float, FRACTION] = 0.5  # replay stored samples when more than this fraction of groups has zero advantage
    temporal_contrast: Annotated[float, NON_NEGATIVE] = 0.0  # Video-R1 T-GRPO (https://arxiv.org/abs/2503.21776): bonus to a video group's correct answers when it does about as well on ordered frames as on shuffled ones (paper: 0.3; mmrl.trainer.temporal); 0 = off
    temporal_contrast_ratio: Annotated[float, POSITIVE] = 0.8  # T-GRPO: the bonus is paid when accuracy(ordered) >= this x accuracy(shuffled) (paper: 0.8)
    temporal_contrast_samples: Annotated[int | None, SIZE] = None  # T-GRPO: answers sampled per group on the shuffled frames (scored, never trained on); None = algo.group_size


@dataclass
class WarmupConfig:
    steps: Annotated[int, COUNT] = 0  # supervised fine-tuning steps on the env's reference answers before RL (0 = none)
    batch_size: Annotated[int, SIZE] = 32  # examples per supervised step
    lr: Annotated[float, POSITIVE] = 1e-3  # learning rate of the warm-up
    targets: Annotated[str, one_of(*WARMUP_TARGETS)] = "format"  # format: the reference completion with a random answer choice (teaches the format, not the task) | answer: <answer>random choice</answer> only | solution: the reference completion | truth: <answer>true answer</answer> only (supervised fine-tuning before RL)
    turns: Annotated[int, SIZE] = 1  # turns of each warm-up episode: the env is stepped with each target and the next info["solution"] is the next target (multi-turn envs); 1 = the first turn only


@dataclass
class TrainConfig:
    steps: Annotated[int, COUNT] = 50  # RL steps (one rollout batch + its PPO epochs each); 0 = warm-up and evaluation only
    eval_every: Annotated[int, COUNT] = 25  # held-out evaluation period in steps (0 = only at the end)
    eval_size: Annotated[int, SIZE] = 200  # held-out episodes per evaluation (env seeds 0..eval_size-1, greedy / the policy's mode)
    save_every: Annotated[int, COUNT] = 25  # checkpoint period in steps (0 = only at the end)
    log_every: Annotated[int, SIZE] = 1  # metrics period in steps
    resume: Annotated[bool, FLAG] = False  # resume from the latest checkpoint in the run directory
    output_dir: Annotated[str, PATH] = "runs"  # parent directory of runs/<name>
    keep_checkpoints: Annotated[int, COUNT] = 2  # most recent checkpoints kept on disk (0 = all)
    overwrite: Annotated[bool, FLAG] = False  # start again in a run directory that already holds a run (its checkpoints, metrics and summary are deleted)
    max_bad_steps: Annotated[int, SIZE] = 3  # stop the run after this many steps in a row whose update met a non-finite loss or gradient (those minibatches are skipped)
    nonfinite_rewards: Annotated[str, one_of(*NONFINITE_REWARDS)] = "error"  # a NaN / inf reward: error (stop, naming the reward function) | drop (leave its episode out, counted)
    rollouts_every: Annotated[int, COUNT] = 25  # store a sample of the step's rollouts (images, completions, rewards per function, advantages) in <run>/rollouts/step_NNNNNN/ at step 1 and every this many steps, for `mmrl view RUN_DIR` (0 = never)
    rollouts_samples: Annotated[int, SIZE] = 16  # trajectories per stored sample: the first whole GRPO groups that fit (else the first ones)
    max_bad_rows: Annotated[int, COUNT] = 100  # stop the run once the envs have skipped more data rows than this (rows whose images do not decode; each is logged with its file and line)


@dataclass
class JudgeConfig:
    kind: Annotated[str, one_of(*JUDGE_KINDS)] = "generative"  # generative: a VLM grades each answer (rewards.GenerativeJudge over mmrl.policies.vlm.judge.PolicyEngine) | process: a VLM scores each reasoning step (rewards.ProcessRewardJudge + mmrl.policies.vlm.judge.VLMStepScorer)
    path: Annotated[str, PATH] = ""  # local checkpoint directory of the judge model (loaded like model.path; never fetched)
    mode: Annotated[str, one_of(*JUDGE_MODES)] = "score"  # generative: score (a 0-10 grade, normalised to [0, 1]) | compare (1 if the judge says "same" as the reference)
    max_new_tokens: Annotated[int, SIZE] = 64  # generative: the judge's reply budget
    batch_size: Annotated[int, SIZE] = 8  # generative: prompts per judge generate call
    aggregate: Annotated[str, one_of(*JUDGE_AGGREGATES)] = "min"  # process: how step scores become the reward: min | mean | last | product
    step_tag: Annotated[str, TEXT] = "\n"  # process: the tag appended after each step, whose next-token logits give the step score
    good: Annotated[str, TEXT] = "+"  # process: the token meaning "this step is correct"
    bad: Annotated[str, TEXT] = "-"  # process: the token meaning "this step is wrong"
    device: Annotated[str, DEVICE] = "auto"  # device of the judge model


@dataclass
class RunConfig:
    name: Annotated[str, RUN_NAME] = "run"  # run name: outputs go to <train.output_dir>/<name>
    seed: Annotated[int, SEED] = 0  # global seed (torch, numpy, python, env seeds)
    threads: Annotated[int, COUNT] = 0  # torch CPU threads (0 = torch's default)
    policy: Annotated[PolicyConfig, SECTION] = field(default_factory=PolicyConfig)  # the policy family and its options
    model: Annotated[ModelConfig, SECTION] = field(default_factory=ModelConfig)  # the Hugging Face model (VLM families)
    env: Annotated[EnvConfig, SECTION] = field(default_factory=EnvConfig)  # the env, its pool and episode length
    rewards: Annotated[dict[str, float], each(FINITE)] = field(default_factory=lambda: {"accuracy": 1.0})  # reward name -> weight (rewards registry)
    judges: Annotated[dict[str, JudgeConfig], each(SECTION)] = field(default_factory=dict)  # model-based rewards registered under these names before the envs are built (then usable in `rewards`)
    rollout: Annotated[RolloutConfig, SECTION] = field(default_factory=RolloutConfig)  # sampling and the env pool's size
    algo: Annotated[AlgoConfig, SECTION] = field(default_factory=AlgoConfig)  # advantage estimator, loss and optimiser
    warmup: Annotated[WarmupConfig, SECTION] = field(default_factory=WarmupConfig)  # supervised warm-up before RL
    train: Annotated[TrainConfig, SECTION] = field(default_factory=TrainConfig)  # steps, evaluation, checkpoints, outputs

    @property
    def run_dir(self) -> Path:
        return Path(self.train.output_dir) / self.name


# ------------------------------------------------------------------------------------------------------------ validation
# Relations between fields, checked after every field's own rule: (field, holds(section), what the field must be).
RELATIONS: dict[type, list[tuple[str, Callable[[Any], bool], str]]] = {
    ModelConfig: [
        ("max_pixels", lambda m: None in (m.min_pixels, m.max_pixels) or m.max_pixels >= m.min_pixels,
         "an integer >= model.min_pixels"),
    ],
    JudgeConfig: [("bad", lambda j: j.bad != j.good, "a token other than the judge's `good`")],
    WarmupConfig: [("turns", lambda w: w.targets != "truth" or w.turns == 1,
                    "1 with targets 'truth' (the true final answer is not every turn's target)")],
    RunConfig: [
        ("algo.overlong_cache", lambda c: c.algo.overlong_cache < c.rollout.max_new_tokens,
         "an integer < rollout.max_new_tokens (the window lies inside the generation budget)"),
        # T-GRPO asks the VLM again on shuffled frames and scores the answers on the env's deferred reward columns
        ("algo.temporal_contrast", lambda c: not c.algo.temporal_contrast or c.policy.kind == "vlm",
         "0 (off) unless policy.kind is vlm (the policy answers again on shuffled video frames)"),
        ("algo.temporal_contrast", lambda c: not c.algo.temporal_contrast or c.env.max_turns == 1,
         "0 (off) unless env.max_turns is 1 (single-turn video questions)"),
        ("algo.temporal_contrast", lambda c: not c.algo.temporal_contrast or bool(c.rewards),
         "0 (off) unless `rewards` is set (the shuffled answers are scored on the env's reward columns)"),
        # an env that reads the model's coordinates (GUI, zoom) must read them in the model's frame: one source of truth
        *((f"model.{key}", (lambda c, key=key: _env_agrees(c, key)),
           f"equal to env.kwargs.{key} (and env.eval_kwargs.{key}) where given: the env reads the model's coordinates in that frame")
          for key in ("coordinate_convention", "min_pixels", "max_pixels")),
    ],
}  # fmt: skip


def _env_agrees(cfg: Any, key: str) -> bool:
    """The env's ``key`` (env.kwargs / env.eval_kwargs, when set) equals ``model.<key>`` for a VLM policy."""
    mine = getattr(cfg.model, key)
    given = [kw[key] for kw in (cfg.env.kwargs, cfg.env.eval_kwargs) if key in kw]
    return cfg.policy.kind != "vlm" or all(v == mine for v in given)


def rule_of(tp: Any) -> Rule | None:
    """The :class:`Rule` in a field's ``Annotated[type, rule]`` annotation (None if it has none)."""
    return next((m for m in getattr(tp, "__metadata__", ()) if isinstance(m, Rule)), None)


def _check(rule: Rule | None, value: Any, where: str, optional: bool) -> None:
    if rule is None or (value is None and optional):
        return
    if not rule.ok(value):
        raise ConfigError(f"{where}: must be {rule.text}{' or null' if optional else ''}, got {value!r:.80}")
    if dataclasses.is_dataclass(value):
        validate(value, where)
    if rule.item is not None:
        for key, item in value.items():
            _check(rule.item, item, f"{where}.{key}", False)


def validate(cfg: Any, prefix: str = "") -> Any:
    """Check every field of the config dataclass ``cfg`` (its sections and judges too) against its rule, then the
    ``RELATIONS`` between fields; return ``cfg``.

    Raises:
        ConfigError: one line for the first violation, ``<dotted field>: must be <allowed values>, got <value>``.
    """
    hints = typing.get_type_hints(type(cfg), include_extras=True)
    for f in dataclasses.fields(cfg):
        tp = hints[f.name]
        base = typing.get_args(tp)[0] if typing.get_origin(tp) is Annotated else tp
        optional = type(None) in typing.get_args(base)  # `X | None`: None passes, the error says "or null"
        _check(rule_of(tp), getattr(cfg, f.name), f"{prefix}.{f.name}" if prefix else f.name, optional)
    for name, holds, text in RELATIONS.get(type(cfg), ()):
        if not holds(cfg):
            where = f"{prefix}.{name}" if prefix else name
            raise ConfigError(f"{where}: must be {text}, got {operator.attrgetter(name)(cfg)!r}")
    return cfg


# --------------------------------------------------------------------------------------------------------------- loading
def suggest(key: str, options: list[str]) -> str:
    close = difflib.get_close_matches(key, options, n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else f" (valid: {', '.join(sorted(options))})"


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert ``value`` to the annotated type ``tp``; raise a one-line ConfigError naming ``where``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        return from_dict(tp, value, prefix=where)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        _, vt = typing.get_args(tp) or (Any, Any)
        return {str(k): _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        (et,) = typing.get_args(tp)[:1] or (Any,)
        return [_coerce(v, et, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:  # an integer beyond float range
                raise ConfigError(f"{where}: expected a number, got an integer too large for a float") from None
        if isinstance(value, str):  # PyYAML reads "1e-5" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, checking every key and value type.

    Raises:
        ConfigError: one line naming the first unknown key (with a suggestion) or mistyped value.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        where = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            raise ConfigError(f"unknown config key '{where}'{suggest(str(key), list(fields))}")
        kwargs[key] = _coerce(value, hints[key], where)
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain YAML-ready data."""
    return dataclasses.asdict(cfg)


def _parse_scalar(text: str) -> Any:
    """Parse an override value with YAML rules (``true`` is a bool, ``[1, 2]`` a list, ``null`` None)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides to nested mapping ``data`` (in place) and return it."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value")
        key, text = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{key}': '{part}' is not a section")
        node[parts[-1]] = _parse_scalar(text)
    return data


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``, recursively for nested sections (a mapping value replaces nothing but its keys)."""
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def read_yaml(path: str | Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file as a mapping; ``base: other.yaml`` (relative to the file) is loaded first and overridden."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory, not a YAML file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path}: not UTF-8 text") from None
    except (OSError, ValueError) as e:  # permissions, a NUL in the path, ...
        raise ConfigError(f"config file {path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    if "base" in data:
        base = path.parent / str(data.pop("base"))
        if base.resolve() in seen:
            raise ConfigError(f"{path}: 'base' chain loops back to {base}")
        data = _merge(read_yaml(base, (*seen, path.resolve())), data)
    return data


def load_config(path: str | Path | None, overrides: list[str] | None = None, cls: type = RunConfig) -> Any:
    """Load a YAML file (or defaults when ``path`` is None), apply overrides, type-check into ``cls`` and
    :func:`validate` every value, so that every entry point rejects a bad config before it touches a run directory.

    A file may start from another with ``base: quickstart.yaml``: its keys override the base's, section by section.
    """
    data = read_yaml(path) if path is not None else {}
    apply_overrides(data, list(overrides or []))
    return validate(from_dict(cls, data))
