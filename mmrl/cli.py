"""The ``mmrl`` command.

    mmrl train CONFIG [key=value ...]      train (RL with optional warm-up); resume=true via train.resume=true
    mmrl eval CONFIG [key=value ...]       held-out evaluation of the run's latest checkpoint (else model.path), read-only,
              [--checkpoints P [P ...] | --all-checkpoints] [--json] [--out DIR]
                                           as a markdown table, a column per checkpoint (side by side)
    mmrl eval --benchmark NAME --data FILE --predictions P [P ...] [--out DIR]
                                           score any model's predictions offline on a benchmark file (side by side)
    mmrl view RUN_DIR                      write RUN_DIR/viewer.html: the rollout samples as a static page (no server)
    mmrl reward --fn NAMES --input ROWS    score offline rows with reward functions
    mmrl build-tiny PATH [--preset NAME]   build the offline tiny Qwen2.5-VL checkpoint
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.logging import RichHandler

if TYPE_CHECKING:
    from mmrl.config import RunConfig


def _setup_logging(verbose: bool) -> None:
    # logs go to stderr: stdout carries the results only (`mmrl eval --json` is parsed by machines)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        handlers=[RichHandler(console=Console(stderr=True), show_path=False,
                                              rich_tracebacks=False)])  # fmt: skip
    for noisy in ("transformers", "httpx", "urllib3", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-file load/save bars drown the run's own progress


def _load(args: argparse.Namespace):
    from mmrl.config import load_config

    return load_config(args.config, args.overrides)


def cmd_train(args: argparse.Namespace) -> int:
    from mmrl.trainer.loop import Trainer

    cfg = _load(args)
    summary = Trainer(cfg, show_progress=not args.no_progress).fit()
    print(json.dumps(summary, indent=2))
    for key in ("success", "return"):
        if f"{key}_before_rl" in summary:
            print(f"held-out {key} before RL: {summary[f'{key}_before_rl']:.3f}   after RL: "
                  f"{summary[f'{key}_after_rl']:.3f}   (n={summary['eval_size']}, {summary['minutes']:.1f} min)")
    print(f"run directory: {cfg.run_dir}  (metrics.jsonl, curves.png, tensorboard/, checkpoints/)")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate without side effects: builds the policy and the eval envs only, and writes nothing into the run; or,
    with ``--benchmark``, score prediction files offline (:mod:`mmrl.evaluation`)."""
    from mmrl.config import ConfigError

    if args.benchmark is not None:
        from mmrl.evaluation import format_markdown, score

        extra = args.config is not None or args.checkpoints or args.all_checkpoints
        if extra or args.data is None or not args.predictions:
            raise ConfigError("eval --benchmark NAME needs --data FILE and --predictions P [P ...] (and no CONFIG or "
                              "checkpoints)")  # fmt: skip
        print(format_markdown(score(args.benchmark, args.data, args.predictions, args.out)))
        return 0
    if args.config is None:
        raise ConfigError("eval needs a CONFIG file, or --benchmark NAME --data FILE --predictions P [P ...]")
    from mmrl.trainer.build import evaluate_run

    cfg = _load(args)
    checkpoints = _checkpoints(cfg, args)
    results = evaluate_run(cfg, checkpoints)
    report = {"config": str(args.config), "run_dir": str(cfg.run_dir), "env": cfg.env.id,
              "eval_size": cfg.train.eval_size, "results": [{"label": label, **r} for label, r in
                                                            zip(_labels(checkpoints), results)]}  # fmt: skip
    table = format_eval(report, cfg.rewards, cfg.model.path)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "eval_report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        (args.out / "eval_report.md").write_text(table, encoding="utf-8")
    print(json.dumps(report, indent=2) if args.json else table)
    return 0


def _checkpoints(cfg: RunConfig, args: argparse.Namespace) -> list[Path | None]:
    """What ``mmrl eval CONFIG`` evaluates: ``--checkpoints``; with ``--all-checkpoints`` the initial policy (None)
    and every checkpoint the run kept, oldest first; by default the latest one (else the initial policy)."""
    from mmrl.config import ConfigError
    from mmrl.trainer import checkpoint as ckpt

    if args.checkpoints and args.all_checkpoints:
        raise ConfigError("--checkpoints: give checkpoint directories or --all-checkpoints, not both")
    for path in args.checkpoints or ():
        if not path.is_dir():
            raise ConfigError(f"--checkpoints: no checkpoint directory at '{path}'")
    if args.checkpoints:
        return list(args.checkpoints)
    if args.all_checkpoints:
        return [None, *ckpt.list_checkpoints(cfg.run_dir)]
    return [ckpt.latest_checkpoint(cfg.run_dir)]


def _labels(checkpoints: list[Path | None]) -> list[str]:
    """Column names: each directory's name (``step_000100``), its parent's too when names repeat; ``initial``."""
    names = ["initial" if p is None else p.name for p in checkpoints]
    return [f"{p.parent.name}/{p.name}" if p is not None and names.count(p.name) > 1 else n
            for p, n in zip(checkpoints, names)]  # fmt: skip


def format_eval(report: dict[str, Any], rewards: dict[str, float], model_path: str) -> str:
    """``mmrl eval``'s markdown table: success, mean return and each reward's mean, a column per checkpoint (and the
    change from the first to the last when there are several), the episodes scored and the checkpoint's path."""
    from mmrl.evaluation.report import delta_cells, markdown_table

    results = report["results"]
    delta = ["Δ (last - first)"] if len(results) > 1 else []
    blank = [""] if delta else []
    rows = []
    if all("eval/success" in r for r in results):
        rows.append(["success", *(f"{r['eval/success']:.3f} ({r['successes']}/{r['n']})" for r in results),
                     *delta_cells([r["eval/success"] for r in results])])  # fmt: skip
    named = [("return (mean)", "eval/return")] + [(f"reward {n} (mean)", f"eval/reward/{n}") for n in rewards]
    for name, key in named:
        if all(key in r for r in results):
            rows.append([name, *(f"{r[key]:.3f}" for r in results), *delta_cells([r[key] for r in results])])
    rows.append(["episodes", *(r["n"] for r in results), *blank])
    rows.append(["checkpoint", *(r["checkpoint"] or f"none: model.path {model_path} (or a fresh policy)"
                                 for r in results), *blank])  # fmt: skip
    lines = [f"## {Path(report['run_dir']).name}: held-out evaluation ({report['eval_size']} episodes of "
             f"{report['env']}, greedy)", "", *markdown_table(["", *(r["label"] for r in results), *delta], rows)]  # fmt: skip
    return "\n".join(lines) + "\n"


def cmd_view(args: argparse.Namespace) -> int:
    from mmrl.viz.viewer import write_viewer

    print(f"open {write_viewer(args.run_dir)} in a browser (a static page: no server needed)")
    return 0


def cmd_build_tiny(args: argparse.Namespace) -> int:
    from mmrl.models.tiny import build_tiny_qwen2_5_vl

    print(build_tiny_qwen2_5_vl(args.path, preset=args.preset, seed=args.seed, overwrite=True))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "reward":  # the reward CLI owns its own arguments
        from rewards.cli import main as reward_main

        return reward_main(argv[1:])
    parser = argparse.ArgumentParser(prog="mmrl", description="RL for multimodal and embodied agents.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn, help_ in (("train", cmd_train, "train from a YAML config"), ("eval", cmd_eval, "evaluate a run")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("config", nargs="?" if name == "eval" else None, help="YAML config file (omit with --benchmark)")
        p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. algo.lr=1e-5 train.resume=true")
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
        p.set_defaults(fn=fn)
        if name == "eval":  # offline scoring: mmrl eval --benchmark NAME --data FILE --predictions P [P ...] [--out DIR]
            p.add_argument("--benchmark", metavar="NAME", help="score prediction files offline with this benchmark adapter")
            p.add_argument("--data", type=Path, metavar="FILE", help="the benchmark's public file (or release directory)")
            p.add_argument("--predictions", type=Path, nargs="+", metavar="P", help="JSONL predictions, scored side by side")
            p.add_argument("--out", type=Path, metavar="DIR", help="write the report here: eval_report.json/.md, or "
                           "<benchmark>_report.json/.md and bar plots")  # fmt: skip
            p.add_argument("--checkpoints", type=Path, nargs="+", metavar="P", help="evaluate these policy directories, "
                           "side by side (default: the run's latest checkpoint)")  # fmt: skip
            p.add_argument("--all-checkpoints", action="store_true", help="evaluate the initial policy and every "
                           "checkpoint the run kept, side by side")  # fmt: skip
            p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    p = sub.add_parser("view", help="write RUN_DIR/viewer.html over the run's rollout samples (opens in any browser)")
    p.add_argument("run_dir", type=Path, help="a run directory (<train.output_dir>/<name>)")
    p.set_defaults(fn=cmd_view)
    sub.add_parser("reward", help="score offline rows (mmrl reward --help)")
    p = sub.add_parser("build-tiny", help="build the offline tiny Qwen2.5-VL checkpoint")
    p.add_argument("path")
    p.add_argument("--preset", default="default")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=cmd_build_tiny)
    args, rest = parser.parse_known_args(argv)  # overrides may come after options: `train c.yaml --no-progress a=1`
    if rest and (not hasattr(args, "overrides") or any(a.startswith("-") or "=" not in a for a in rest)):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if rest:
        args.overrides += rest
    _setup_logging(args.verbose)
    from mmrl.config import ConfigError
    from mmrl.trainer import TrainingError

    try:
        return args.fn(args)
    except (ConfigError, FileNotFoundError) as e:  # a bad config, before anything was written
        print(f"mmrl: error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    except TrainingError as e:  # the run stopped (diverged, a non-finite reward); its last checkpoint is good
        print(f"mmrl: stopped: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
