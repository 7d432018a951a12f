"""Side-by-side speed and memory of one GRPO step: mmrl's ``Trainer.train_step`` vs TRL's ``GRPOTrainer``, same work.

Both systems train the same offline tiny Qwen2.5-VL checkpoint on the same prompts (the quickstart's ``synthetic_vqa``
scenes, drawn from the seeds mmrl's trainer draws for each step, with the same question text, image and chat template),
8 prompts x 8 samples = 64 completions of at most 16 tokens at temperature 1 per RL step, the same reward (``accuracy``
+ 0.1 * ``format_answer`` from the ``rewards`` package, used as TRL reward functions), and 4 optimizer steps per
rollout batch (mmrl: 2 epochs x 64/32 minibatches; TRL: ``steps_per_generation=2`` x ``num_iterations=2`` with
``per_device_train_batch_size=32``). CPU, fp32, no KL reference, no eval, no checkpoints, no logging.

Each system runs in its own subprocess with one torch thread (so peak RSS is per system); the systems alternate
``--repeats`` times and the report gives medians over RL steps (the first ``--skip`` steps of each run are warm-up and
not counted). An RL step is generation + scoring + the updates: mmrl times ``train_step()``; TRL the wall time between
the ends of consecutive groups of 4 optimizer steps (``on_step_end``), its rollout part being
``_generate_and_score_completions`` (wrapped on the instance, not patched). Process CPU time per step is reported
beside wall time: with one thread it shows whether other jobs on the machine inflated the wall times.

Usage:
    python scripts/bench/grpo_vs_trl.py --steps 8 --repeats 3 --out runs/bench/grpo_vs_trl.json
    python scripts/bench/grpo_vs_trl.py --steps 1 --skip 0 --repeats 1 --in-process   # smoke test (shared peak RSS)

Prints a markdown table and writes the per-run figures and the settings to ``--out`` (JSON). Results: BENCHMARKS.md,
section "GRPO step vs TRL GRPOTrainer (same tiny model, same work)".

Working around the missing torchvision (TRL's VLM path wants a ``Qwen2_5_VLProcessor``): ``AutoProcessor`` fails
because the video processor needs torchvision, and ``Qwen2_5_VLProcessor(video_processor=None)`` fails in
``ProcessorMixin.check_argument_for_proper_class`` (it looks up ``VideoProcessorMixin``, absent without torchvision).
:class:`ImageOnlyQwenProcessor` skips that check for the absent video processor only; everything else is
transformers' own processor (the PIL image processor, image-pad expansion, chat template). The script checks that it
gives the same prompt ids as mmrl's own prompt encoder before timing anything.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "quickstart.yaml"
SYSTEMS = ("mmrl", "trl")
MINIBATCH = 32  # completions per optimizer step, both systems (the quickstart's algo.minibatch_size)
# Every worker: one thread, nothing fetched from a hub.
WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
              "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}  # fmt: skip


# ------------------------------------------------------------------------------------------------------------- shared
def run_config(model_dir: str, out_dir: str, steps: int):
    """The quickstart config with the benchmark's overrides: one thread, no warm-up, eval or checkpoints, and the
    64-completion step (8 prompts x 8, constant learning rate) the published figures were measured on."""
    from mmrl.config import load_config

    return load_config(CONFIG, [f"model.path={model_dir}", "model.build_tiny=false", "threads=1", "warmup.steps=0",
                                "algo.prompts_per_step=8", "algo.lr_decay=false",
                                "train.eval_every=0", "train.save_every=0", f"train.steps={steps}",
                                f"train.output_dir={out_dir}", "name=bench_mmrl"])  # fmt: skip


def step_seeds(cfg, step: int) -> list[int]:
    """The env seeds mmrl's ``Trainer.collect`` draws at ``step`` (first draw): TRL's dataset is built from them."""
    import numpy as np

    rng = np.random.default_rng([cfg.seed, 2, step, 0])
    return rng.integers(0, 2**31 - 1, size=cfg.algo.prompts_per_step).tolist()


def prompt_digest(rows: list[tuple[list[int], bytes]]) -> str:
    """Order-free digest of one step's (prompt ids, image bytes) rows: equal digests = the same prompts and images."""
    h = hashlib.sha256()
    for ids, img in sorted((tuple(ids), hashlib.sha256(img).hexdigest()) for ids, img in rows):
        h.update(repr((ids, img)).encode())
    return h.hexdigest()[:16]


def current_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def limit_threads() -> None:
    import torch

    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # --in-process: the second worker finds it already set
        pass


def quiet() -> None:
    """Warnings and transformers' progress bars off in the workers (they would drown the table)."""
    import logging
    import warnings

    from transformers.utils import logging as hf_logging

    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def versions() -> dict[str, str]:
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version()}


# --------------------------------------------------------------------------------------------------------------- mmrl
def worker_mmrl(model_dir: str, steps: int, out_dir: str) -> dict[str, Any]:
    limit_threads()
    import numpy as np
    import torch

    from mmrl.policies.vlm import response_length
    from mmrl.trainer.loop import Trainer, peak_rss_mib

    cfg = run_config(model_dir, out_dir, steps)
    trainer = Trainer(cfg, show_progress=False)
    opt_steps = [0]
    trainer.learner.optimizer.register_step_post_hook(lambda *_: opt_steps.__setitem__(0, opt_steps[0] + 1))
    seen: list[Any] = []
    collect_scored = trainer.collect_scored

    def recording_collect_scored():  # instance-level wrapper: keeps the trajectories for the same-work checks
        out = collect_scored()
        seen.append(out[0])
        return out

    trainer.collect_scored = recording_collect_scored
    rss_before = current_rss_mib()
    rows = []
    for _ in range(steps):
        before = opt_steps[0]
        t0, c0 = time.perf_counter(), time.process_time()
        stats = trainer.train_step()
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        trainer.step += 1  # Trainer.fit advances the step (it seeds the next step's prompts and sampling)
        trajs = seen[-1]
        lengths = [response_length(t) for t in trajs]
        turns = [t.steps[0].record for t in trajs]
        digest = prompt_digest([(turn.prompt_ids, b"".join(np.asarray(im).tobytes() for im in turn.images))
                                for turn in turns])  # fmt: skip
        rows.append({"step_s": dt, "step_cpu_s": cpu, "rollout_s": stats["time/collect_s"], "completions": len(trajs),
                     "completion_tokens": int(sum(lengths)), "max_completion_len": max(lengths),
                     "optimizer_steps": opt_steps[0] - before, "prompt_digest": digest,
                     "reward_mean": stats["reward/mean"]})  # fmt: skip
    a, r = cfg.algo, cfg.rollout
    config = {"class": "mmrl.trainer.loop.Trainer (train_step)", "config": str(CONFIG.relative_to(ROOT)),
              "overrides": ["threads=1", "warmup.steps=0", "train.eval_every=0", "train.save_every=0"],
              "prompts_per_step": a.prompts_per_step, "group_size": a.group_size, "epochs": a.epochs,
              "minibatch_size": a.minibatch_size, "loss": a.loss, "agg": a.agg, "clip": [a.clip_low, a.clip_high],
              "lr": a.lr, "kl_coef": a.kl_coef, "max_new_tokens": r.max_new_tokens, "temperature": r.temperature,
              "rollout_batch_size": r.batch_size, "rewards": dict(cfg.rewards),
              "torch_threads": torch.get_num_threads(), "dtype": cfg.model.dtype}  # fmt: skip
    trainer.close()
    trainer.metrics.close()
    return {
        "rows": rows,
        "rss_before_steps_mib": rss_before,
        "peak_rss_mib": peak_rss_mib(),
        "config": config,
        "versions": versions(),
    }


# ---------------------------------------------------------------------------------------------------------------- TRL
def image_only_processor(model_dir: str):
    """transformers' ``Qwen2_5_VLProcessor`` without a video processor (see the module docstring)."""
    from transformers import AutoImageProcessor, AutoTokenizer, Qwen2_5_VLProcessor

    class ImageOnlyQwenProcessor(Qwen2_5_VLProcessor):
        def check_argument_for_proper_class(self, argument_name: str, argument: Any):
            if argument_name == "video_processor" and argument is None:  # VideoProcessorMixin needs torchvision
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    image_processor = AutoImageProcessor.from_pretrained(model_dir, local_files_only=True)  # the PIL fallback here
    return ImageOnlyQwenProcessor(image_processor=image_processor, tokenizer=tok, video_processor=None,
                                  chat_template=tok.chat_template)  # fmt: skip


def build_trl_dataset(cfg, steps: int):
    """One row per prompt, in mmrl's order: step k's rows are the scenes of mmrl's step-k seeds."""
    from datasets import Dataset
    from PIL import Image

    import envs

    env = envs.make(cfg.env.id, **{**cfg.env.kwargs, "rewards": dict(cfg.rewards)})
    rows: dict[str, list] = {"prompt": [], "image": [], "answer": [], "require_tags": []}
    for step in range(steps):
        for seed in step_seeds(cfg, step):
            obs, info = env.reset(seed=int(seed))
            rows["prompt"].append([{"role": "user", "content": obs["text"]}])
            rows["image"].append(Image.fromarray(obs["images"][0], "RGB"))
            rows["answer"].append(info["answer"])
            rows["require_tags"].append(True)  # the env's reward column (VQAEnv.require_tags default)
    env.close()
    return Dataset.from_dict(rows)


def check_same_prompt_ids(cfg, processor, model_dir: str) -> int:
    """TRL's prompt ids (processor.apply_chat_template, as _tokenize_prompts calls it) == mmrl's; returns the length."""
    from PIL import Image
    from trl.data_utils import prepare_multimodal_messages

    import envs
    from mmrl.models import load_policy

    env = envs.make(cfg.env.id, **{**cfg.env.kwargs, "rewards": dict(cfg.rewards)})
    obs, _ = env.reset(seed=step_seeds(cfg, 0)[0])
    msgs = prepare_multimodal_messages([{"role": "user", "content": obs["text"]}],
                                       images=[Image.fromarray(obs["images"][0], "RGB")])  # fmt: skip
    trl_ids = processor.apply_chat_template(conversation=[msgs], add_generation_prompt=True, tokenize=True,
                                            return_dict=True)["input_ids"][0]  # fmt: skip
    conv = load_policy(model_dir, device="cpu").conversation()
    conv.add_user(obs["text"], list(obs["images"]))
    if list(trl_ids) != conv.ids:
        raise SystemExit(f"prompt ids differ between TRL's processor and mmrl:\n{list(trl_ids)}\n{conv.ids}")
    return len(conv.ids)


def worker_trl(model_dir: str, steps: int, out_dir: str) -> dict[str, Any]:
    limit_threads()
    import numpy as np
    import torch
    import trl
    from transformers import AutoModelForImageTextToText, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    import rewards
    from mmrl.policies.vlm.chat import VISION_SPECIAL_TOKENS
    from mmrl.trainer.loop import peak_rss_mib

    cfg = run_config(model_dir, out_dir, steps)
    a, r = cfg.algo, cfg.rollout
    processor = image_only_processor(model_dir)
    prompt_len = check_same_prompt_ids(cfg, processor, model_dir)
    dataset = build_trl_dataset(cfg, steps)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32, local_files_only=True)
    vocab = processor.tokenizer.get_vocab()
    suppress = [vocab[t] for t in VISION_SPECIAL_TOKENS if t in vocab]  # what mmrl's sampler suppresses
    batch = a.prompts_per_step * a.group_size  # 64 completions per rollout
    steps_per_generation = batch // MINIBATCH  # 2 slices of 32 per generation batch ...
    opt_per_rl_step = steps_per_generation * a.epochs  # ... each used num_iterations = epochs times: 4 optimizer steps
    args = GRPOConfig(
        output_dir=out_dir, use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False, seed=cfg.seed,
        per_device_train_batch_size=MINIBATCH, gradient_accumulation_steps=1, steps_per_generation=steps_per_generation,
        num_generations=a.group_size, num_iterations=a.epochs, max_steps=steps * opt_per_rl_step,
        max_completion_length=r.max_new_tokens, temperature=r.temperature, top_p=r.top_p, top_k=r.top_k,
        generation_kwargs={"suppress_tokens": suppress},
        learning_rate=a.lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=a.weight_decay,
        max_grad_norm=a.max_grad_norm, optim="adamw_torch", beta=0.0, epsilon=a.clip_low, epsilon_high=a.clip_high,
        loss_type="dr_grpo",  # sum over tokens / (B * max_completion_length): mmrl's seq-mean-token-sum up to 1/16
        scale_rewards="group", reward_weights=[float(cfg.rewards[n]) for n in cfg.rewards],
        shuffle_dataset=False, report_to="none", save_strategy="no", eval_strategy="no", logging_strategy="no",
        disable_tqdm=True, log_completions=False, dataloader_num_workers=0,
    )  # fmt: skip
    reward_funcs = [rewards.get(name) for name in cfg.rewards]  # TRL-style already: fn(completions, **columns)
    trainer = GRPOTrainer(model=model, reward_funcs=reward_funcs, args=args, train_dataset=dataset,
                          processing_class=processor)  # fmt: skip

    rollouts: list[dict[str, Any]] = []
    generate_and_score = trainer._generate_and_score_completions

    def timed_generate_and_score(inputs):  # instance-level wrapper: rollout time and what was generated
        t0 = time.perf_counter()
        out = generate_and_score(inputs)
        dt = time.perf_counter() - t0
        lengths = out["completion_mask"].sum(1).tolist()
        prompts = [ids[m.bool()].tolist() for ids, m in zip(out["prompt_ids"], out["prompt_mask"])]
        images = [np.asarray(x["image"].convert("RGB")).tobytes() for x in inputs]
        reward = trainer._metrics["train"]["reward"][-1:] or [float("nan")]  # TRL's own log of this batch
        rollouts.append({"rollout_s": dt, "completions": len(lengths), "completion_tokens": int(sum(lengths)),
                         "max_completion_len": int(max(lengths)), "reward_mean": float(reward[0]),
                         "prompt_digest": prompt_digest(list(zip(prompts, images)))})  # fmt: skip
        return out

    trainer._generate_and_score_completions = timed_generate_and_score
    opt_steps = [0]
    ends: list[tuple[float, float]] = []  # (wall, process CPU) at the end of each RL step

    class StepClock(TrainerCallback):
        def on_train_begin(self, args, state, control, optimizer=None, **kw):
            inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps the torch optimizer
            inner.register_step_post_hook(lambda *_: opt_steps.__setitem__(0, opt_steps[0] + 1))
            ends.append((time.perf_counter(), time.process_time()))

        def on_step_end(self, args, state, control, **kw):
            if state.global_step % opt_per_rl_step == 0:
                ends.append((time.perf_counter(), time.process_time()))
                opt_counts.append(opt_steps[0])

    opt_counts: list[int] = [0]
    trainer.add_callback(StepClock())
    rss_before = current_rss_mib()
    trainer.train()
    if len(rollouts) != steps or len(ends) != steps + 1:
        raise SystemExit(f"TRL ran {len(rollouts)} generations and {len(ends) - 1} RL steps, expected {steps}")
    rows = []
    for k, ro in enumerate(rollouts):
        rows.append(
            {
                **ro,
                "step_s": ends[k + 1][0] - ends[k][0],
                "step_cpu_s": ends[k + 1][1] - ends[k][1],
                "optimizer_steps": opt_counts[k + 1] - opt_counts[k],
            }
        )
    config = {"class": "trl.GRPOTrainer", "trl": trl.__version__, "prompt_tokens": prompt_len,
              "processor": "Qwen2_5_VLProcessor subclass without video processor (PIL image processor)",
              **{k: getattr(args, k) for k in ("per_device_train_batch_size", "gradient_accumulation_steps",
                 "steps_per_generation", "generation_batch_size", "num_generations", "num_iterations", "max_steps",
                 "max_completion_length", "temperature", "top_p", "top_k", "learning_rate", "lr_scheduler_type",
                 "optim", "beta", "epsilon", "epsilon_high", "loss_type", "scale_rewards", "reward_weights",
                 "gradient_checkpointing", "bf16", "use_vllm", "shuffle_dataset", "generation_kwargs")},
              "reward_funcs": list(cfg.rewards), "torch_threads": torch.get_num_threads(),
              "dtype": "float32"}  # fmt: skip
    return {
        "rows": rows,
        "rss_before_steps_mib": rss_before,
        "peak_rss_mib": peak_rss_mib(),
        "config": config,
        "versions": versions(),
    }


# ------------------------------------------------------------------------------------------------------------- parent
def run_worker(system: str, model_dir: str, steps: int, timeout: float, in_process: bool = False) -> dict[str, Any]:
    """One run of ``system`` in its own subprocess (or, with ``in_process``, in this process: smoke tests only)."""
    if in_process:
        load_before, t0 = os.getloadavg(), time.perf_counter()
        quiet()
        with tempfile.TemporaryDirectory(prefix=f"bench_{system}_") as tmp:
            out = (worker_mmrl if system == "mmrl" else worker_trl)(model_dir, steps, tmp)
        out.update(system=system, process_wall_s=time.perf_counter() - t0, loadavg_before=load_before,
                   loadavg_after=os.getloadavg())  # fmt: skip
        return out
    env = {**os.environ, **WORKER_ENV, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    with tempfile.TemporaryDirectory(prefix=f"bench_{system}_") as tmp:
        result_file = Path(tmp) / "result.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", system, "--model-dir", model_dir,
               "--steps", str(steps), "--worker-out", str(result_file)]  # fmt: skip
        load_before = os.getloadavg()
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(
                f"{system} worker failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
            )
        out = json.loads(result_file.read_text())
    out.update(system=system, process_wall_s=wall, loadavg_before=load_before, loadavg_after=os.getloadavg())
    return out


def summarize(runs: list[dict[str, Any]], skip: int) -> dict[str, dict[str, Any]]:
    """Per system: medians over the timed steps of all its runs (the first ``skip`` steps of each run left out)."""
    med = statistics.median
    out = {}
    for system in SYSTEMS:
        mine = [r for r in runs if r["system"] == system]
        if not mine:
            continue
        rows = [row for r in mine for row in r["rows"][skip:]] or [row for r in mine for row in r["rows"]]
        all_rows = [row for r in mine for row in r["rows"]]
        out[system] = {
            "timed_steps": len(rows),
            "step_s": med(row["step_s"] for row in rows),
            "step_cpu_s": med(row["step_cpu_s"] for row in rows),
            "rollout_s": med(row["rollout_s"] for row in rows),
            "update_s": med(row["step_s"] - row["rollout_s"] for row in rows),
            "tokens_per_s": med(row["completion_tokens"] / row["step_s"] for row in rows),
            "rollout_tokens_per_s": med(row["completion_tokens"] / row["rollout_s"] for row in rows),
            "completion_tokens_per_step": med(row["completion_tokens"] for row in rows),
            "mean_completion_len": med(row["completion_tokens"] / row["completions"] for row in rows),
            "peak_rss_mib": med(r["peak_rss_mib"] for r in mine),
            "rss_before_steps_mib": med(r["rss_before_steps_mib"] for r in mine),
            "completions_per_step": sorted({row["completions"] for row in all_rows}),
            "max_completion_len": max(row["max_completion_len"] for row in all_rows),
            "optimizer_steps_per_rl_step": sorted({row["optimizer_steps"] for row in all_rows}),
            "per_run_median_step_s": [med(row["step_s"] for row in r["rows"][skip:] or r["rows"]) for r in mine],
        }
    return out


def same_work(runs: list[dict[str, Any]], summary: dict[str, dict[str, Any]]) -> dict[str, Any]:
    digests = {s: [row["prompt_digest"] for row in next(r for r in runs if r["system"] == s)["rows"]] for s in summary}
    checks = {
        "completions_per_step": {s: v["completions_per_step"] for s, v in summary.items()},
        "max_completion_len": {s: v["max_completion_len"] for s, v in summary.items()},
        "optimizer_steps_per_rl_step": {s: v["optimizer_steps_per_rl_step"] for s, v in summary.items()},
        "prompt_digests_per_step": digests,
    }
    checks["same_prompts_and_images"] = len({tuple(d) for d in digests.values()}) == 1
    checks["same_counts"] = all(len({json.dumps(v) for v in checks[k].values()}) == 1
                                for k in ("completions_per_step", "optimizer_steps_per_rl_step"))  # fmt: skip
    return checks


def markdown(summary: dict[str, dict[str, Any]]) -> str:
    header = ["system", "s / RL step", "CPU s / RL step", "rollout s", "update s", "completion tokens/s (whole step)",
              "tokens/s (rollout)", "peak RSS MiB", "completions / step", "mean / max completion len",
              "optimizer steps / RL step"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    names = {"mmrl": "mmrl `Trainer.train_step`", "trl": "TRL `GRPOTrainer`"}
    join = lambda values: "/".join(map(str, values))  # noqa: E731
    for s, v in summary.items():
        cells = [names[s], f"**{v['step_s']:.2f}**", f"{v['step_cpu_s']:.2f}", f"{v['rollout_s']:.2f}",
                 f"{v['update_s']:.2f}", f"{v['tokens_per_s']:.0f}", f"{v['rollout_tokens_per_s']:.0f}",
                 f"{v['peak_rss_mib']:.0f}", join(v["completions_per_step"]),
                 f"{v['mean_completion_len']:.1f} / {v['max_completion_len']}",
                 join(v["optimizer_steps_per_rl_step"])]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=6, help="RL steps per run")
    p.add_argument("--skip", type=int, default=1, help="warm-up RL steps per run left out of the medians")
    p.add_argument("--repeats", type=int, default=3, help="runs per system, alternating the order")
    p.add_argument("--systems", default="mmrl,trl", help="comma-separated subset of mmrl,trl")
    p.add_argument("--model-dir", default=None, help="tiny checkpoint to use (default: built in a temp dir)")
    p.add_argument("--out", default=None, help="JSON results path")
    p.add_argument("--timeout", type=float, default=900, help="seconds per worker process")
    p.add_argument("--jobs", type=int, default=1, help="systems run at once (2 only for smoke tests: timings contend)")
    p.add_argument(
        "--in-process",
        action="store_true",
        help="run the systems in this process, one after the other (smoke tests: peak RSS is then shared)",
    )
    p.add_argument("--worker", choices=SYSTEMS, help=argparse.SUPPRESS)
    p.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        quiet()
        fn = worker_mmrl if args.worker == "mmrl" else worker_trl
        with tempfile.TemporaryDirectory(prefix="bench_run_") as tmp:
            result = fn(args.model_dir, args.steps, tmp)
        Path(args.worker_out).write_text(json.dumps(result))
        return 0

    if args.in_process:
        if args.jobs != 1:
            p.error("--in-process runs the systems one after the other: use --jobs 1")
        os.environ.update(WORKER_ENV)
    systems = [s for s in args.systems.split(",") if s]
    if set(systems) - set(SYSTEMS):
        p.error(f"--systems: unknown {sorted(set(systems) - set(SYSTEMS))} (known: {', '.join(SYSTEMS)})")
    with tempfile.TemporaryDirectory(prefix="bench_model_") as tmp:
        model_dir = args.model_dir
        if model_dir is None:
            from mmrl.models.tiny import build_tiny_qwen2_5_vl

            model_dir = str(build_tiny_qwen2_5_vl(Path(tmp) / "tiny-qwen2_5_vl", seed=0))
        runs = []
        for rep in range(args.repeats):
            order = systems if rep % 2 == 0 else systems[::-1]
            with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # --jobs 1: one after the other
                futures = [pool.submit(run_worker, system, model_dir, args.steps, args.timeout, args.in_process)
                           for system in order]  # fmt: skip
                for future in futures:
                    run = future.result()
                    run["repeat"] = rep
                    runs.append(run)
                    print(f"repeat {rep} {run['system']}: median step "
                          f"{statistics.median(r['step_s'] for r in run['rows']):.2f} s, peak RSS "
                          f"{run['peak_rss_mib']:.0f} MiB, load avg {run['loadavg_before'][0]:.2f}",
                          file=sys.stderr, flush=True)  # fmt: skip
    summary = summarize(runs, args.skip)
    checks = same_work(runs, summary)
    table = markdown(summary)
    print(table)
    loads = [r["loadavg_before"][0] for r in runs] + [r["loadavg_after"][0] for r in runs]
    print(f"\nsame prompts and images per step: {checks['same_prompts_and_images']}; same completions and optimizer "
          f"steps per RL step: {checks['same_counts']}; 1-min load average seen: "
          f"{min(loads):.2f}-{max(loads):.2f}")  # fmt: skip
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "settings": {"steps": args.steps, "skip": args.skip, "repeats": args.repeats, "systems": systems,
                         "jobs": args.jobs, "in_process": args.in_process},
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), **runs[0]["versions"],
                        "loadavg_per_run": [[r["system"], r["loadavg_before"], r["loadavg_after"]] for r in runs]},
            "summary": summary, "same_work": checks, "table": table, "runs": runs,
        }, indent=2))  # fmt: skip
    return 0 if checks["same_counts"] and checks["same_prompts_and_images"] else 1


if __name__ == "__main__":
    sys.exit(main())
