"""Typed run configuration: dataclasses loaded from YAML, with ``key=value`` overrides from the command line.

Every field is documented in one line. An unknown or mistyped key is a one-line :class:`ConfigError` that names the key and
suggests the closest valid one.

Example:
    >>> cfg = load_config("configs/quickstart.yaml", ["algo.lr=1e-5", "train.steps=10"])
    >>> cfg.algo.lr
    1e-05
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A bad configuration: the message is one line naming the offending key."""


# ----------------------------------------------------------------------------------------------------------------- schema
@dataclass
class PolicyConfig:
    kind: str = "vlm"  # policy family in the mmrl.policies registry: vlm (a Hugging Face VLM, set up by `model`) | mlp (actor-critic MLPs)
    kwargs: dict[str, Any] = field(default_factory=dict)  # the family's own options, checked by its config class (mlp: hidden, log_std_init, normalize_obs)


@dataclass
class ModelConfig:
    path: str = "runs/tiny-qwen2_5_vl"  # local Hugging Face checkpoint directory (never fetched from a hub)
    build_tiny: bool = False  # build the offline tiny Qwen2.5-VL into `path` first if it does not exist
    tiny_preset: str = "default"  # size preset of the tiny builder (see mmrl.models.tiny.PRESETS)
    dtype: str = "float32"  # float32 | bfloat16 | float16; float32 on CPU keeps generation and recompute log-probs equal
    device: str = "auto"  # auto (cuda if available) | cpu | cuda | cuda:N
    min_pixels: int | None = None  # override the image processor's minimum pixels per image
    max_pixels: int | None = None  # override the image processor's maximum pixels per image
    coordinate_convention: str = "qwen2_5_vl"  # qwen2_5_vl (resized-image pixels) | qwen2_vl / qwen3_vl (0-1000)


@dataclass
class EnvConfig:
    id: str = "synthetic_vqa"  # env name in the envs registry (envs.make)
    kwargs: dict[str, Any] = field(default_factory=dict)  # constructor arguments, checked by the env's own config class
    eval_kwargs: dict[str, Any] = field(default_factory=dict)  # overrides for the held-out eval env (e.g. another split)
    max_turns: int | None = 1  # steps (turns) per episode before the collector truncates it; None = the env decides
    pool: str = "sync"  # sync: envs in this process (Gymnasium SyncVectorEnv) | async: one worker process per env (AsyncVectorEnv)
    normalize_reward: bool = False  # training envs: divide rewards by the running std of the discounted return (gamma = algo.gamma), clip to [-10, 10]


@dataclass
class RolloutConfig:
    temperature: float = 1.0  # sampling temperature; 1.0 keeps behaviour log-probs those of the policy itself
    top_p: float = 1.0  # nucleus sampling threshold (1.0 = off)
    top_k: int = 0  # top-k sampling (0 = off)
    max_new_tokens: int = 32  # generation budget per turn
    batch_size: int = 64  # envs in the pool, acted on together in one policy call (memory knob); the eval pool has as many
    horizon: int = 0  # env steps per env per rollout, episodes continuing across rollouts (PPO on Gymnasium tasks); 0 = whole episodes, prompts_per_step x group_size of them


@dataclass
class AlgoConfig:
    advantage: str = "grpo"  # advantage estimator name in mmrl.algos.advantages
    loss: str = "ppo_clip"  # policy loss name in mmrl.algos.losses
    agg: str = "token-mean"  # loss aggregation: token-mean | seq-mean-token-mean | seq-mean-token-sum | seq-mean-token-sum-norm
    group_size: int = 8  # G samples per prompt (GRPO group)
    prompts_per_step: int = 8  # prompts per rollout batch; batch = prompts_per_step x group_size
    epochs: int = 2  # PPO epochs over each rollout batch
    minibatch_size: int = 32  # sequences per optimizer step
    lr: float = 1e-4  # AdamW learning rate
    weight_decay: float = 0.0  # AdamW weight decay
    max_grad_norm: float = 1.0  # gradient clipping norm
    lr_decay: bool = False  # decay every learning rate linearly to 0 over train.steps (CleanRL's anneal_lr)
    clip_low: float | None = None  # lower clip epsilon; None = the loss's default (ppo_clip 0.2, gspo 3e-4, cispo no bound)
    clip_high: float | None = None  # upper clip epsilon (clip-higher, DAPO https://arxiv.org/abs/2503.14476); None = the loss's default (0.28, 4e-4, 4.0)
    kl_coef: float = 0.0  # coefficient of the KL-to-reference loss term; 0 loads no reference model
    kl_kind: str = "k3"  # KL estimator: k1 | k2 | k3 (low-variance, http://joschu.net/blog/kl-approx.html)
    entropy_coef: float = 0.0  # entropy bonus coefficient
    vf_coef: float = 0.5  # coefficient of the critic's value loss; used only when the batch carries `returns` (PPO with a critic)
    critic_lr: float | None = None  # learning rate of the VLM value model (algo.advantage=gae); None = algo.lr
    vf_clip: float | None = None  # PPO value clipping: V_old + clip(V - V_old, -c, c) (CleanRL's clip_vloss uses c = 0.2, its policy clip); None = off
    norm_adv: bool = False  # whiten advantages per minibatch (CleanRL's norm_adv, for GAE); off for group-normalised estimators
    adv_eps: float = 1e-6  # epsilon in the std normalisation of group advantages
    dual_clip: float | None = None  # dual-clip constant c > 1 bounding the loss of A < 0 tokens (https://arxiv.org/abs/1912.09729); None = off
    agg_constant: float | None = None  # normaliser override for algo.agg (seq-mean-token-sum-norm: None = mask width; Dr.GRPO max length, GUI-G1 64)
    gamma: float | None = None  # discount of token/step returns (reinforce_pp, gae, gigpo, step_episode); None = the estimator's default
    lam: float = 0.95  # GAE lambda (https://arxiv.org/abs/1506.02438)
    step_adv_weight: float = 1.0  # weight of the step-level advantage in gigpo / step_episode (https://arxiv.org/abs/2505.10978)
    kl_in_reward: bool = False  # put the KL penalty (kl_coef, kl_kind) in the token rewards (REINFORCE++ style) instead of the loss
    kl_target: float | None = None  # target KL of the adaptive KL coefficient (https://arxiv.org/abs/1909.08593); None = fixed coefficient
    kl_horizon: int = 10000  # horizon of the adaptive KL controller
    tis_cap: float | None = None  # truncated IS cap C for rollout-engine/trainer mismatch (https://fengyao.notion.site/off-policy-rl); None = off
    vppo_top_frac: float = 0.0  # VPPO (https://arxiv.org/abs/2510.09285): train only this top fraction of each response's most image-dependent tokens, rows scaled by their dependency; 0 = off
    vppo_mask_prob: float = 0.5  # VPPO: probability that each patch of the perturbed image is blackened
    top_entropy_q: float = 1.0  # only the top-q entropy tokens get gradient ("80/20", https://arxiv.org/abs/2506.01939); 1.0 = all tokens
    dynamic_sampling: bool = False  # DAPO dynamic sampling: drop groups with all-equal rewards and resample (https://arxiv.org/abs/2503.14476)
    max_sampling_batches: int = 10  # rollout batches dynamic sampling may draw per step before training on a short batch
    overlong_cache: int = 0  # DAPO soft overlong punishment window in tokens before the generation budget (0 = off)
    overlong_penalty: float = 1.0  # magnitude of the full overlong penalty
    replay_capacity: int = 0  # selective sample replay buffer size (VL-Rethinker https://arxiv.org/abs/2504.08837); 0 = off
    replay_max_zero_frac: float = 0.5  # replay stored samples when more than this fraction of groups has zero advantage


@dataclass
class WarmupConfig:
    steps: int = 0  # supervised fine-tuning steps on the env's reference answers before RL (0 = none)
    batch_size: int = 32  # examples per supervised step
    lr: float = 1e-3  # learning rate of the warm-up
    targets: str = "format"  # format: the reference completion with a random answer choice (teaches the format, not the task) | answer: <answer>random choice</answer> only | solution: the reference completion


@dataclass
class TrainConfig:
    steps: int = 50  # RL steps (one rollout batch + its PPO epochs each)
    eval_every: int = 25  # held-out evaluation period in steps (0 = only at the end)
    eval_size: int = 200  # held-out episodes per evaluation (env seeds 0..eval_size-1, greedy / the policy's mode)
    save_every: int = 25  # checkpoint period in steps (0 = only at the end)
    log_every: int = 1  # metrics period in steps
    resume: bool = False  # resume from the latest checkpoint in the run directory
    output_dir: str = "runs"  # parent directory of runs/<name>
    keep_checkpoints: int = 2  # most recent checkpoints kept on disk


@dataclass
class JudgeConfig:
    kind: str = "generative"  # generative: a VLM grades each answer (rewards.GenerativeJudge over mmrl.policies.vlm.judge.PolicyEngine) | process: a VLM scores each reasoning step (rewards.ProcessRewardJudge + mmrl.policies.vlm.judge.VLMStepScorer)
    path: str = ""  # local checkpoint directory of the judge model (loaded like model.path; never fetched)
    mode: str = "score"  # generative: score (a 0-10 grade, normalised to [0, 1]) | compare (1 if the judge says "same" as the reference)
    max_new_tokens: int = 64  # generative: the judge's reply budget
    batch_size: int = 8  # generative: prompts per judge generate call
    aggregate: str = "min"  # process: how step scores become the reward: min | mean | last | product
    step_tag: str = "\n"  # process: the tag appended after each step, whose next-token logits give the step score
    good: str = "+"  # process: the token meaning "this step is correct"
    bad: str = "-"  # process: the token meaning "this step is wrong"
    device: str = "auto"  # device of the judge model


@dataclass
class RunConfig:
    name: str = "run"  # run name: outputs go to <train.output_dir>/<name>
    seed: int = 0  # global seed (torch, numpy, python, env seeds)
    threads: int = 0  # torch CPU threads (0 = torch's default)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    rewards: dict[str, float] = field(default_factory=lambda: {"accuracy": 1.0})  # reward name -> weight (rewards registry)
    judges: dict[str, JudgeConfig] = field(default_factory=dict)  # model-based rewards registered under these names before the envs are built (then usable in `rewards`)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    warmup: WarmupConfig = field(default_factory=WarmupConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.train.output_dir) / self.name


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
            return float(value)
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
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
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
    """Load a YAML file (or defaults when ``path`` is None), apply overrides, and type-check into ``cls``.

    A file may start from another with ``base: quickstart.yaml``: its keys override the base's, section by section.
    """
    data = read_yaml(path) if path is not None else {}
    apply_overrides(data, list(overrides or []))
    return from_dict(cls, data)
